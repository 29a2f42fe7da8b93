package server

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

// taskLines returns a task's stored log.
func (ts *testServer) taskLines(t *testing.T, id string) []store.LogLine {
	t.Helper()
	lines, err := ts.store.TaskLogs(context.Background(), id, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

func (ts *testServer) waitFinished(t *testing.T, id string) api.TaskView {
	t.Helper()
	var task api.TaskView
	eventually(t, "task "+id+" finished", func() bool {
		task, _ = ts.Task(context.Background(), id)
		return task.Finished()
	})
	return task
}

// lineWith returns the first line of stream ("" for any) holding text.
func lineWith(lines []store.LogLine, stream, text string) (store.LogLine, bool) {
	for _, l := range lines {
		if (stream == "" || l.Stream == stream) && strings.Contains(l.Text, text) {
			return l, true
		}
	}
	return store.LogLine{}, false
}

func (ts *testServer) createTask(t *testing.T, req api.TaskRequest) api.TaskView {
	t.Helper()
	views, err := ts.CreateTasks(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return views[0]
}

// TestTasksIsolatedOnOneAgent starts two deployments at once on one
// machine: they run one after the other, and the second's log says what
// it waited for. A third, waiting too, is cancelled: it never runs, and
// the task it waited for is unaffected.
func TestTasksIsolatedOnOneAgent(t *testing.T) {
	ts := startServer(t, nil)
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	ts.upload(t, packBundle(t, "1.0.0", 0))
	ctx := context.Background()

	// The first holds the agent until the test lets it go.
	release := filepath.Join(t.TempDir(), "release")
	first := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline",
		"while [ ! -e '" + release + "' ]; do sleep 0.05; done; echo first done"}})
	second := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", "echo second ran"}})
	third := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", "echo third must not run"}})
	if first.Isolation != api.IsolationFull || second.Isolation != api.IsolationFull || len(second.Locks) != 0 {
		t.Fatalf("views: got isolation %q and %q, locks %v; want full (the default)", first.Isolation, second.Isolation, second.Locks)
	}
	wait := "waiting for task " + first.ID + " (run-script --inline while [ ! -e"
	for _, id := range []string{second.ID, third.ID} {
		eventually(t, "task "+id+" says it waits for the first", func() bool {
			_, ok := lineWith(ts.taskLines(t, id), "agent", wait)
			return ok
		})
		if v, _ := ts.Task(ctx, id); v.State != api.TaskQueued || v.StartedAt != nil || !strings.HasPrefix(v.WaitingFor, wait) {
			t.Fatalf("a waiting task: got state %s, started %v, waiting for %q; want queued, not started, waiting for the first", v.State, v.StartedAt, v.WaitingFor)
		}
	}
	if v, _ := ts.Task(ctx, first.ID); v.State != api.TaskRunning {
		t.Fatalf("first: got %s, want running", v.State)
	}

	if _, err := ts.CancelTask(ctx, third.ID); err != nil {
		t.Fatal(err)
	}
	if v := ts.waitFinished(t, third.ID); v.State != api.TaskCancelled {
		t.Fatalf("third: got %s, want cancelled", v.State)
	}
	if _, ran := lineWith(ts.taskLines(t, third.ID), "agent", "running calamari"); ran {
		t.Fatalf("the cancelled waiting task ran:\n%s", logText(ts.taskLines(t, third.ID)))
	}
	if v, _ := ts.Task(ctx, first.ID); v.State != api.TaskRunning {
		t.Fatalf("first after the waiter's cancellation: got %s, want still running", v.State)
	}

	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	v1, v2 := ts.waitFinished(t, first.ID), ts.waitFinished(t, second.ID)
	l1, l2 := ts.taskLines(t, first.ID), ts.taskLines(t, second.ID)
	if v1.State != api.TaskSucceeded || v2.State != api.TaskSucceeded {
		t.Fatalf("got %s and %s, want both succeeded\n%s\n%s", v1.State, v2.State, logText(l1), logText(l2))
	}
	done, ok1 := lineWith(l1, "stdout", "first done")
	ran, ok2 := lineWith(l2, "agent", "running calamari")
	if !ok1 || !ok2 || ran.Time.Before(done.Time) {
		t.Fatalf("the second ran at %v, before the first finished at %v\n%s\n%s", ran.Time, done.Time, logText(l1), logText(l2))
	}
	if v2.StartedAt == nil {
		t.Errorf("second: no start time once it ran")
	}
}

