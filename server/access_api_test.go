package server

// The JSON API for users, API keys and enrollment tokens: who may call
// it, what bad input gets, and that a refusal changes nothing.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/httpapi"
	"github.com/tendrildeploy/tendril/server/secret"
	"github.com/tendrildeploy/tendril/server/store"
)

// apiCall sends a JSON API request with a bearer key ("" sends none)
// and a raw body ("" sends none).
func apiCall(t *testing.T, c *consoleClient, method, path, key, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// accessState is everything the access endpoints can change, for
// checking that a refused call changed nothing.
type accessState struct {
	Users  []api.UserView
	Keys   []api.APIKeyView
	Tokens []api.TokenView
}

func snapshotAccess(t *testing.T, ts *testServer) accessState {
	t.Helper()
	ctx := context.Background()
	var st accessState
	var err error
	if st.Users, err = ts.access.Users(ctx); err != nil {
		t.Fatal(err)
	}
	if st.Keys, err = ts.access.APIKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if st.Tokens, err = ts.access.Tokens(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

// tokenID returns the id of the only token for env.
func tokenID(t *testing.T, ts *testServer, env string) string {
	t.Helper()
	tokens, err := ts.access.Tokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	id := ""
	for _, tok := range tokens {
		if tok.Environment == env {
			if id != "" {
				t.Fatalf("two tokens for %s, want one", env)
			}
			id = tok.ID
		}
	}
	if id == "" {
		t.Fatalf("no token for %s", env)
	}
	return id
}

func TestAccessAPIAuthorization(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	admin := adminKey(t, ts)
	standard, err := ts.access.CreateAPIKey(ctx, "ci", api.RoleOperator, nil)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := ts.access.CreateAPIKey(ctx, "old-admin", api.RoleAdmin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.access.RevokeAPIKey(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.access.CreateUser(ctx, "alice", "correct horse", api.RoleAdmin, nil); err != nil {
		t.Fatal(err)
	}
	ts.token(t, "Prod")
	tok := tokenID(t, ts, "Prod")
	c := newConsoleClient(t, ts)
	before := snapshotAccess(t, ts)

	endpoints := []struct {
		method, path, body string
		adminOnly          bool
	}{
		{"GET", "/api/users", "", true},
		{"POST", "/api/users", `{"name": "mallory", "password": "12345678"}`, true},
		{"DELETE", "/api/users/alice", "", true},
		{"GET", "/api/api-keys", "", true},
		{"POST", "/api/api-keys", `{"name": "backdoor", "admin": true}`, true},
		{"POST", "/api/api-keys/" + standard.ID + "/revoke", "", true},
		{"GET", "/api/tokens", "", false},
		{"DELETE", "/api/tokens/" + tok, "", false},
	}
	callers := []struct {
		name       string
		key        string
		wantStatus int // for admin-only endpoints; others let a standard key through
	}{
		{"no key", "", http.StatusUnauthorized},
		{"wrong key", "tdk_wrong", http.StatusUnauthorized},
		{"revoked key", revoked.Key, http.StatusUnauthorized},
		{"standard key", standard.Key, http.StatusForbidden},
	}
	for _, e := range endpoints {
		for _, cl := range callers {
			if cl.wantStatus == http.StatusForbidden && !e.adminOnly {
				continue
			}
			t.Run(e.method+" "+e.path+" with "+cl.name, func(t *testing.T) {
				resp, body := apiCall(t, c, e.method, e.path, cl.key, e.body)
				var ae api.APIError
				if resp.StatusCode != cl.wantStatus || json.Unmarshal([]byte(body), &ae) != nil || ae.Error == "" {
					t.Fatalf("got %d %s, want %d with a JSON error", resp.StatusCode, body, cl.wantStatus)
				}
				if after := snapshotAccess(t, ts); !reflect.DeepEqual(after, before) {
					t.Fatalf("state changed by a refused call:\ngot  %+v\nwant %+v", after, before)
				}
			})
		}
	}
	// A standard key still lists and revokes tokens.
	if resp, body := apiCall(t, c, "GET", "/api/tokens", standard.Key, ""); resp.StatusCode != http.StatusOK || !strings.Contains(body, tok) {
		t.Fatalf("GET /api/tokens with a standard key: got %d %s, want 200 listing the token", resp.StatusCode, body)
	}
	// And the admin key does everything.
	if resp, body := apiCall(t, c, "GET", "/api/users", admin, ""); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"alice"`) {
		t.Fatalf("GET /api/users with the admin key: got %d %s, want 200 listing alice", resp.StatusCode, body)
	}
}

func TestAccessAPIUsers(t *testing.T) {
	ts := startServer(t, nil)
	key := adminKey(t, ts)
	c := newConsoleClient(t, ts)
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantText   string
	}{
		{"a user", `{"name": "alice", "password": "correct horse"}`, http.StatusCreated, `"name": "alice"`},
		{"the same name in another case", `{"name": "ALICE", "password": "correct horse"}`, http.StatusConflict, "exists already"},
		{"empty name", `{"name": "", "password": "correct horse"}`, http.StatusBadRequest, `field \"name\": \"\" is not a name of 1-63 letters`},
		{"hostile name", `{"name": ` + jsonString(hostile) + `, "password": "correct horse"}`, http.StatusBadRequest, `is not a name of 1-63 letters`},
		{"oversize name", `{"name": "` + strings.Repeat("a", 64) + `", "password": "correct horse"}`, http.StatusBadRequest, `is not a name of 1-63 letters`},
		{"short password", `{"name": "bob", "password": "1234567"}`, http.StatusBadRequest, "too short"},
		{"oversize password", `{"name": "bob", "password": "` + strings.Repeat("p", api.MaxPasswordLen+1) + `"}`, http.StatusBadRequest, "too long"},
		{"no password", `{"name": "bob"}`, http.StatusBadRequest, `field \"password\" is required`},
		{"name of the wrong type", `{"name": 5, "password": "correct horse"}`, http.StatusBadRequest, `field \"name\" must be a string, not a number`},
		{"unknown field", `{"name": "bob", "password": "correct horse", "admin": true}`, http.StatusBadRequest, "admin"},
		{"empty body", ``, http.StatusBadRequest, ""},
		{"not JSON", `name=bob`, http.StatusBadRequest, ""},
		{"oversize body", `{"name": "bob", "password": "` + strings.Repeat("p", httpapi.MaxRequestBody) + `"}`, http.StatusRequestEntityTooLarge, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshotAccess(t, ts)
			resp, body := apiCall(t, c, "POST", "/api/users", key, tt.body)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantText) {
				t.Fatalf("got %d %s, want %d with %q", resp.StatusCode, body, tt.wantStatus, tt.wantText)
			}
			if strings.Contains(body, "argon2") || strings.Contains(body, "correct horse") {
				t.Fatalf("got %s, want neither the password nor its hash in the answer", body)
			}
			if tt.wantStatus != http.StatusCreated {
				if after := snapshotAccess(t, ts); !reflect.DeepEqual(after, before) {
					t.Fatalf("state changed by a refused call:\ngot  %+v\nwant %+v", after, before)
				}
			}
		})
	}

	resp, body := apiCall(t, c, "GET", "/api/users", key, "")
	var users []api.UserView
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &users) != nil || len(users) != 1 || users[0].Name != "alice" {
		t.Fatalf("GET /api/users: got %d %s, want alice only", resp.StatusCode, body)
	}
	// The password is stored as an argon2id hash with its parameters.
	u, err := ts.store.UserByName(context.Background(), "alice")
	if err != nil || !strings.HasPrefix(u.PasswordHash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("stored hash: got %q, %v; want an argon2id PHC string", u.PasswordHash, err)
	}

	for _, tt := range []struct {
		name, path string
		wantStatus int
	}{
		{"unknown user", "/api/users/nobody", http.StatusNotFound},
		{"hostile name", "/api/users/" + strings.ReplaceAll(hostile, "/", "%2F"), http.StatusNotFound},
		{"alice, in another case", "/api/users/Alice", http.StatusNoContent},
		{"alice again", "/api/users/alice", http.StatusNotFound},
	} {
		resp, body := apiCall(t, c, "DELETE", tt.path, key, "")
		if resp.StatusCode != tt.wantStatus {
			t.Fatalf("DELETE %s (%s): got %d %s, want %d", tt.path, tt.name, resp.StatusCode, body, tt.wantStatus)
		}
	}
	if resp, body := apiCall(t, c, "GET", "/api/users", key, ""); resp.StatusCode != http.StatusOK || strings.TrimSpace(body) != "[]" {
		t.Fatalf("GET /api/users after the delete: got %d %s, want []", resp.StatusCode, body)
	}
}

func TestAccessAPIKeys(t *testing.T) {
	ts := startServer(t, nil)
	admin := adminKey(t, ts)
	c := newConsoleClient(t, ts)

	for _, tt := range []struct {
		name, body string
		wantStatus int
	}{
		{"empty name", `{"name": ""}`, http.StatusBadRequest},
		{"hostile name", `{"name": ` + jsonString(hostile) + `}`, http.StatusBadRequest},
		{"oversize name", `{"name": "` + strings.Repeat("k", 64) + `"}`, http.StatusBadRequest},
		{"admin of the wrong type", `{"name": "ci", "admin": "yes"}`, http.StatusBadRequest},
		{"unknown field", `{"name": "ci", "hash": "x"}`, http.StatusBadRequest},
		{"empty body", ``, http.StatusBadRequest},
		{"oversize body", `{"name": "` + strings.Repeat("k", httpapi.MaxRequestBody) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		before := snapshotAccess(t, ts)
		resp, body := apiCall(t, c, "POST", "/api/api-keys", admin, tt.body)
		if resp.StatusCode != tt.wantStatus {
			t.Fatalf("%s: got %d %s, want %d", tt.name, resp.StatusCode, body, tt.wantStatus)
		}
		if after := snapshotAccess(t, ts); !reflect.DeepEqual(after, before) {
			t.Fatalf("%s: state changed by a refused call", tt.name)
		}
	}

	// Created: the key is shown once, and works.
	resp, body := apiCall(t, c, "POST", "/api/api-keys", admin, `{"name": "ci"}`)
	var k api.NewAPIKey
	if resp.StatusCode != http.StatusCreated || json.Unmarshal([]byte(body), &k) != nil || !strings.HasPrefix(k.Key, "tdk_") || k.Admin || k.Name != "ci" {
		t.Fatalf("create: got %d %s, want 201 with a standard key", resp.StatusCode, body)
	}
	if resp, _ := apiCall(t, c, "GET", "/api/agents", k.Key, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("the new key on GET /api/agents: got %d, want 200", resp.StatusCode)
	}
	resp, body = apiCall(t, c, "GET", "/api/api-keys", admin, "")
	var keys []api.APIKeyView
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &keys) != nil || len(keys) != 2 || keys[0].Name != "ci" || !keys[1].Admin {
		t.Fatalf("list: got %d %s, want ci then the admin key", resp.StatusCode, body)
	}
	if strings.Contains(body, k.Key) || strings.Contains(body, secret.Hash(k.Key)) {
		t.Fatal("the key list shows a key or its hash; want neither")
	}

	// A console session signed in with the key ends when it is revoked.
	cc := newConsoleClient(t, ts)
	cc.signIn(k.Key)
	if resp, _ := cc.get("/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("console with the new key: got %d, want 200", resp.StatusCode)
	}

	for _, tt := range []struct {
		name, id   string
		wantStatus int
		wantText   string
	}{
		{"unknown id", "nope", http.StatusNotFound, "no API key"},
		{"the key", k.ID, http.StatusOK, `"revoked": true`},
		{"the key again", k.ID, http.StatusOK, `"revoked": true`},
		{"the last admin key", keys[1].ID, http.StatusConflict, "last valid admin key"},
	} {
		resp, body := apiCall(t, c, "POST", "/api/api-keys/"+tt.id+"/revoke", admin, "")
		if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantText) {
			t.Fatalf("revoke %s: got %d %s, want %d with %q", tt.name, resp.StatusCode, body, tt.wantStatus, tt.wantText)
		}
	}
	if resp, _ := apiCall(t, c, "GET", "/api/agents", k.Key, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the revoked key on GET /api/agents: got %d, want 401", resp.StatusCode)
	}
	if resp, _ := cc.get("/"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/signin") {
		t.Fatalf("console session of the revoked key: got %d to %q, want 303 to sign in", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := apiCall(t, c, "GET", "/api/agents", admin, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("the admin key after the refused revocation: got %d, want 200", resp.StatusCode)
	}
}

func TestAccessAPITokens(t *testing.T) {
	ts := startServer(t, nil)
	key := adminKey(t, ts)
	c := newConsoleClient(t, ts)
	ctx := context.Background()

	unused := ts.token(t, "Unused")
	enrolled(t, ts, "web-1") // with a token for Test
	now := time.Now().UTC()
	if err := ts.store.CreateToken(ctx, store.Token{ID: "expired-1", Hash: secret.Hash("tdt_expired"), Environment: "Old",
		CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	resp, body := apiCall(t, c, "GET", "/api/tokens", key, "")
	var tokens []api.TokenView
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &tokens) != nil {
		t.Fatalf("GET /api/tokens: got %d %s", resp.StatusCode, body)
	}
	if strings.Contains(body, unused) || strings.Contains(body, secret.Hash(unused)) {
		t.Fatal("the token list shows a token's secret or hash; want neither")
	}
	got := map[string]string{}
	for _, tok := range tokens {
		got[tok.Environment] = tok.State + " " + tok.UsedBy
	}
	want := map[string]string{"Unused": "unused ", "Test": "used web-1", "Old": "expired "}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("token states: got %v, want %v", got, want)
	}

	id := tokenID(t, ts, "Unused")
	for _, tt := range []struct {
		name, id   string
		wantStatus int
	}{
		{"unknown id", "nope", http.StatusNotFound},
		{"hostile id", "%3Cscript%3E", http.StatusNotFound},
		{"the unused token", id, http.StatusNoContent},
		{"the unused token again", id, http.StatusNotFound},
		{"the expired token", "expired-1", http.StatusNoContent},
	} {
		resp, body := apiCall(t, c, "DELETE", "/api/tokens/"+tt.id, key, "")
		if resp.StatusCode != tt.wantStatus {
			t.Fatalf("revoke %s: got %d %s, want %d", tt.name, resp.StatusCode, body, tt.wantStatus)
		}
	}
	// The revoked token enrolls nobody.
	p, err := dialPeer(t, ts, newIdentity(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.register(unused, "web-2", false); err == nil || !strings.Contains(err.Error(), "not valid") {
		t.Fatalf("register with a revoked token: got %v, want refused as not valid", err)
	}
}
