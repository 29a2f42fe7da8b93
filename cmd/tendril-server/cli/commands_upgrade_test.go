package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/servertest"
)

// rolloutAPI stands in for the coordinator's agent-package and rollout
// endpoints: a real rollout needs agents that restart into a new binary,
// which the server package's tests simulate and the end-to-end tests run
// for real. GET /api/rollouts/{id} answers the scripted views in turn,
// repeating the last.
type rolloutAPI struct {
	srv *httptest.Server

	mu       sync.Mutex
	started  *api.RolloutRequest
	pkgQuery string
	pkgBody  int
	views    []api.RolloutView
	gets     int
	actions  []string // "halt ID", "resume ID"
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
		writeTestJSON(w, http.StatusCreated, api.AgentPackageView{Version: q.Get("version"), OS: q.Get("os"), Arch: q.Get("arch"),
			SHA256: sum, Size: int64(len(b)), Created: true})
	})
	mux.HandleFunc("GET /api/agent-packages", func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, http.StatusOK, []api.AgentPackageView{
			{Version: "1.3.0", OS: "linux", Arch: "amd64", Size: 2048, SHA256: strings.Repeat("ab", 32), UploadedAt: time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)},
		})
	})
	mux.HandleFunc("POST /api/rollouts", func(w http.ResponseWriter, r *http.Request) {
		var req api.RolloutRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeTestJSON(w, http.StatusBadRequest, api.APIError{Error: err.Error()})
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
			writeTestJSON(w, http.StatusNotFound, api.APIError{Error: "no rollout"})
			return
		}
		writeTestJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("GET /api/rollouts", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		var out []api.RolloutView
		for _, v := range f.views {
			v.Agents = nil
			out = append(out, v)
		}
		writeTestJSON(w, http.StatusOK, out)
	})
	for _, action := range []string{"halt", "resume"} {
		mux.HandleFunc("POST /api/rollouts/{id}/"+action, func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.actions = append(f.actions, action+" "+r.PathValue("id"))
			v := f.views[len(f.views)-1]
			if r.PathValue("id") != v.ID {
				writeTestJSON(w, http.StatusNotFound, api.APIError{Error: fmt.Sprintf("no rollout %q", r.PathValue("id"))})
				return
			}
			v.Paused = action == "halt"
			writeTestJSON(w, http.StatusOK, v)
		})
	}
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *rolloutAPI) vars() map[string]string {
	return map[string]string{envURL: f.srv.URL, envAPIKey: "k"}
}

var rolloutT0 = time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)

func rolloutStep(state, reason string, agents ...api.RolloutAgentView) api.RolloutView {
	v := api.RolloutView{ID: "r1", Environment: "Prod", Version: "2.0.0", Batch: 1, State: state, Reason: reason,
		CreatedAt: rolloutT0, Counts: map[string]int{}, Agents: agents}
	for _, a := range agents {
		v.Counts[a.State]++
	}
	return v
}

func ra(name string, batch int, state, reason string, sec int) api.RolloutAgentView {
	return api.RolloutAgentView{Agent: name, Batch: batch, From: "1.0.0", State: state, Reason: reason, UpdatedAt: rolloutT0.Add(time.Duration(sec) * time.Second)}
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
	var ps []api.AgentPackageView
	if code != 0 || json.Unmarshal([]byte(stdout), &ps) != nil || len(ps) != 1 {
		t.Fatalf("list --json: got %d %q", code, stdout)
	}
}

