package server

// Signing in with a password, the sign-in limits, and the configuration
// page with its actions, over HTTP.

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/console"
	"github.com/tendrildeploy/tendril/server/httpapi"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/secret"
	"github.com/tendrildeploy/tendril/server/store"
)

// signInAs signs in with a user name and password and keeps the cookie.
func (c *consoleClient) signInAs(user, password string) {
	c.t.Helper()
	resp, body := c.do(http.MethodPost, "/signin", url.Values{"user": {user}, "password": {password}, "next": {"/"}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		c.t.Fatalf("sign in as %s: got %d, want 303: %s", user, resp.StatusCode, body)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == console.CookieName {
			c.cookie = ck
		}
	}
}

// post sends a console form with the session's CSRF token and returns
// the page it redirects to.
func (c *consoleClient) post(path string, form url.Values) (*http.Response, string) {
	c.t.Helper()
	form.Set("csrf", c.csrf())
	resp, body := c.do(http.MethodPost, path, form, nil)
	if resp.StatusCode != http.StatusSeeOther {
		return resp, body
	}
	return c.get(resp.Header.Get("Location"))
}

func TestConsoleSignInWithPassword(t *testing.T) {
	ts := startServer(t, nil)
	if _, err := ts.access.CreateUser(context.Background(), "alice", "correct horse", api.RoleAdmin, nil); err != nil {
		t.Fatal(err)
	}
	c := newConsoleClient(t, ts)
	tests := []struct {
		name       string
		form       url.Values
		wantStatus int
		wantText   string
	}{
		{"nothing", url.Values{}, http.StatusBadRequest, signinEmpty},
		{"no password", url.Values{"user": {"alice"}}, http.StatusBadRequest, signinIncomplete},
		{"no user", url.Values{"password": {"correct horse"}}, http.StatusBadRequest, signinIncomplete},
		{"wrong password", url.Values{"user": {"alice"}, "password": {"wrong horse"}}, http.StatusUnauthorized, signinBadPassword},
		{"unknown user", url.Values{"user": {"mallory"}, "password": {"correct horse"}}, http.StatusUnauthorized, signinBadPassword},
		{"hostile user", url.Values{"user": {hostile}, "password": {"x"}}, http.StatusUnauthorized, signinBadPassword},
		{"another user's password", url.Values{"user": {"bob"}, "password": {"correct horse"}}, http.StatusUnauthorized, signinBadPassword},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := c.do(http.MethodPost, "/signin", tt.form, nil)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantText) {
				t.Fatalf("got %d, want %d with %q:\n%s", resp.StatusCode, tt.wantStatus, tt.wantText, body)
			}
			if len(resp.Cookies()) != 0 {
				t.Fatalf("got cookies %v, want none for a refused sign-in", resp.Cookies())
			}
			if strings.Contains(body, "<script>alert") {
				t.Fatal("the user name tried is shown unescaped")
			}
		})
	}

	// The name matches in any case; the header says who is signed in.
	c.signInAs("Alice", "correct horse")
	resp, body := c.get("/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="signed-in-as">alice<`) {
		t.Fatalf("home signed in as alice: got %d, want 200 naming alice:\n%s", resp.StatusCode, body)
	}
	// Users may manage API keys.
	_, body = c.get("/configuration")
	if !strings.Contains(body, `id="api-key-form"`) {
		t.Fatal("configuration as a user: want the API key form")
	}
	// Deleting the user ends the session at its next request.
	if err := ts.access.DeleteUser(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("session of a deleted user: got %d, want 303 to sign in", resp.StatusCode)
	}
}