// TestTasksWithoutIsolationRunTogether: isolation none, different locks,
// run at once; a shared lock does not.
func TestTasksWithoutIsolationRunTogether(t *testing.T) {
	ts := startServer(t, nil)
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	ts.upload(t, packBundle(t, "1.0.0", 0))

	release := filepath.Join(t.TempDir(), "release")
	holder := ts.createTask(t, api.TaskRequest{Agent: "web-1", Isolation: api.IsolationNone, Locks: []string{"db", "db"},
		Args: []string{"run-script", "--inline", "while [ ! -e '" + release + "' ]; do sleep 0.05; done"}})
	if holder.Isolation != api.IsolationNone || !slices.Equal(holder.Locks, []string{"db"}) {
		t.Fatalf("view: got %q %v, want none [db]", holder.Isolation, holder.Locks)
	}
	beside := ts.createTask(t, api.TaskRequest{Agent: "web-1", Isolation: api.IsolationNone, Locks: []string{"web"},
		Args: []string{"run-script", "--inline", "echo beside"}})
	if v := ts.waitFinished(t, beside.ID); v.State != api.TaskSucceeded {
		t.Fatalf("beside: got %s\n%s", v.State, logText(ts.taskLines(t, beside.ID)))
	}
	same := ts.createTask(t, api.TaskRequest{Agent: "web-1", Isolation: api.IsolationNone, Locks: []string{"db"},
		Args: []string{"run-script", "--inline", "echo after"}})
	eventually(t, "the task sharing the lock waits", func() bool {
		_, ok := lineWith(ts.taskLines(t, same.ID), "agent", "waiting for task "+holder.ID)
		return ok
	})
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if v := ts.waitFinished(t, same.ID); v.State != api.TaskSucceeded {
		t.Fatalf("same lock: got %s", v.State)
	}
	stored, err := ts.store.Task(context.Background(), same.ID)
	if err != nil || stored.Isolation != api.IsolationNone || !slices.Equal(stored.Locks, []string{"db"}) {
		t.Fatalf("stored: got %q %v, %v", stored.Isolation, stored.Locks, err)
	}
}

func TestStartQueues(t *testing.T) {
	var sq startQueues
	ready := func(tn *startTurn) bool {
		select {
		case <-tn.ready:
			return true
		default:
			return false
		}
	}
	a1, a2, a3 := sq.join("a"), sq.join("a"), sq.join("a")
	b1 := sq.join("b")
	if got := []bool{ready(a1), ready(a2), ready(a3), ready(b1)}; !slices.Equal(got, []bool{true, false, false, true}) {
		t.Fatalf("after joining: got ready %v, want only the first of each agent", got)
	}
	sq.leave("a", a2) // from the middle: the head keeps its turn
	if ready(a3) {
		t.Fatal("a3 ready while a1 holds the turn")
	}
	sq.leave("a", a1)
	sq.leave("a", a1) // idempotent
	if !ready(a3) {
		t.Fatal("a3 not ready after a1 left")
	}
	sq.leave("a", a3)
	sq.leave("b", b1)
	if len(sq.q) != 0 {
		t.Fatalf("got %d queues left, want none", len(sq.q))
	}
}

func TestWaitingLine(t *testing.T) {
	tests := []struct {
		name  string
		lines []store.LogLine
		want  string
	}{
		{"none", nil, ""},
		{"the latest wait", []store.LogLine{
			{Stream: "agent", Text: "waiting for task a (run-script) to finish"},
			{Stream: "coordinator", Text: "waiting for nothing in particular"},
			{Stream: "agent", Text: "waiting for task b (deploy-package web) to finish"},
		}, "waiting for task b (deploy-package web) to finish"},
		{"the task's own output does not count", []store.LogLine{{Stream: "stdout", Text: "waiting for godot"}}, ""},
	}
	for _, tt := range tests {
		if got := waitingLine(tt.lines); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}