func TestUpgradeCommand(t *testing.T) {
	rolloutPoll = 10 * time.Millisecond
	t.Cleanup(func() { rolloutPoll = time.Second })
	steps := []api.RolloutView{
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
		two := 2
		want := api.RolloutRequest{Environment: "Prod", Batch: 1, MaxFailures: &two, GraceSeconds: 30, AllowDowngrade: true}
		if !reflect.DeepEqual(*f.started, want) {
			t.Fatalf("sent %+v, want %+v", *f.started, want)
		}
	})
	t.Run("named agents", func(t *testing.T) {
		f := newRolloutAPI(t)
		f.views = steps
		code, stdout, stderr := cli(t, context.Background(), f.vars(), "upgrade", "--agent", "web-1", "--agent", "web-2")
		if code != 0 || stdout != "r1\n" {
			t.Fatalf("got %d %q %q", code, stdout, stderr)
		}
		want := api.RolloutRequest{Agents: []string{"web-1", "web-2"}} // batch and max failures: the policy's
		if !reflect.DeepEqual(*f.started, want) {
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
		// No --batch or --max-failures: the coordinator's policy decides.
		if !f.started.All || f.started.Batch != 0 || f.started.MaxFailures != nil {
			t.Fatalf("sent %+v", *f.started)
		}
	})
	t.Run("wait, succeeded, on a terminal", func(t *testing.T) {
		f := newRolloutAPI(t)
		done := rolloutStep("succeeded", "every agent runs 2.0.0", ra("web-1", 1, "succeeded", "the new version connected", 2))
		f.views = []api.RolloutView{steps[0], done}
		var out, errOut syncBuffer
		code := Run(context.Background(), []string{"upgrade", "--environment", "Prod", "--wait"},
			Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return f.vars()[k] }, Console: true, Terminal: true})
		if code != 0 || out.String() != "rollout r1: upgrading 2 agents to 2.0.0\nrollout r1 succeeded: every agent runs 2.0.0\n" {
			t.Fatalf("got %d %q", code, out.String())
		}
		if !strings.Contains(errOut.String(), "upgrading agents") {
			t.Fatalf("stderr %q: want a progress bar", errOut.String())
		}
	})
	t.Run("wait, halted and resumed, stdout not a terminal", func(t *testing.T) {
		f := newRolloutAPI(t)
		held := rolloutStep("running", "", ra("web-1", 1, "succeeded", "the new version connected", 2), ra("web-2", 2, "queued", "waiting for batch 2", 0))
		held.Paused = true
		done := rolloutStep("succeeded", "every agent runs 2.0.0", ra("web-1", 1, "succeeded", "the new version connected", 2), ra("web-2", 2, "succeeded", "the new version connected", 9))
		f.views = []api.RolloutView{steps[0], held, done}
		var out, errOut syncBuffer
		// stderr is a terminal but stdout goes to a file: lines, no bar.
		code := Run(context.Background(), []string{"upgrade", "--environment", "Prod", "--wait"},
			Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return f.vars()[k] }, Console: true})
		want := `rollout r1: upgrading 2 agents to 2.0.0
2026-01-02T12:00:00Z web-1: queued (waiting for batch 1)
2026-01-02T12:00:00Z web-2: queued (waiting for batch 2)
2026-01-02T12:00:02Z web-1: succeeded (the new version connected)
rollout r1 halted by an operator: no further batch starts until "tendril-server rollout resume r1"
2026-01-02T12:00:09Z web-2: succeeded (the new version connected)
rollout r1 resumed
rollout r1 succeeded: every agent runs 2.0.0
`
		if code != 0 || out.String() != want || errOut.String() != "" {
			t.Fatalf("got %d\n%s\nstderr %q\nwant\n%s", code, out.String(), errOut.String(), want)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no target", []string{"upgrade"}, "give exactly one of --all, --environment ENV or --agent NAME"},
		{"both targets", []string{"upgrade", "--all", "--environment", "Prod"}, "give exactly one of --all, --environment ENV or --agent NAME"},
		{"agent and all", []string{"upgrade", "--all", "--agent", "web-1"}, "give exactly one of --all, --environment ENV or --agent NAME"},
		{"agent and environment", []string{"upgrade", "--agent", "web-1", "--environment", "Prod"}, "give exactly one of --all, --environment ENV or --agent NAME"},
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
	f.views = []api.RolloutView{rolloutStep("running", "", ra("web-1", 1, "succeeded", "the new version connected", 0), ra("web-2", 2, "queued", "waiting for batch 2", 0))}
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
	var v api.RolloutView
	if code != 0 || json.Unmarshal([]byte(stdout), &v) != nil || v.ID != "r1" || len(v.Agents) != 2 {
		t.Fatalf("--json: got %d %q", code, stdout)
	}
	code, _, stderr := cli(t, context.Background(), f.vars(), "rollout", "show", "nope")
	if code != 1 || !strings.Contains(stderr, "HTTP 404") {
		t.Fatalf("unknown: got %d %q", code, stderr)
	}
}

