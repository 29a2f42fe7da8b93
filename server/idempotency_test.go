package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
	"github.com/tendrildeploy/tendril/internal/faultproxy"
	"github.com/tendrildeploy/tendril/server/idempotency"
	"github.com/tendrildeploy/tendril/server/store"
)

// TestCreateWhoseAnswerIsLostRunsOnce: the coordinator creates a task
// and the connection breaks before its answer reaches the client (a node
// killed after its commit, a proxy cut). The client sends the request
// again with the same Idempotency-Key and gets the first answer: one task
// ran, not two, and the caller was not told it failed.
func TestCreateWhoseAnswerIsLostRunsOnce(t *testing.T) {
	ts := startServer(t, nil)
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	ts.upload(t, packBundle(t, "1.0.0", 0))
	proxy, err := faultproxy.New(ts.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	c, err := client.New("http://"+proxy.Addr(), adminKey(t, ts), &http.Client{Transport: &http.Transport{DisableKeepAlives: true}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	proxy.CutReplies(1)
	views, err := c.CreateTasks(ctx, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", "echo once"}})
	if err != nil {
		t.Fatalf("create with its first answer lost: got %v, want the answer of the retry", err)
	}
	if got := proxy.Accepted(); got != 2 {
		t.Fatalf("connections: got %d, want 2 (the cut one and the retry)", got)
	}
	all, err := ts.Tasks(ctx, api.TaskFilter{Agent: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].ID != views[0].ID {
		t.Fatalf("tasks on web-1: got %d (%+v), want the one the answer names (%s)", len(all), all, views[0].ID)
	}
	eventually(t, "the task finished", func() bool {
		v, _ := ts.Task(ctx, views[0].ID)
		return v.State == api.TaskSucceeded
	})

	// The node that ran a request died after its commit, before it
	// recorded the answer: its record says running. The retry finds the
	// tasks by the record's ref instead of waiting, or creating again.
	body := `{"agent":"web-1","args":["run-script","--inline","echo died"]}`
	sum := sha256.Sum256([]byte(body))
	const ref = "4a1b3c2d-0000-4000-8000-00000000dead"
	if _, reserved, err := ts.store.ReserveIdempotencyKey(ctx, store.IdempotencyKey{Scope: `API key "admin" POST /api/tasks`,
		Key: "died", RequestSHA256: hex.EncodeToString(sum[:]), Ref: ref, Node: "dead-node", CreatedAt: time.Now().UTC()}); err != nil || !reserved {
		t.Fatalf("reserve: %v %v", reserved, err)
	}
	made, err := ts.CreateTasks(idempotency.WithRef(ctx, ref), api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", "echo died"}})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+ts.HTTPAddr()+"/api/tasks", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminKey(t, ts))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(idempotency.Header, "died")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []api.TaskView
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 201 || len(got) != 1 || got[0].ID != made[0].ID {
		t.Fatalf("retry: got %d %+v (%v), want 201 naming task %s", resp.StatusCode, got, err, made[0].ID)
	}
	if n, _ := ts.Tasks(ctx, api.TaskFilter{Agent: "web-1"}); len(n) != 2 {
		t.Fatalf("tasks on web-1: got %d, want 2 (the retry created none)", len(n))
	}
}

// TestIdempotencyKeyAnswers: the answers a create with an
// Idempotency-Key can get, over the real API.
func TestIdempotencyKeyAnswers(t *testing.T) {
	ts := startServer(t, nil)
	key := adminKey(t, ts)
	send := func(t *testing.T, path, idemKey, body string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+ts.HTTPAddr()+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		if idemKey != "" {
			req.Header.Set(idempotency.Header, idemKey)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	users := func(t *testing.T) int {
		us, err := ts.access.Users(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return len(us)
	}
	alice := `{"name":"alice","password":"correct horse battery","role":"viewer"}`

	t.Run("replay", func(t *testing.T) {
		first, body1 := send(t, "/api/users", "user-alice", alice)
		again, body2 := send(t, "/api/users", "user-alice", alice)
		if first.StatusCode != 201 || again.StatusCode != 201 || body1 != body2 {
			t.Fatalf("got %d %q then %d %q; want 201 twice with the same body", first.StatusCode, body1, again.StatusCode, body2)
		}
		if first.Header.Get(idempotency.ReplayedHeader) != "" || again.Header.Get(idempotency.ReplayedHeader) != "true" {
			t.Fatalf("%s: got %q then %q, want none then true", idempotency.ReplayedHeader,
				first.Header.Get(idempotency.ReplayedHeader), again.Header.Get(idempotency.ReplayedHeader))
		}
		// Without the key the same request is a new one, refused: the
		// name is taken.
		if resp, body := send(t, "/api/users", "", alice); resp.StatusCode != 409 {
			t.Fatalf("without the key: got %d %s, want 409", resp.StatusCode, body)
		}
	})
	t.Run("another request with the key", func(t *testing.T) {
		before := users(t)
		resp, body := send(t, "/api/users", "user-alice", `{"name":"bob","password":"correct horse battery","role":"viewer"}`)
		if resp.StatusCode != 422 || !strings.Contains(body, "was used with a different request") {
			t.Fatalf("got %d %s, want 422 naming the reuse", resp.StatusCode, body)
		}
		if got := users(t); got != before {
			t.Fatalf("users: got %d, want %d (nothing created)", got, before)
		}
	})
	t.Run("still running", func(t *testing.T) {
		// What another node records while it runs the request.
		h := sha256.Sum256([]byte(alice))
		sum := hex.EncodeToString(h[:])
		_, reserved, err := ts.store.ReserveIdempotencyKey(context.Background(), store.IdempotencyKey{
			Scope: `API key "admin" POST /api/users`, Key: "running", RequestSHA256: sum, Ref: "r", Node: ts.nodeID(), CreatedAt: time.Now().UTC()})
		if err != nil || !reserved {
			t.Fatalf("reserve: %v %v", reserved, err)
		}
		resp, body := send(t, "/api/users", "running", alice)
		if resp.StatusCode != 409 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "still running") {
			t.Fatalf("got %d (Retry-After %q) %s, want 409 with Retry-After saying it is still running", resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	})
	t.Run("the node running it died", func(t *testing.T) {
		// A route that cannot find what a request created runs it again
		// once the node that ran it is gone.
		dave := `{"name":"dave","password":"correct horse battery","role":"viewer"}`
		h := sha256.Sum256([]byte(dave))
		if _, reserved, err := ts.store.ReserveIdempotencyKey(context.Background(), store.IdempotencyKey{
			Scope: `API key "admin" POST /api/users`, Key: "dave", RequestSHA256: hex.EncodeToString(h[:]), Ref: "r", Node: "a-node-long-gone", CreatedAt: time.Now().UTC()}); err != nil || !reserved {
			t.Fatalf("reserve: %v %v", reserved, err)
		}
		if resp, body := send(t, "/api/users", "dave", dave); resp.StatusCode != 201 {
			t.Fatalf("got %d %s, want 201: the request runs again", resp.StatusCode, body)
		}
		if resp, _ := send(t, "/api/users", "dave", dave); resp.Header.Get(idempotency.ReplayedHeader) != "true" {
			t.Fatal("sent once more: want the recorded answer")
		}
	})
	t.Run("refused requests are not kept", func(t *testing.T) {
		bad := `{"name":"carol","password":"short","role":"viewer"}`
		if resp, body := send(t, "/api/users", "carol", bad); resp.StatusCode != 400 {
			t.Fatalf("got %d %s, want 400", resp.StatusCode, body)
		}
		// The same key may carry the corrected request: nothing was
		// created under it.
		good := `{"name":"carol","password":"correct horse battery","role":"viewer"}`
		if resp, body := send(t, "/api/users", "carol", good); resp.StatusCode != 201 {
			t.Fatalf("corrected request with the key of a refused one: got %d %s, want 201", resp.StatusCode, body)
		}
	})
	t.Run("secret answer", func(t *testing.T) {
		req := `{"name":"ci","role":"viewer"}`
		resp, body := send(t, "/api/api-keys", "key-ci", req)
		if resp.StatusCode != 201 {
			t.Fatalf("got %d %s, want 201", resp.StatusCode, body)
		}
		var created api.NewAPIKey
		if err := json.Unmarshal([]byte(body), &created); err != nil || created.Key == "" {
			t.Fatalf("answer %s: %v", body, err)
		}
		resp, body = send(t, "/api/api-keys", "key-ci", req)
		if resp.StatusCode != 409 || strings.Contains(body, created.Key) || !strings.Contains(body, "held a secret") {
			t.Fatalf("again: got %d %s, want 409 without the key", resp.StatusCode, body)
		}
		// Not at rest either.
		rec, _, err := ts.store.ReserveIdempotencyKey(context.Background(), store.IdempotencyKey{
			Scope: `API key "admin" POST /api/api-keys`, Key: "key-ci", RequestSHA256: "x", Ref: "x", CreatedAt: time.Now().UTC()})
		if err != nil || rec.Body != nil || bytes.Contains(rec.Body, []byte(created.Key)) {
			t.Fatalf("stored record: got %+v, %v; want no body", rec, err)
		}
	})
	t.Run("bad keys", func(t *testing.T) {
		for _, k := range []string{strings.Repeat("k", idempotency.MaxKeyLength+1), "two words"} {
			resp, body := send(t, "/api/users", k, alice)
			if resp.StatusCode != 400 || !strings.Contains(body, idempotency.Header) {
				t.Errorf("key %q: got %d %s, want 400 naming the header", k, resp.StatusCode, body)
			}
		}
	})
}