func TestConsoleSignInRateLimit(t *testing.T) {
	ts := startServer(t, nil)
	for _, u := range []string{"alice", "bob"} {
		if _, err := ts.access.CreateUser(context.Background(), u, "correct horse", api.RoleAdmin, nil); err != nil {
			t.Fatal(err)
		}
	}
	c := newConsoleClient(t, ts)
	for i := range signinUserBurst {
		resp, _ := c.do(http.MethodPost, "/signin", url.Values{"user": {"alice"}, "password": {"guess " + strconv.Itoa(i)}}, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: got %d, want 401", i+1, resp.StatusCode)
		}
	}
	// The right password is refused now, in other words than a wrong one,
	// and whatever the case of the name.
	for _, name := range []string{"alice", "ALICE"} {
		resp, body := c.do(http.MethodPost, "/signin", url.Values{"user": {name}, "password": {"correct horse"}}, nil)
		secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "Too many failed sign-ins") || err != nil || secs < 1 {
			t.Fatalf("%s after %d failures: got %d, Retry-After %q, want 429 with a wait:\n%s", name, signinUserBurst, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
		if len(resp.Cookies()) != 0 {
			t.Fatal("a limited sign-in set a cookie")
		}
	}
	// Another user from the same address is not held back by alice's
	// failures, and successes do not count.
	for range 3 {
		c.cookie = nil
		c.signInAs("bob", "correct horse")
	}
}

var joinInFlash = regexp.MustCompile(`id="join-command">tendril-agent register --home /var/lib/tendril-agent --join &#39;(tendril://[^&]+&amp;[^&]+)&#39;<`)

func TestConsoleConfiguration(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Version = "1.0.0" })
	ctx := context.Background()
	enrolled(t, ts, "web-1")
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))

	resp, body := c.get("/configuration")
	for _, want := range []string{`<h1>Configuration</h1>`, `data-maintenance="off"`, `id="token-form"`, `<option value="Test">`,
		`id="api-key-form"`, `data-name="admin"`, `No agent package uploaded yet`, `No Calamari bundle uploaded yet`,
		`This coordinator runs <strong>1.0.0</strong>`, `No release feed is configured`, `aria-current="page">Configuration<`} {
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, want) {
			t.Fatalf("configuration page: got %d, want %q in:\n%s", resp.StatusCode, want, body)
		}
	}

	// Maintenance on: new tasks are refused; off again: they are not.
	_, body = c.post("/actions/maintenance", url.Values{"on": {"true"}})
	if !strings.Contains(body, "Maintenance mode is on: no new tasks or upgrades start. 0 tasks still running") || !strings.Contains(body, `data-maintenance="on"`) {
		t.Fatalf("after turning maintenance on: want the flash and the switch on, got:\n%s", body)
	}
	if _, err := ts.CreateTasks(ctx, api.TaskRequest{Agent: "web-1", Args: []string{"version"}}); !errors.Is(err, kind.ErrConflict) || !strings.Contains(err.Error(), "maintenance mode") {
		t.Fatalf("task in maintenance mode: got %v, want refused", err)
	}
	_, body = c.get("/ui/fragments/configuration/maintenance")
	if !strings.Contains(body, `data-maintenance="on"`) || !strings.Contains(body, "Turn maintenance mode off") {
		t.Fatalf("maintenance fragment: want the switch on, got:\n%s", body)
	}
	_, body = c.get("/tasks")
	if !strings.Contains(body, `id="maintenance-banner" data-refresh="/ui/fragments/maintenance-banner"`) {
		t.Fatalf("a page in maintenance mode: want the banner, refreshing, got:\n%s", body)
	}
	_, body = c.get("/ui/fragments/maintenance-banner")
	if !strings.Contains(body, "Maintenance mode is on: no new tasks or upgrades start.\n0 tasks still running, 0 queued, 0 rollouts running.") {
		t.Fatalf("maintenance banner fragment: got %q", body)
	}
	_, body = c.post("/actions/maintenance", url.Values{"on": {"false"}})
	if !strings.Contains(body, "Maintenance mode is off") || !strings.Contains(body, `data-maintenance="off"`) {
		t.Fatalf("after turning maintenance off: want the switch off, got:\n%s", body)
	}
	if m, _ := ts.Maintenance(ctx); m.On {
		t.Fatal("maintenance still on after turning it off")
	}

	// A token: its join command is shown once, and it enrolls an agent.
	_, body = c.post("/actions/tokens", url.Values{"environment": {"Production"}, "ttl": {"1h"}})
	m := joinInFlash.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("after creating a token: want the join command, got:\n%s", body)
	}
	join, err := protocol.ParseJoin(strings.ReplaceAll(m[1], "&amp;", "&"))
	if err != nil || join.Thumbprint != ts.Thumbprint() || !reflect.DeepEqual(join.Servers, []string{ts.AgentAddr()}) {
		t.Fatalf("join string %q: got %+v, %v; want this coordinator's address and thumbprint", m[1], join, err)
	}
	if _, body = c.get("/configuration"); strings.Contains(body, join.Token) || !strings.Contains(body, `data-state="unused"`) {
		t.Fatalf("configuration after the token was shown: want the token unused and its secret gone, got:\n%s", body)
	}
	p, err := dialPeer(t, ts, newIdentity(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.register(join.Token, "web-2", false); err != nil {
		t.Fatalf("register with the token from the console: %v", err)
	}
	if v := ts.agentView(t, "web-2"); v.Environment != "Production" {
		t.Fatalf("web-2: got environment %q, want Production", v.Environment)
	}
	_, body = c.get("/configuration")
	if !strings.Contains(body, `data-state="used"`) || !strings.Contains(body, `class="used-by">web-2<`) {
		t.Fatalf("configuration after enrolling: want the token used by web-2, got:\n%s", body)
	}
	// Revoking an unused token.
	ts.token(t, "Staging")
	id := tokenID(t, ts, "Staging")
	_, body = c.post("/actions/tokens/"+id+"/revoke", url.Values{})
	if !strings.Contains(body, "Enrollment token revoked") {
		t.Fatalf("after revoking a token: want the flash, got:\n%s", body)
	}
	if tokens, _ := ts.access.Tokens(ctx); len(tokens) != 2 {
		t.Fatalf("tokens after the revoke: got %d, want 2 (Test's and Production's)", len(tokens))
	}

	// An API key: shown once, then revoked, which ends its session.
	_, body = c.post("/actions/api-keys", url.Values{"name": {"deploy-bot"}})
	km := regexp.MustCompile(`id="new-api-key">(tdk_[A-Za-z0-9_-]+)<`).FindStringSubmatch(body)
	if km == nil {
		t.Fatalf("after creating a key: want it shown, got:\n%s", body)
	}
	bot := newConsoleClient(t, ts)
	bot.signIn(km[1])
	_, body = bot.get("/configuration")
	if strings.Contains(body, `id="api-key-form"`) || !strings.Contains(body, "Managing API keys and users needs the role admin") || !strings.Contains(body, "role is operator") {
		t.Fatal("configuration with an operator key: want no API key form and the reason")
	}
	if resp, _ := bot.post("/actions/api-keys", url.Values{"name": {"escalated"}, "admin": {"true"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("create a key from a standard key's session: got %d, want 403", resp.StatusCode)
	}
	keys, _ := ts.access.APIKeys(ctx)
	if len(keys) != 2 || keys[0].Name != "deploy-bot" || keys[0].Admin {
		t.Fatalf("keys: got %+v, want deploy-bot (standard) and admin", keys)
	}
	_, body = c.post("/actions/api-keys/"+keys[0].ID+"/revoke", url.Values{})
	if !strings.Contains(body, "API key deploy-bot revoked") || !strings.Contains(body, `data-name="deploy-bot" data-state="revoked"`) {
		t.Fatalf("after revoking: want the flash and the key shown revoked, got:\n%s", body)
	}
	if resp, _ := bot.get("/configuration"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("session of the revoked key: got %d, want 303 to sign in", resp.StatusCode)
	}

	// The only admin key has no Revoke form: its button is disabled and
	// says why, until there is another admin key.
	adminID := keys[1].ID
	if !strings.Contains(body, `id="only-admin-key">The only admin key`) || strings.Contains(body, `action="/actions/api-keys/`+adminID+`/revoke"`) {
		t.Fatalf("the only admin key: want its Revoke disabled with the reason, got:\n%s", body)
	}
	_, body = c.post("/actions/api-keys", url.Values{"name": {"second-admin"}, "admin": {"true"}})
	if strings.Contains(body, `id="only-admin-key"`) || !strings.Contains(body, `action="/actions/api-keys/`+adminID+`/revoke"`) {
		t.Fatalf("with a second admin key: want both revocable, got:\n%s", body)
	}
}

func TestConsoleConfigurationBadInput(t *testing.T) {
	ts := startServer(t, nil)
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	admin, _ := ts.access.APIKeys(context.Background())
	tests := []struct {
		name string
		path string
		form url.Values
		want string
	}{
		{"token without environment", "/actions/tokens", url.Values{"ttl": {"1h"}}, "environment name"},
		{"token for a hostile environment", "/actions/tokens", url.Values{"environment": {hostile}, "ttl": {"1h"}}, "environment name &#34;&lt;script&gt;"},
		{"token for an oversize environment", "/actions/tokens", url.Values{"environment": {strings.Repeat("e", 64)}, "ttl": {"1h"}}, "environment name"},
		{"token without lifetime", "/actions/tokens", url.Values{"environment": {"Prod"}}, "lifetime"},
		{"token with a word for lifetime", "/actions/tokens", url.Values{"environment": {"Prod"}, "ttl": {"soon"}}, "lifetime &#34;soon&#34;"},
		{"token with no lifetime", "/actions/tokens", url.Values{"environment": {"Prod"}, "ttl": {"0s"}}, "lifetime"},
		{"token with a negative lifetime", "/actions/tokens", url.Values{"environment": {"Prod"}, "ttl": {"-1h"}}, "lifetime"},
		{"token living too long", "/actions/tokens", url.Values{"environment": {"Prod"}, "ttl": {"100000h"}}, "at most 720h"},
		{"revoke an unknown token", "/actions/tokens/nope/revoke", url.Values{}, "no enrollment token with id &#34;nope&#34;"},
		{"key without name", "/actions/api-keys", url.Values{}, "API key name"},
		{"key with a hostile name", "/actions/api-keys", url.Values{"name": {hostile}}, "API key name &#34;&lt;script&gt;"},
		{"revoke an unknown key", "/actions/api-keys/nope/revoke", url.Values{}, "no API key with id &#34;nope&#34;"},
		{"revoke the last admin key", "/actions/api-keys/" + admin[0].ID + "/revoke", url.Values{}, "last valid admin key"},
		{"maintenance without a state", "/actions/maintenance", url.Values{}, "on=true or on=false"},
		{"maintenance maybe", "/actions/maintenance", url.Values{"on": {"maybe"}}, "on=true or on=false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshotAccess(t, ts)
			resp, body := c.post(tt.path, tt.form)
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, `class="flash error"`) || !strings.Contains(body, tt.want) {
				t.Fatalf("got %d, want the page with an error flash saying %q:\n%s", resp.StatusCode, tt.want, body)
			}
			if strings.Contains(body, "<script>alert") {
				t.Fatal("hostile input shown unescaped")
			}
			if after := snapshotAccess(t, ts); !reflect.DeepEqual(after, before) {
				t.Fatalf("state changed by refused input:\ngot  %+v\nwant %+v", after, before)
			}
			if m, _ := ts.Maintenance(context.Background()); m.On {
				t.Fatal("maintenance turned on by refused input")
			}
		})
	}

	// An oversize form is refused before it is read.
	resp, _ := c.do(http.MethodPost, "/actions/api-keys", url.Values{"csrf": {c.csrf()}, "name": {strings.Repeat("k", httpapi.MaxRequestBody)}}, nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("oversize form: got %d, want 400", resp.StatusCode)
	}
}

func TestConsoleConfigurationCSRF(t *testing.T) {
	ts := startServer(t, nil)
	ts.token(t, "Prod")
	tok := tokenID(t, ts, "Prod")
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	csrf := c.csrf()
	keys, _ := ts.access.APIKeys(context.Background())
	actions := []struct {
		path string
		form url.Values
	}{
		{"/actions/maintenance", url.Values{"on": {"true"}}},
		{"/actions/tokens", url.Values{"environment": {"Prod"}, "ttl": {"1h"}}},
		{"/actions/tokens/" + tok + "/revoke", url.Values{}},
		{"/actions/api-keys", url.Values{"name": {"sneaky"}, "admin": {"true"}}},
		{"/actions/api-keys/" + keys[0].ID + "/revoke", url.Values{}},
	}
	forgeries := []struct {
		name  string
		token string
		hdr   map[string]string
	}{
		{"no token", "", nil},
		{"wrong token", "AAAA" + csrf[4:], nil},
		{"right token from another site", csrf, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"right token, foreign origin", csrf, map[string]string{"Origin": "https://evil.example"}},
	}
	before := snapshotAccess(t, ts)
	for _, a := range actions {
		for _, f := range forgeries {
			t.Run(a.path+" "+f.name, func(t *testing.T) {
				form := url.Values{}
				for k, v := range a.form {
					form[k] = v
				}
				if f.token != "" {
					form.Set("csrf", f.token)
				}
				resp, body := c.do(http.MethodPost, a.path, form, f.hdr)
				if resp.StatusCode != http.StatusForbidden {
					t.Fatalf("got %d, want 403: %s", resp.StatusCode, body)
				}
				if after := snapshotAccess(t, ts); !reflect.DeepEqual(after, before) {
					t.Fatalf("state changed by a forged request:\ngot  %+v\nwant %+v", after, before)
				}
				if m, _ := ts.Maintenance(context.Background()); m.On {
					t.Fatal("maintenance turned on by a forged request")
				}
			})
		}
	}
	// Signed out, the actions send to sign-in and change nothing.
	c.cookie = nil
	for _, a := range actions {
		resp, _ := c.do(http.MethodPost, a.path, a.form, nil)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/signin" {
			t.Fatalf("%s signed out: got %d to %q, want 303 to /signin", a.path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp, _ := c.get("/configuration"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("configuration signed out: got %d, want 303 to sign in", resp.StatusCode)
	}
	for _, p := range []string{"/ui/fragments/configuration/maintenance", "/ui/fragments/maintenance-banner"} {
		if resp, _ := c.get(p); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s signed out: got %d, want 401", p, resp.StatusCode)
		}
	}
	if after := snapshotAccess(t, ts); !reflect.DeepEqual(after, before) {
		t.Fatal("state changed by signed-out requests")
	}
}

func TestConsoleConfigurationEscapesHostileText(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	now := time.Now().UTC()
	// Names are validated on the way in; rows written some other way
	// must still render as text.
	if err := ts.store.CreateToken(ctx, store.Token{ID: hostile, Hash: secret.Hash("tdt_h"), Environment: hostile, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := ts.store.CreateAPIKey(ctx, store.APIKey{ID: "k-hostile", Name: hostile, Hash: secret.Hash("tdk_h"), CreatedAt: now, Role: api.RoleOperator}); err != nil {
		t.Fatal(err)
	}
	if err := ts.store.CreateUser(ctx, store.User{ID: "u-hostile", Name: hostile, PasswordHash: "x", CreatedAt: now, Role: api.RoleOperator}); err != nil {
		t.Fatal(err)
	}
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	_, body := c.get("/configuration")
	for _, bad := range []string{"<script>alert", "<img src=x"} {
		if strings.Contains(body, bad) {
			t.Fatalf("got %q unescaped in:\n%s", bad, body)
		}
	}
	if n := strings.Count(body, "&lt;script&gt;alert(1)&lt;/script&gt;"); n < 3 {
		t.Fatalf("got the hostile text escaped %d times, want it shown for the token, the key and the user:\n%s", n, body)
	}
	// The hostile token id in a revoke form's address is escaped too.
	if !strings.Contains(body, `action="/actions/tokens/`+url.PathEscape(hostile)+`/revoke"`) {
		t.Fatalf("want the token's revoke form with its id path-escaped, got:\n%s", body)
	}
}

func TestConsoleConfigurationReleaseNotice(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "releases.json")
	if err := os.WriteFile(good, []byte(`{"releases": [{"version": "1.1.0", "notes_url": "https://releases.example/1.1.0", "notes": "Faster.", "breaking": true}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		feed string
		want []string
	}{
		{"a newer release", good, []string{"<strong>Tendril 1.1.0</strong> is available, with breaking changes", `href="https://releases.example/1.1.0"`, `<p class="notes">Faster.</p>`}},
		{"an unreadable feed", filepath.Join(dir, "missing.json"), []string{`id="release-feed-error">Could not read the release feed:`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, func(c *Config) { c.Version = "1.0.0"; c.ReleaseFeed = tt.feed })
			eventually(t, "the release feed tried", func() bool { u := ts.Updates(); return u.CheckedAt != nil || u.Error != "" })
			c := newConsoleClient(t, ts)
			c.signIn(adminKey(t, ts))
			_, body := c.get("/configuration")
			for _, want := range tt.want {
				if !strings.Contains(body, want) {
					t.Fatalf("want %q in:\n%s", want, body)
				}
			}
		})
	}
}

// The sign-in page's messages and limits, as a person meets them.
const (
	signinEmpty       = "Enter a user name and password, or an API key."
	signinIncomplete  = "Enter both a user name and a password."
	signinBadPassword = "That user name and password do not match."
	// signinUserBurst is how many failed sign-ins one user name gets
	// before the console makes it wait.
	signinUserBurst = 5
)