func TestRolloutListHaltResume(t *testing.T) {
	f := newRolloutAPI(t)
	v := rolloutStep("running", "", ra("web-1", 1, "succeeded", "the new version connected", 0), ra("web-2", 2, "queued", "waiting for batch 2", 0))
	v.Paused = true
	old := rolloutStep("halted", "halted after 1 failures", ra("db-1", 1, "failed", "sending the package failed", 0))
	old.ID, old.All, old.Environment = "r0", true, ""
	f.views = []api.RolloutView{old, v}
	code, stdout, _ := cli(t, context.Background(), f.vars(), "rollout", "list")
	want := `ID  CREATED               TARGET  VERSION  STATE                  DONE  REASON
r0  2026-01-02T12:00:00Z  (all)   2.0.0    halted                 1/1   halted after 1 failures
r1  2026-01-02T12:00:00Z  Prod    2.0.0    halted by an operator  1/2   -
`
	if code != 0 || stdout != want {
		t.Fatalf("list: got %d\n%s\nwant\n%s", code, stdout, want)
	}
	code, stdout, _ = cli(t, context.Background(), f.vars(), "rollout", "list", "--json")
	var vs []api.RolloutView
	if code != 0 || json.Unmarshal([]byte(stdout), &vs) != nil || len(vs) != 2 || !vs[1].Paused {
		t.Fatalf("list --json: got %d %q", code, stdout)
	}
	tests := []struct {
		args       []string
		code       int
		out, inErr string
	}{
		{[]string{"rollout", "halt", "r1"}, 0, "rollout r1 halted: no further batch starts until it is resumed; agents already upgrading finish\n", ""},
		{[]string{"rollout", "resume", "r1"}, 0, "rollout r1 resumed: its next batch starts once the one under way has finished\n", ""},
		{[]string{"rollout", "halt", "nope"}, 1, "", `halt rollout nope: no rollout "nope" (HTTP 404)`},
		{[]string{"rollout", "resume"}, 2, "", "want exactly one rollout id"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := cli(t, context.Background(), f.vars(), tt.args...)
			if code != tt.code || stdout != tt.out || !strings.Contains(stderr, tt.inErr) {
				t.Fatalf("got %d %q %q, want %d %q and stderr with %q", code, stdout, stderr, tt.code, tt.out, tt.inErr)
			}
		})
	}
	code, stdout, _ = cli(t, context.Background(), f.vars(), "rollout", "halt", "r1", "--json")
	var hv api.RolloutView
	if code != 0 || json.Unmarshal([]byte(stdout), &hv) != nil || !hv.Paused {
		t.Fatalf("halt --json: got %d %q", code, stdout)
	}
	if got := strings.Join(f.actions, ","); got != "halt r1,resume r1,halt nope,halt r1" {
		t.Fatalf("calls: got %s", got)
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestRolloutTargetNamed(t *testing.T) {
	byName := rolloutStep("running", "", ra("web-1", 1, "queued", "waiting for batch 1", 0))
	byName.Environment, byName.TargetAgents = "", []string{"web-1"}
	all := rolloutStep("running", "", ra("web-1", 1, "queued", "waiting for batch 1", 0))
	all.Environment, all.All = "", true
	tests := []struct {
		name       string
		v          api.RolloutView
		wantHeader string
		wantRow    string
	}{
		{"environment", rolloutStep("running", ""), "agent 2.0.0 to environment Prod,", "  Prod  "},
		{"all", all, "agent 2.0.0 to all environments,", "  (all)  "},
		{"named agents", byName, "agent 2.0.0 to agents web-1,", "  web-1  "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var show, list strings.Builder
			if err := writeRollout(&show, tt.v, rolloutT0); err != nil {
				t.Fatal(err)
			}
			if err := writeRollouts(&list, []api.RolloutView{tt.v}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(show.String(), tt.wantHeader) {
				t.Fatalf("rollout show: got\n%s\nwant %q in it", show.String(), tt.wantHeader)
			}
			if !strings.Contains(list.String(), tt.wantRow) {
				t.Fatalf("rollout list: got\n%s\nwant %q in it", list.String(), tt.wantRow)
			}
		})
	}
}

// TestAgentPackagePushChecksVersion: against a real coordinator, a binary
// stamped 1.1.0 pushed as 1.2.0 is refused with what to do instead, and
// nothing is stored; pushed as what it is, it is stored (issue 19).
func TestAgentPackagePushChecksVersion(t *testing.T) {
	dir, _ := startCoordinatorCmd(t)
	bin := writeTempFile(t, "tendril-agent", servertest.AgentBinary(t, "1.1.0", "linux", "amd64"))
	push := func(version string) (int, string, string) {
		return cli(t, context.Background(), nil, "agent-package", "push", "--data", dir,
			"--version", version, "--os", "linux", "--arch", "amd64", bin)
	}
	code, _, stderr := push("1.2.0")
	want := `the binary says it is 1.1.0 but --version is 1.2.0; push it with --version 1.1.0, or rebuild it with -ldflags "-X github.com/tendrildeploy/tendril/version.Version=1.2.0"`
	if code == 0 || !strings.Contains(stderr, want) {
		t.Fatalf("push as 1.2.0: got %d %q, want a refusal containing %q", code, stderr, want)
	}
	if code, stdout, _ := cli(t, context.Background(), nil, "agent-package", "list", "--data", dir); code != 0 || strings.Contains(stdout, "1.2.0") {
		t.Fatalf("list after the refusal: got %d %q, want 1.2.0 not stored", code, stdout)
	}
	if code, stdout, stderr := push("1.1.0"); code != 0 || !strings.HasPrefix(stdout, "stored agent 1.1.0 for linux/amd64") {
		t.Fatalf("push as 1.1.0: got %d %q %q, want it stored", code, stdout, stderr)
	}
}
