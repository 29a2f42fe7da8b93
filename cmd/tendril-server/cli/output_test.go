package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
)

func TestWriteAgentsTable(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	agents := []api.AgentView{
		{Name: "web01", Environment: "Production", Version: "1.4.0", Connected: true, Health: "healthy",
			TLSVersion: "1.3", CalamariVersion: "29.0.0", CalamariCurrent: true, Upgrade: "none",
			LastSeen: now.Format(time.RFC3339)},
		{Name: "legacy-db", Environment: "Production", Version: "1.2.0", Connected: true, Health: "warning",
			TLSVersion: "1.0", CalamariVersion: "28.1.0", CalamariCurrent: false, Upgrade: "recommended",
			LastSeen:     now.Format(time.RFC3339),
			HealthDetail: "connected with TLS 1.0, which is deprecated; enable TLS 1.2 on the agent's host"},
		{Name: "old", Environment: "Test", Version: "0.9.0", Health: "unavailable", HealthDetail: "not connected",
			TLSVersion: "1.2", CalamariCurrent: true, Upgrade: "required",
			LastSeen: now.Add(-90 * time.Minute).Format(time.RFC3339)},
		{Name: "fresh", Environment: "Test", Health: "unavailable", CalamariCurrent: true, Upgrade: "none"},
		{Name: "dmz-1", Environment: "Test", Mode: "listening", Address: "10.0.0.5:10933", Health: "unavailable",
			HealthDetail: "not connected: dial tcp 10.0.0.5:10933: connect: connection refused", CalamariCurrent: true, Upgrade: "none",
			DialError: "dial tcp 10.0.0.5:10933: connect: connection refused"},
		// Its coordinator node was killed, and is dead: so is its session.
		{Name: "orphan", Environment: "Test", Mode: "polling", Version: "1.4.0", Health: "unavailable", NodeState: "dead",
			HealthDetail: "not connected: coordinator node b, which held its session, stopped beating 20s ago", CalamariCurrent: true, Upgrade: "none",
			LastSeen: now.Add(-30 * time.Second).Format(time.RFC3339)},
		// Its node missed a heartbeat: still counted, with a warning.
		{Name: "adrift", Environment: "Test", Mode: "polling", Version: "1.4.0", Connected: true, Health: "warning", NodeState: "late", Node: "b",
			HealthDetail: "coordinator node b, which holds its session, last beat 11s ago (it beats every 5s): it may be down", CalamariCurrent: true, Upgrade: "none"},
	}
	for i := range agents[:4] {
		agents[i].Mode = "polling"
	}
	agents[3].Mode = "" // a coordinator from before listening agents
	var b strings.Builder
	if err := writeAgents(&b, agents, now); err != nil {
		t.Fatal(err)
	}
	want := `NAME       ENVIRONMENT  MODE       VERSION  CONNECTED  HEALTH       TLS  CALAMARI              UPGRADE      LAST SEEN
web01      Production   polling    1.4.0    yes        healthy      1.3  29.0.0                -            now
legacy-db  Production   polling    1.2.0    yes        warning      1.0  28.1.0 (out of date)  recommended  now
old        Test         polling    0.9.0    no         unavailable  1.2  -                     required     1h ago
fresh      Test         -          -        no         unavailable  -    -                     -            never
dmz-1      Test         listening  -        no         unavailable  -    -                     -            never
orphan     Test         polling    1.4.0    no         unavailable  -    -                     -            30s ago
adrift     Test         polling    1.4.0    yes        warning      -    -                     -            now

legacy-db (warning): connected with TLS 1.0, which is deprecated; enable TLS 1.2 on the agent's host
dmz-1 (listening at 10.0.0.5:10933): the coordinator cannot connect: dial tcp 10.0.0.5:10933: connect: connection refused
orphan (unavailable): not connected: coordinator node b, which held its session, stopped beating 20s ago
adrift (warning): coordinator node b, which holds its session, last beat 11s ago (it beats every 5s): it may be down
`
	if b.String() != want {
		t.Fatalf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteAgentsEmpty(t *testing.T) {
	var b strings.Builder
	if err := writeAgents(&b, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "No agents yet.") || strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("got %q", b.String())
	}
}

func TestLastSeen(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) api.AgentView {
		return api.AgentView{LastSeen: now.Add(-d).Format(time.RFC3339)}
	}
	for _, tc := range []struct {
		a    api.AgentView
		want string
	}{
		{api.AgentView{Connected: true, LastSeen: "2000-01-01T00:00:00Z"}, "now"},
		{api.AgentView{}, "never"},
		{api.AgentView{LastSeen: "yesterday"}, "yesterday"},
		{ago(-5 * time.Second), "0s ago"}, // clock skew: never "in the future"
		{ago(42 * time.Second), "42s ago"},
		{ago(5 * time.Minute), "5m ago"},
		{ago(47 * time.Hour), "47h ago"},
		{ago(72 * time.Hour), "3d ago"},
	} {
		if got := lastSeen(tc.a, now); got != tc.want {
			t.Errorf("lastSeen(%q) = %q, want %q", tc.a.LastSeen, got, tc.want)
		}
	}
}

