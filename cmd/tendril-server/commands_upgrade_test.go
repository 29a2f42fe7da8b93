package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/server"
)

// rolloutAPI stands in for the coordinator's agent-package and rollout
// endpoints: a real rollout needs agents that restart into a new binary,
// which the server package's tests simulate and the end-to-end tests run
// for real. GET /api/rollouts/{id} answers the scripted views in turn,
// repeating the last.
type rolloutAPI struct {
	srv *httptest.Server

	mu       sync.Mutex
	started  *server.RolloutRequest
	pkgQuery string
	pkgBody  int
	views    []server.RolloutView
	gets     int
}

func newRolloutAPI(t *testing.T) *rolloutAPI {
	t.Helper()
	f := &rolloutAPI{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/agent-packages", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		q := r.URL.Query()
		f.mu.Lock()
		f.pkgQuery, f.pkgBody = r.URL.RawQuery, len(b)
		f.mu.Unlock()
		sum := sha256Hex(b)
		writeTestJSON(w, http.StatusCreated, server.AgentPackageView{Version: q.Get("version"), OS: q.Get("os"), Arch: q.Get("arch"),
			SHA256: sum, Size: int64(len(b)), Created: true})
	})
	mux.HandleFunc("GET /api/agent-packages", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, http.StatusOK, []server.AgentPackageView{
			{Version: "1.3.0", OS: "linux", Arch: "amd64", Size: 2048, SHA256: strings.Repeat("ab", 32), UploadedAt: time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)},
		})
	})
	mux.HandleFunc("POST /api/rollouts", func(w http.ResponseWriter, r *http.Request) {
		var req server.RolloutRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeTestJSON(w, http.StatusBadRequest, server.APIError{Error: err.Error()})
			return
		}
		f.mu.Lock()
		f.started = &req
		v := f.views[0]
		f.mu.Unlock()
		writeTestJSON(w, http.StatusCreated, v)
	})
	mux.HandleFunc("GET /api/rollouts/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		v := f.views[min(f.gets, len(f.views)-1)]
		f.gets++
		f.mu.Unlock()
		if r.PathValue("id") != v.ID {
			writeTestJSON(w, http.StatusNotFound, server.APIError{Error: "no rollout"})
			return
		}
		writeTestJSON(w, http.StatusOK, v)
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *rolloutAPI) vars() map[string]string {
	return map[string]string{envURL: f.srv.URL, envAPIKey: "k"}
}

var rolloutT0 = time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)

func rolloutStep(state, reason string, agents ...server.RolloutAgentView) server.RolloutView {
	v := server.RolloutView{ID: "r1", Environment: "Prod", Version: "2.0.0", Batch: 1, State: state, Reason: reason,
		CreatedAt: rolloutT0, Counts: map[string]int{}, Agents: agents}
	for _, a := range agents {
		v.Counts[a.State]++
	}
	return v
}

func ra(name string, batch int, state, reason string, sec int) server.RolloutAgentView {
	return server.RolloutAgentView{Agent: name, Batch: batch, From: "1.0.0", State: state, Reason: reason, UpdatedAt: rolloutT0.Add(time.Duration(sec) * time.Second)}
}

func TestAgentPackageCommands(t *testing.T) {
	f := newRolloutAPI(t)
	bin := writeTempFile(t, "tendril-agent", []byte("\x7fELF"+strings.Repeat("x", 5000)))
	code, stdout, stderr := cli(t, context.Background(), f.vars(), "agent-package", "push", "--version", "1.3.0", "--os", "linux", "--arch", "amd64", bin)
	if code != 0 || stdout != "stored agent 1.3.0 for linux/amd64 (4.9 KiB, signed)\n" {
		t.Fatalf("push: got %d %q %q", code, stdout, stderr)
	}
	if f.pkgQuery != "arch=amd64&os=linux&version=1.3.0" || f.pkgBody != 5004 {
		t.Fatalf("push sent %q with %d bytes", f.pkgQuery, f.pkgBody)
	}
	code, _, stderr = cli(t, context.Background(), f.vars(), "agent-package", "push", "--os", "linux", "--arch", "amd64", bin)
	if code != 2 || !strings.Contains(stderr, "--version, --os and --arch are required") {
		t.Fatalf("push without --version: got %d %q", code, stderr)
	}
	code, stdout, _ = cli(t, context.Background(), f.vars(), "agent-package", "list")
	want := "VERSION  PLATFORM     SIZE     SHA256        UPLOADED\n1.3.0    linux/amd64  2.0 KiB  abababababab  2026-01-02T12:00:00Z\n"
	if code != 0 || stdout != want {
		t.Fatalf("list: got %d\n%s\nwant\n%s", code, stdout, want)
	}
	code, stdout, _ = cli(t, context.Background(), f.vars(), "agent-package", "list", "--json")
	var ps []server.AgentPackageView
	if code != 0 || json.Unmarshal([]byte(stdout), &ps) != nil || len(ps) != 1 {
		t.Fatalf("list --json: got %d %q", code, stdout)
	}
}

