package server

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
)

// plantFinishedTask makes the folder of a task that finished ago in an
// agent's home, as the agent's task runner leaves it.
func plantFinishedTask(t *testing.T, home, ticket string, ago time.Duration) {
	t.Helper()
	dir := filepath.Join(home, "Work", ticket)
	if err := os.MkdirAll(filepath.Join(dir, "files"), 0o700); err != nil {
		t.Fatal(err)
	}
	finished := time.Now().Add(-ago).UTC()
	files := map[string]any{
		"task.json":   map[string]any{"ticket": ticket, "calamari": "1.0.0", "args": []string{}, "started_at": finished.Add(-time.Second)},
		"result.json": map[string]any{"state": protocol.TaskSucceeded, "exit_code": 0, "finished_at": finished},
	}
	for _, name := range []string{"task.json", "result.json"} { // result last, as the runner writes it
		b, err := json.Marshal(files[name])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "files", "package.zip"), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
}

func workFolders(t *testing.T, home string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(home, "Work"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// TestWorkRetentionReachesAgent runs a real agent over TLS: it is
// welcomed with the policy's default rule (keep 50), keeps its old task
// folders, then hears a changed policy at once, removes the old folders
// and reports it in its health, which GET /api/agents shows.
func TestWorkRetentionReachesAgent(t *testing.T) {
	ts := startServer(t, nil)
	home := registerAgent(t, ts, ts.AgentAddr(), "web-1", nil)
	for i, ticket := range []string{"old-1", "old-2", "old-3"} {
		plantFinishedTask(t, home, ticket, time.Duration(4-i)*time.Hour)
	}
	startAgent(t, home, nil)
	ts.waitConnected(t, "web-1")

	var v api.AgentView
	eventually(t, "the first work report", func() bool {
		ts.checkAllHealth()
		v = ts.agentView(t, "web-1")
		return v.Work != nil && v.Work.LastCleanup != nil
	})
	if w := v.Work; w.Keep != 50 || w.MinFreeBytes != 0 || w.Tasks != 3 || w.RemovedTotal != 0 || w.Bytes < 3*4096 {
		t.Fatalf("work report under the default policy: got %+v, want keep 50, 3 tasks of at least %d bytes, none removed", w, 3*4096)
	}

	if _, err := ts.SetPolicy(context.Background(), api.PolicyRequest{WorkKeep: new(1), WorkMinFree: new("1KiB")}); err != nil {
		t.Fatal(err)
	}
	// No health check runs meanwhile (the harness's interval is an hour):
	// the agent heard the change from the policy's own request.
	eventually(t, "the old task folders removed", func() bool {
		return slices.Equal(workFolders(t, home), []string{"old-3"})
	})
	eventually(t, "the work report of the new rule", func() bool {
		ts.checkAllHealth()
		v = ts.agentView(t, "web-1")
		return v.Work != nil && v.Work.RemovedTotal == 2
	})
	if w := v.Work; w.Keep != 1 || w.MinFreeBytes != 1024 || w.Tasks != 1 || w.BelowFloor {
		t.Fatalf("work report after the change: got %+v, want keep 1, floor 1024, 1 task, above the floor", w)
	}

	// The machine page shows it, and so does the panel's own fragment.
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	for _, path := range []string{"/machines/web-1", "/ui/fragments/machines/web-1/work"} {
		resp, body := c.get(path)
		for _, want := range []string{`<dd id="work-tasks">1</dd>`, "keep the newest 1 finished; below 1.0 KiB free", "(2 since the agent started)"} {
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, want) {
				t.Fatalf("%s: got %d, want 200 with %q in:\n%s", path, resp.StatusCode, want, body)
			}
		}
	}
}

// TestWorkRetentionOlderAgent checks that an agent without
// FeatureWorkRetention is welcomed with the rule (which it ignores) but
// never sent the request it would not understand, and that its view has
// no work report.
func TestWorkRetentionOlderAgent(t *testing.T) {
	ts := startServer(t, nil)
	id := newIdentity(t)
	p, err := dialPeer(t, ts, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.register(ts.token(t, "Test"), "old-1", false); err != nil {
		t.Fatal(err)
	}
	p.sess.Close()
	if p, err = dialPeer(t, ts, id); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen []string
	)
	go func() {
		for {
			st, err := p.sess.AcceptStream()
			if err != nil {
				return
			}
			if f, err := protocol.ReadFrame(st, 0); err == nil {
				mu.Lock()
				seen = append(seen, f.Type)
				mu.Unlock()
				switch f.Type {
				case protocol.TypeHealthRequest:
					protocol.WriteFrame(st, protocol.TypeHealth, protocol.Health{Version: "1.0.0", DiskFree: 10 << 30})
				default:
					protocol.WriteError(st, protocol.CodeUnknownType, "unknown message type "+f.Type)
				}
			}
			st.Close()
		}
	}()
	w, err := p.hello()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := w.WorkRetention, (protocol.WorkRetention{Keep: 50}); got == nil || *got != want {
		t.Fatalf("welcome: got work retention %+v, want %+v", got, want)
	}
	if _, err := ts.SetPolicy(context.Background(), api.PolicyRequest{WorkKeep: new(3)}); err != nil {
		t.Fatal(err)
	}
	if n := ts.checkAllHealth(); n != 1 {
		t.Fatalf("health sweep: got %d agents, want 1", n)
	}
	mu.Lock()
	got := slices.Clone(seen)
	mu.Unlock()
	if slices.Contains(got, protocol.TypeWorkRetention) {
		t.Fatalf("requests to the older agent: got %q, want no %s", got, protocol.TypeWorkRetention)
	}
	if v := ts.agentView(t, "old-1"); v.Work != nil || v.Health != api.HealthHealthy && v.Health != api.HealthWarning {
		t.Fatalf("older agent's view: got work %+v, health %s; want no work report and a health", v.Work, v.Health)
	}
}