func TestWriteRotation(t *testing.T) {
	r := api.RotationResult{Thumbprint: "new", Previous: "old", Notified: 2, Failed: []string{"a", "b"}}
	var b strings.Builder
	if err := writeRotation(&b, r, true); err != nil {
		t.Fatal(err)
	}
	want := `Coordinator certificate rotated.
Thumbprint: new
Previous:   old (still served to agents that have not learned the new one)
Connected agents told: 2. Not reached: a, b. Agents not reached learn the new thumbprint when they reconnect.
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	writeRotation(&b, api.RotationResult{Thumbprint: "new", Previous: "old"}, false)
	if !strings.Contains(b.String(), "old (retired: every agent trusts the new one)") {
		t.Fatalf("got:\n%s", b.String())
	}
}

func TestErrorLine(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("list agents: %w", &client.Error{Status: 401, Message: "the API key is not valid"}),
			"tendril-server: list agents: the API key is not valid (HTTP 401)"},
		{fmt.Errorf("get agent %q: %w", "x", &client.Error{Status: 404, Message: `no agent named "x"`}),
			`tendril-server: get agent "x": no agent named "x" (HTTP 404)`},
		{&client.Error{Status: 502}, "tendril-server: bad gateway (HTTP 502)"},
		{errors.New("first line\nsecond  line\n"), "tendril-server: first line; second line;"},
		{&usageError{err: errors.New("--environment is required"), cmd: "tendril-server token create"},
			`tendril-server: --environment is required (see "tendril-server token create --help")`},
	} {
		if got := errorLine(tc.err); got != tc.want {
			t.Errorf("errorLine(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestWriteTasksTable(t *testing.T) {
	at := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	ts := []api.TaskView{
		{ID: "6f1c0a52-0000-4000-8000-000000000001", Agent: "web01", State: "running", Calamari: "1.2.3", CreatedAt: at,
			Args: []string{"run-script", "--inline", "echo hello"}},
		{ID: "6f1c0a52-0000-4000-8000-000000000002", Agent: "db-1", State: "failed", ExitCode: 3, Calamari: "1.2.3",
			CreatedAt: at.Add(-time.Minute), FinishedAt: &at,
			Args: []string{"run-script", "--inline", strings.Repeat("x", 80)}},
		{ID: "6f1c0a52-0000-4000-8000-000000000003", Agent: "db-1", State: "failed", ExitCode: -1,
			CreatedAt: at.Add(-time.Hour), FinishedAt: &at, Args: []string{"deploy"}},
	}
	var b strings.Builder
	if err := writeTasks(&b, ts); err != nil {
		t.Fatal(err)
	}
	want := `ID                                    AGENT  STATE    EXIT  CALAMARI  CREATED               ARGS
6f1c0a52-0000-4000-8000-000000000001  web01  running  -     1.2.3     2026-01-02T12:00:00Z  run-script --inline 'echo hello'
6f1c0a52-0000-4000-8000-000000000002  db-1   failed   3     1.2.3     2026-01-02T11:59:00Z  run-script --inline xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...
6f1c0a52-0000-4000-8000-000000000003  db-1   failed   -1    -         2026-01-02T11:00:00Z  deploy
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	writeTasks(&b, nil)
	if !strings.HasPrefix(b.String(), "No tasks yet.") {
		t.Fatalf("empty: got %q", b.String())
	}
}

