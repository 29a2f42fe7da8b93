package task

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/protocol"
)

func startTask(t *testing.T, r *Runner, req protocol.TaskStart) protocol.TaskStarted {
	t.Helper()
	if req.Calamari == "" {
		req.Calamari = "1"
	}
	st, err := r.Start(context.Background(), req)
	if err != nil {
		t.Fatalf("start %s: %v", req.Ticket, err)
	}
	return st
}

func followAll(t *testing.T, r *Runner, ticket string) ([]protocol.LogEntry, protocol.TaskEnd) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	entries, end, err := collect(ctx, r, ticket, 1)
	if err != nil {
		t.Fatalf("follow %s: %v", ticket, err)
	}
	return entries, end
}

func entryWith(entries []protocol.LogEntry, text string) (protocol.LogEntry, bool) {
	for _, e := range entries {
		if strings.Contains(e.Text, text) {
			return e, true
		}
	}
	return protocol.LogEntry{}, false
}

// TestIsolationSerialises runs two tasks that may not run at once and
// checks that the second waited, said for what, and ran after the first.
func TestIsolationSerialises(t *testing.T) {
	tests := []struct {
		name         string
		first, other protocol.TaskStart
	}{
		{"full isolation (the default)",
			protocol.TaskStart{Name: "deploy-package web"},
			protocol.TaskStart{}},
		{"full after none",
			protocol.TaskStart{Isolation: protocol.IsolationNone, Name: "deploy-package web"},
			protocol.TaskStart{Isolation: protocol.IsolationFull}},
		{"a shared lock",
			protocol.TaskStart{Isolation: protocol.IsolationNone, Locks: []string{"db", "cache"}, Name: "deploy-package web"},
			protocol.TaskStart{Isolation: protocol.IsolationNone, Locks: []string{"db"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRunner(t)
			first, second := tt.first, tt.other
			first.Ticket, first.Args = "first", []string{"-c", "sleep 0.3; echo first done"}
			second.Ticket, second.Args = "second", []string{"-c", "echo second ran"}
			if st := startTask(t, r, first); st.State != protocol.TaskRunning {
				t.Fatalf("first: got %+v, want running", st)
			}
			if st := startTask(t, r, second); st.State != protocol.TaskQueued {
				t.Fatalf("second: got %+v, want queued", st)
			}
			if got := r.Running(); got != 2 {
				t.Errorf("running: got %d, want 2 (a waiting task counts, so an upgrade waits for it)", got)
			}
			e1, end1 := followAll(t, r, "first")
			e2, end2 := followAll(t, r, "second")
			if end1.State != protocol.TaskSucceeded || end2.State != protocol.TaskSucceeded {
				t.Fatalf("ends: got %+v and %+v, want both succeeded", end1, end2)
			}
			if len(e2) == 0 || e2[0].Stream != streamAgent || e2[0].Text != "waiting for task first (deploy-package web) to finish" {
				t.Errorf("second's first log line: got %+v, want the wait", e2)
			}
			ran, ok := entryWith(e2, "running calamari")
			done, ok1 := entryWith(e1, "first done")
			if !ok || !ok1 || ran.Time.Before(done.Time) {
				t.Errorf("second started at %v, before the first finished (%v)", ran.Time, done.Time)
			}
		})
	}
}

// TestIsolationConcurrent runs tasks that may run at once: both start at
// once, neither waits.
func TestIsolationConcurrent(t *testing.T) {
	tests := []struct {
		name         string
		first, other protocol.TaskStart
	}{
		{"isolation none", protocol.TaskStart{Isolation: protocol.IsolationNone}, protocol.TaskStart{Isolation: protocol.IsolationNone}},
		{"different locks", protocol.TaskStart{Isolation: protocol.IsolationNone, Locks: []string{"db"}}, protocol.TaskStart{Isolation: protocol.IsolationNone, Locks: []string{"web"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRunner(t)
			first, second := tt.first, tt.other
			first.Ticket, first.Args = "first", []string{"-c", "sleep 1000"}
			second.Ticket, second.Args = "second", []string{"-c", "sleep 1000"}
			for _, req := range []protocol.TaskStart{first, second} {
				if st := startTask(t, r, req); st.State != protocol.TaskRunning {
					t.Fatalf("%s: got %+v, want running", req.Ticket, st)
				}
			}
			// newRunner's cleanup cancels both.
		})
	}
}

func TestCancelWhileWaiting(t *testing.T) {
	r := newRunner(t)
	startTask(t, r, protocol.TaskStart{Ticket: "holder", Isolation: protocol.IsolationNone, Locks: []string{"db"}, Args: []string{"-c", "sleep 1000"}})
	if st := startTask(t, r, protocol.TaskStart{Ticket: "waiter", Isolation: protocol.IsolationNone, Locks: []string{"db"}, Args: []string{"-c", "echo must not run"}}); st.State != protocol.TaskQueued {
		t.Fatalf("waiter: got %+v, want queued", st)
	}
	// A third task for the same lock queues behind the waiter, waiting
	// for the holder; the waiter's cancellation does not let it run.
	startTask(t, r, protocol.TaskStart{Ticket: "third", Isolation: protocol.IsolationNone, Locks: []string{"db"}, Args: []string{"-c", "echo third"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Cancel(ctx, "waiter"); err != nil {
		t.Fatal(err)
	}
	entries, end := followAll(t, r, "waiter")
	if end.State != protocol.TaskCancelled || !strings.Contains(end.Error, "never ran") {
		t.Errorf("waiter's end: got %+v, want cancelled, never ran", end)
	}
	if _, ran := entryWith(entries, "running calamari"); ran {
		t.Errorf("the cancelled waiter ran: %+v", entries)
	}
	if st, _, _ := r.existing("holder"); st != protocol.TaskRunning {
		t.Errorf("holder: got %s, want still running", st)
	}
	if st, _, _ := r.existing("third"); st != protocol.TaskQueued {
		t.Errorf("third: got %s, want still queued behind the holder", st)
	}
	if err := r.Cancel(ctx, "holder"); err != nil {
		t.Fatal(err)
	}
	if _, end := followAll(t, r, "holder"); end.State != protocol.TaskCancelled {
		t.Errorf("holder's end: got %+v", end)
	}
	entries, end = followAll(t, r, "third")
	if end.State != protocol.TaskSucceeded {
		t.Errorf("third's end: got %+v, want it to run once the holder ended", end)
	}
	var waits []string
	for _, e := range entries {
		if strings.HasPrefix(e.Text, "waiting for") {
			waits = append(waits, e.Text)
		}
	}
	if len(waits) != 1 || waits[0] != "waiting for task holder to finish" {
		t.Errorf("third's wait lines: got %q, want one, for the holder", waits)
	}
}

func TestCloseCancelsWaitingTasks(t *testing.T) {
	r := newRunner(t)
	startTask(t, r, protocol.TaskStart{Ticket: "holder", Args: []string{"-c", "sleep 1000"}})
	startTask(t, r, protocol.TaskStart{Ticket: "waiter", Args: []string{"-c", "echo must not run"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ticket := range []string{"holder", "waiter"} {
		if res, err := readResult(r.taskDir(ticket)); err != nil || res.State != protocol.TaskCancelled {
			t.Errorf("%s: got %+v, %v; want cancelled", ticket, res, err)
		}
	}
}

func TestFullIsolationIsNotStarved(t *testing.T) {
	var lt lockTable
	a := &claim{ticket: "a"}
	full := &claim{ticket: "full", full: true}
	b := &claim{ticket: "b"}
	if lt.tryLock(a) != nil {
		t.Fatal("a: want granted")
	}
	if got := lt.tryLock(full); got != a {
		t.Fatalf("full: got blocker %v, want a", got)
	}
	// b alone could share the agent with a, but the full-isolation task
	// came first.
	if got := lt.tryLock(b); got != full {
		t.Fatalf("b: got blocker %v, want full", got)
	}
	lt.unlock(a)
	if !full.granted || b.granted {
		t.Fatalf("after a: full granted %v, b granted %v; want true, false", full.granted, b.granted)
	}
	lt.unlock(full)
	if !b.granted {
		t.Fatal("after full: b not granted")
	}
}

func TestStartRefusesBadIsolation(t *testing.T) {
	r := newRunner(t)
	for _, req := range []protocol.TaskStart{
		{Ticket: "x", Calamari: "1", Isolation: "partial"},
		{Ticket: "y", Calamari: "1", Locks: []string{""}},
	} {
		if _, err := r.Start(context.Background(), req); !errors.Is(err, ErrInvalidIsolation) || !IsBadRequest(err) {
			t.Errorf("%+v: got %v, want ErrInvalidIsolation", req, err)
		}
	}
}