func TestUpgradeCommand(t *testing.T) {
	rolloutPoll = 10 * time.Millisecond
	t.Cleanup(func() { rolloutPoll = time.Second })
	steps := []server.RolloutView{
		rolloutStep("running", "", ra("web-1", 1, "queued", "waiting for batch 1", 0), ra("web-2", 2, "queued", "waiting for batch 2", 0)),
		rolloutStep("running", "", ra("web-1", 1, "sending", "sending agent 2.0.0", 1), ra("web-2", 2, "queued", "waiting for batch 2", 0)),
		rolloutStep("running", "", ra("web-1", 1, "succeeded", "the new version connected", 2), ra("web-2", 2, "waiting_for_idle", "", 2)),
		rolloutStep("halted", "halted after 1 failures", ra("web-1", 1, "succeeded", "the new version connected", 2), ra("web-2", 2, "rolled_back", "the agent rolled back to its previous version: crashed", 3)),
	}

	t.Run("start only", func(t *testing.T) {
		f := newRolloutAPI(t)
		f.views = steps
		code, stdout, stderr := cli(t, context.Background(), f.vars(), "upgrade", "--environment", "Prod", "--batch", "1", "--max-failures", "2", "--grace", "30s", "--allow-downgrade")
		if code != 0 || stdout != "r1\n" {
			t.Fatalf("got %d %q %q", code, stdout, stderr)
		}
		want := server.RolloutRequest{Environment: "Prod", Batch: 1, MaxFailures: 2, GraceSeconds: 30, AllowDowngrade: true}
		if *f.started != want {
			t.Fatalf("sent %+v, want %+v", *f.started, want)
		}
	})
	t.Run("wait, halted", func(t *testing.T) {
		f := newRolloutAPI(t)
		f.views = steps
		code, stdout, stderr := cli(t, context.Background(), f.vars(), "upgrade", "--all", "--wait")
		want := `rollout r1: upgrading 2 agents to 2.0.0
2026-01-02T12:00:00Z web-1: queued (waiting for batch 1)
2026-01-02T12:00:00Z web-2: queued (waiting for batch 2)
2026-01-02T12:00:01Z web-1: sending (sending agent 2.0.0)
2026-01-02T12:00:02Z web-1: succeeded (the new version connected)
2026-01-02T12:00:02Z web-2: waiting_for_idle
2026-01-02T12:00:03Z web-2: rolled_back (the agent rolled back to its previous version: crashed)
web-2 rolled back: the agent rolled back to its previous version: crashed
`
		if code != 1 || stdout != want || stderr != "tendril-server: rollout r1 halted: halted after 1 failures\n" {
			t.Fatalf("got %d\n%s\nstderr %q", code, stdout, stderr)
		}
		if !f.started.All || f.started.Batch != 10 {
			t.Fatalf("sent %+v", *f.started)
		}
	})
	t.Run("wait, succeeded, on a terminal", func(t *testing.T) {
		f := newRolloutAPI(t)
		done := rolloutStep("succeeded", "every agent runs 2.0.0", ra("web-1", 1, "succeeded", "the new version connected", 2))
		f.views = []server.RolloutView{steps[0], done}
		var out, errOut syncBuffer
		code := execute(context.Background(), []string{"upgrade", "--environment", "Prod", "--wait"},
			env{stdout: &out, stderr: &errOut, getenv: func(k string) string { return f.vars()[k] }, console: true})
		if code != 0 || out.String() != "rollout r1: upgrading 2 agents to 2.0.0\nrollout r1 succeeded: every agent runs 2.0.0\n" {
			t.Fatalf("got %d %q", code, out.String())
		}
		if !strings.Contains(errOut.String(), "upgrading agents") {
			t.Fatalf("stderr %q: want a progress bar", errOut.String())
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no target", []string{"upgrade"}, "give exactly one of --all or --environment ENV"},
		{"both targets", []string{"upgrade", "--all", "--environment", "Prod"}, "give exactly one of --all or --environment ENV"},
		{"zero batch", []string{"upgrade", "--all", "--batch", "0"}, "--batch must be 1 or more"},
		{"tiny grace", []string{"upgrade", "--all", "--grace", "10ms"}, "--grace must be at least 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cli(t, context.Background(), newRolloutAPI(t).vars(), tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("got %d %q, want 2 and %q", code, stderr, tc.want)
			}
		})
	}
}

func TestRolloutShow(t *testing.T) {
	f := newRolloutAPI(t)
	f.views = []server.RolloutView{rolloutStep("running", "", ra("web-1", 1, "succeeded", "the new version connected", 0), ra("web-2", 2, "queued", "waiting for batch 2", 0))}
	var out syncBuffer
	if err := writeRollout(&out, f.views[0], rolloutT0.Add(90*time.Second)); err != nil {
		t.Fatal(err)
	}
	want := `Rollout r1: agent 2.0.0 to environment Prod, batches of 1, max failures 0
State: running
Agents: 1 queued, 1 succeeded

NAME   BATCH  FROM   STATE      SINCE      REASON
web-1  1      1.0.0  succeeded  1m30s ago  the new version connected
web-2  2      1.0.0  queued     1m30s ago  waiting for batch 2
`
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
	code, stdout, _ := cli(t, context.Background(), f.vars(), "rollout", "show", "r1", "--json")
	var v server.RolloutView
	if code != 0 || json.Unmarshal([]byte(stdout), &v) != nil || v.ID != "r1" || len(v.Agents) != 2 {
		t.Fatalf("--json: got %d %q", code, stdout)
	}
	code, _, stderr := cli(t, context.Background(), f.vars(), "rollout", "show", "nope")
	if code != 1 || !strings.Contains(stderr, "HTTP 404") {
		t.Fatalf("unknown: got %d %q", code, stderr)
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