func TestWriteTaskHeaderRunning(t *testing.T) {
	at := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	var b strings.Builder
	writeTaskHeader(&b, api.TaskView{ID: "t1", Agent: "web01", State: "queued", Args: []string{"run-script"}, CreatedAt: at})
	want := `Task:      t1
Agent:     web01
State:     queued
Calamari:  -
Args:      run-script
Created:   2026-01-02T12:00:00Z
Started:   -
Finished:  -
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	writeTaskHeader(&b, api.TaskView{ID: "t1", State: "failed", ExitCode: -1, Error: "task refused: no such version", CreatedAt: at})
	if !strings.Contains(b.String(), "State:     failed\nError:     task refused: no such version\n") {
		t.Fatalf("refused task: got:\n%s", b.String())
	}
}

// TestWriteTaskHeaderHeldAndLost shows what holds an unfinished task up,
// and the warning of a finished one that lost output, which keeps its
// state.
func TestWriteTaskHeaderHeldAndLost(t *testing.T) {
	at := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		task api.TaskView
		want []string
		not  []string
	}{
		{"held up while running",
			api.TaskView{ID: "t1", State: "running", StateReason: "the coordinator cannot store the task's log (no space left on device)", CreatedAt: at},
			[]string{"State:     running\nHeld up:   the coordinator cannot store the task's log (no space left on device)\n"}, nil},
		{"a reason is not shown once final",
			api.TaskView{ID: "t1", State: "succeeded", StateReason: "stale", CreatedAt: at},
			nil, []string{"Held up:"}},
		{"lost output",
			api.TaskView{ID: "t1", State: "succeeded", LostLines: 239117, LostReason: "the agent could not write them to its disk: no space left on device", CreatedAt: at},
			[]string{"State:     succeeded (exit code 0)\n", "Warning:   239117 lines of output lost: the agent could not write them to its disk: no space left on device\n"}, nil},
		{"one line lost",
			api.TaskView{ID: "t1", State: "failed", ExitCode: 2, LostLines: 1, CreatedAt: at},
			[]string{"Warning:   1 line of output lost\n"}, nil},
		{"nothing lost", api.TaskView{ID: "t1", State: "succeeded", CreatedAt: at}, nil, []string{"Warning:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			writeTaskHeader(&b, tt.task)
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("got:\n%s\nwant it to hold %q", b.String(), w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(b.String(), n) {
					t.Errorf("got:\n%s\nwant no %q", b.String(), n)
				}
			}
		})
	}
}

func TestTaskOutcome(t *testing.T) {
	for _, tc := range []struct {
		t    api.TaskView
		want string
	}{
		{api.TaskView{State: "succeeded"}, "succeeded (exit code 0)"},
		{api.TaskView{State: "failed", ExitCode: 2}, "failed (exit code 2)"},
		{api.TaskView{State: "failed", ExitCode: 2, Error: "exited with code 2"}, "failed (exit code 2)"},
		{api.TaskView{State: "failed", ExitCode: -1, Error: "agent deleted"}, "failed: agent deleted"},
		{api.TaskView{State: "cancelled", ExitCode: -1, Error: "cancelled"}, "cancelled"},
	} {
		if got := taskOutcome(tc.t); got != tc.want {
			t.Errorf("taskOutcome(%+v): got %q, want %q", tc.t, got, tc.want)
		}
	}
}

func TestWriteUpdateResultsEmpty(t *testing.T) {
	var b strings.Builder
	writeUpdateResults(&b, nil)
	if b.String() != "No agents to update.\n" {
		t.Fatalf("got %q", b.String())
	}
}

func TestFormatLogLine(t *testing.T) {
	for _, tc := range []struct {
		prefix, text, want string
	}{
		{"", "hello", "hello\n"},
		{"", "", "\n"},
		{"", "two\nlines", "two\nlines\n"},
		{"web01: ", "hello", "web01: hello\n"},
		{"web01: ", "", "web01: \n"},
		{"web01: ", "two\nlines", "web01: two\nweb01: lines\n"},
	} {
		if got := formatLogLine(tc.prefix, tc.text); got != tc.want {
			t.Errorf("formatLogLine(%q, %q): got %q, want %q", tc.prefix, tc.text, got, tc.want)
		}
	}
}

func TestStateText(t *testing.T) {
	tests := []struct {
		task api.TaskView
		want string
	}{
		{api.TaskView{State: "succeeded"}, "succeeded (exit code 0)"},
		{api.TaskView{State: "failed", ExitCode: 3}, "failed (exit code 3)"},
		{api.TaskView{State: "failed", ExitCode: -1}, "failed"},
		{api.TaskView{State: "queued"}, "queued"},
		{api.TaskView{State: "queued", WaitingFor: "waiting for task t1 (run-script) to finish"}, "queued (waiting for task t1 (run-script) to finish)"},
	}
	for _, tt := range tests {
		if got := stateText(tt.task); got != tt.want {
			t.Errorf("stateText(%+v): got %q, want %q", tt.task, got, tt.want)
		}
	}
}

// TestRunOutcomeWarnsOfLostOutput: task run says a task lost output, and
// still exits 0 for one that succeeded.
func TestRunOutcomeWarnsOfLostOutput(t *testing.T) {
	tk := api.TaskView{ID: "t1", Agent: "web01", State: "succeeded", LostLines: 12, LostReason: "the agent could not write them to its disk: no space left on device"}
	var notes strings.Builder
	err := runOutcome(context.Background(), []api.TaskView{tk}, []followResult{{end: tk}}, &notes)
	if err != nil {
		t.Fatalf("got %v, want success: the task succeeded", err)
	}
	want := "warning: task t1 on web01: 12 lines of output lost: the agent could not write them to its disk: no space left on device\n"
	if notes.String() != want {
		t.Fatalf("notes: got %q, want %q", notes.String(), want)
	}
}
