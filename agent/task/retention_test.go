package task

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/agent/internal/diskfree"
	"github.com/tendrildeploy/tendril/protocol"
)

// plantFinished makes the folder of a task that finished ago, as a Runner
// leaves it, with a package of size bytes in files/.
func plantFinished(t *testing.T, dir, ticket string, ago time.Duration, size int) {
	t.Helper()
	td := filepath.Join(dir, ticket)
	if err := os.MkdirAll(filepath.Join(td, filesDir), 0o700); err != nil {
		t.Fatal(err)
	}
	finished := time.Now().Add(-ago).UTC()
	if err := writeJSON(filepath.Join(td, infoFile), info{Ticket: ticket, Calamari: "1", StartedAt: finished.Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(td, logFile), []byte(`{"seq":1,"stream":"agent","text":"done"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(td, filesDir, "package.zip"), make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(filepath.Join(td, resultFile), result{State: protocol.TaskSucceeded, FinishedAt: finished}); err != nil {
		t.Fatal(err)
	}
}

// folders lists the entries of the work folder, sorted.
func folders(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
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

// waitState polls until the ticket's task is in state, or fails the test
// at the deadline.
func waitState(t *testing.T, r *Runner, ticket, state string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _, err := r.existing(ticket)
		if err == nil && got == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s: got state %q (%v), want %q", ticket, got, err, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCleanWork applies the keep rule to real task folders: which of them
// go and which stay.
func TestCleanWork(t *testing.T) {
	old := 2 * KeepGrace
	tests := []struct {
		name string
		rule protocol.WorkRetention
		// finished are the ages of finished tasks f0, f1, ...
		finished []time.Duration
		// setup makes other folders, and returns those that must stay.
		setup func(t *testing.T, r *Runner) []string
		// wantFinished are the finished tasks that stay.
		wantFinished []string
	}{
		{name: "keep the newest 3 of 5",
			rule:         protocol.WorkRetention{Keep: 3},
			finished:     []time.Duration{old + 1*time.Minute, old + 5*time.Minute, old + 2*time.Minute, old + 4*time.Minute, old + 3*time.Minute},
			wantFinished: []string{"f0", "f2", "f4"}},
		{name: "keep 0 removes every finished one past the grace",
			rule:         protocol.WorkRetention{Keep: 0},
			finished:     []time.Duration{old, old, KeepGrace / 2},
			wantFinished: []string{"f2"}},
		{name: "within the grace stays beyond keep",
			rule:         protocol.WorkRetention{Keep: 1},
			finished:     []time.Duration{time.Minute, 2 * time.Minute, KeepGrace - time.Minute},
			wantFinished: []string{"f0", "f1", "f2"}},
		{name: "the default keeps 50",
			rule:         DefaultRetention(),
			finished:     slices.Repeat([]time.Duration{old}, 3),
			wantFinished: []string{"f0", "f1", "f2"}},
		{name: "running task stays",
			rule:     protocol.WorkRetention{Keep: 0},
			finished: []time.Duration{old},
			setup: func(t *testing.T, r *Runner) []string {
				startTask(t, r, protocol.TaskStart{Ticket: "running", Isolation: protocol.IsolationNone, Args: []string{"-c", "sleep 1000"}})
				waitState(t, r, "running", protocol.TaskRunning)
				return []string{"running"}
			}},
		{name: "waiting task stays",
			rule:     protocol.WorkRetention{Keep: 0},
			finished: []time.Duration{old},
			setup: func(t *testing.T, r *Runner) []string {
				startTask(t, r, protocol.TaskStart{Ticket: "holder", Isolation: protocol.IsolationNone, Locks: []string{"db"}, Args: []string{"-c", "sleep 1000"}})
				if st := startTask(t, r, protocol.TaskStart{Ticket: "waiter", Isolation: protocol.IsolationNone, Locks: []string{"db"}, Args: []string{"-c", "true"}}); st.State != protocol.TaskQueued {
					t.Fatalf("waiter: got %s, want queued", st.State)
				}
				return []string{"holder", "waiter"}
			}},
		{name: "a task finishing, its result written but still in memory, stays",
			rule: protocol.WorkRetention{Keep: 0},
			setup: func(t *testing.T, r *Runner) []string {
				plantFinished(t, r.cfg.Dir, "finishing", old, 10)
				r.mu.Lock()
				r.tasks["finishing"] = newTask("finishing", r.taskDir("finishing"), "1")
				r.mu.Unlock()
				t.Cleanup(func() {
					r.mu.Lock()
					delete(r.tasks, "finishing")
					r.mu.Unlock()
				})
				return []string{"finishing"}
			}},
		{name: "a folder being pushed to stays",
			rule:     protocol.WorkRetention{Keep: 0},
			finished: []time.Duration{old},
			setup: func(t *testing.T, r *Runner) []string {
				content := []byte("half a package")
				sum := sha256.Sum256(content)
				p, err := r.BeginFilePush(context.Background(), protocol.FilePush{Ticket: "pushing", Name: "pkg.zip",
					File: protocol.Transfer{Size: int64(len(content)) * 2, SHA256: hex.EncodeToString(sum[:])}})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(p.Close)
				if err := os.WriteFile(p.partial, content, 0o600); err != nil {
					t.Fatal(err)
				}
				return []string{"pushing"}
			}},
		{name: "a task an agent restart could not finish stays",
			rule: protocol.WorkRetention{Keep: 0},
			setup: func(t *testing.T, r *Runner) []string {
				plantFinished(t, r.cfg.Dir, "unfinished", old, 10)
				if err := os.Remove(filepath.Join(r.cfg.Dir, "unfinished", resultFile)); err != nil {
					t.Fatal(err)
				}
				return []string{"unfinished"}
			}},
		{name: "other entries stay, leftovers of a removal go",
			rule: protocol.WorkRetention{Keep: 0},
			setup: func(t *testing.T, r *Runner) []string {
				if err := os.WriteFile(filepath.Join(r.cfg.Dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
					t.Fatal(err)
				}
				plantFinished(t, r.cfg.Dir, removingPrefix+"gone", old, 10)
				return []string{"notes.txt"}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRunner(t)
			for i, ago := range tt.finished {
				plantFinished(t, r.cfg.Dir, fmt.Sprintf("f%d", i), ago, 1000)
			}
			var others []string
			if tt.setup != nil {
				others = tt.setup(t, r)
			}
			if err := r.SetRetention(tt.rule); err != nil {
				t.Fatal(err)
			}
			rep, err := r.CleanWork(context.Background())
			if err != nil {
				t.Fatalf("CleanWork: %v", err)
			}
			want := slices.Sorted(slices.Values(append(slices.Clone(tt.wantFinished), others...)))
			if got := folders(t, r.cfg.Dir); !slices.Equal(got, want) {
				t.Fatalf("work folder: got %q, want %q", got, want)
			}
			if wantRemoved := len(tt.finished) - len(tt.wantFinished); rep.LastRemoved != wantRemoved || rep.RemovedTotal != int64(wantRemoved) {
				t.Errorf("report: got %d removed (%d in all), want %d", rep.LastRemoved, rep.RemovedTotal, wantRemoved)
			}
			tickets := 0
			for _, name := range want {
				if st, err := os.Stat(filepath.Join(r.cfg.Dir, name)); err == nil && st.IsDir() {
					tickets++
				}
			}
			if rep.Tasks != tickets || rep.Rule != tt.rule || rep.LastCleanup.IsZero() || rep.BelowFloor {
				t.Errorf("report: got %+v, want %d tasks, rule %+v, a cleanup time, not below the floor", rep, tickets, tt.rule)
			}
			if rep.Bytes <= 0 {
				t.Errorf("report: got %d bytes, want the folders' size", rep.Bytes)
			}
		})
	}
}

// TestCleanWorkMeasuresFinishedFoldersOnce checks that a cleanup measures
// only the finished folders that are new since the last: one runs after
// every task, and walking every folder kept each time grew with them. A
// finished folder does not change until retention removes it, so bytes
// added to one by hand are not seen; a folder removed by hand is.
func TestCleanWorkMeasuresFinishedFoldersOnce(t *testing.T) {
	r := newRunner(t)
	plantFinished(t, r.cfg.Dir, "f0", time.Minute, 1000)
	plantFinished(t, r.cfg.Dir, "f1", time.Minute, 2000)
	clean := func() protocol.WorkReport {
		t.Helper()
		rep, err := r.CleanWork(context.Background())
		if err != nil {
			t.Fatalf("CleanWork: %v", err)
		}
		return rep
	}
	first := clean()
	if first.Tasks != 2 || first.Bytes <= 3000 {
		t.Fatalf("first cleanup: got %d tasks and %d bytes, want 2 tasks and more than 3000 bytes", first.Tasks, first.Bytes)
	}
	f1 := treeSize(filepath.Join(r.cfg.Dir, "f1"))
	if err := os.WriteFile(filepath.Join(r.cfg.Dir, "f0", filesDir, "more"), make([]byte, 5000), 0o600); err != nil {
		t.Fatal(err)
	}
	plantFinished(t, r.cfg.Dir, "f2", time.Minute, 3000)
	f2 := treeSize(filepath.Join(r.cfg.Dir, "f2"))
	if got := clean(); got.Tasks != 3 || got.Bytes != first.Bytes+f2 {
		t.Fatalf("after f2 finished: got %d tasks and %d bytes, want 3 and %d (f0 and f1 as first measured, plus f2)", got.Tasks, got.Bytes, first.Bytes+f2)
	}
	if err := os.RemoveAll(filepath.Join(r.cfg.Dir, "f1")); err != nil {
		t.Fatal(err)
	}
	if got := clean(); got.Tasks != 2 || got.Bytes != first.Bytes+f2-f1 {
		t.Fatalf("after f1 was removed by hand: got %d tasks and %d bytes, want 2 and %d", got.Tasks, got.Bytes, first.Bytes+f2-f1)
	}
}

// TestCleanWorkFreeSpaceFloor fills a real, small tmpfs and checks that
// the oldest finished folders go, keep notwithstanding, until free space
// is back above the floor, and that folders finished within FloorGrace
// stay even then.
func TestCleanWorkFreeSpaceFloor(t *testing.T) {
	const (
		fsSize  = 8 << 20
		pkgSize = 1 << 20
		floor   = 4 << 20
	)
	tests := []struct {
		name string
		// finished are the ages of the finished tasks f0..f5.
		finished  []time.Duration
		wantGone  []string
		wantBelow bool
	}{
		{name: "oldest go until above the floor",
			finished: []time.Duration{1 * time.Hour, 6 * time.Hour, 2 * time.Hour, 5 * time.Hour, 3 * time.Hour, 4 * time.Hour},
			// f1 (6h), f3 (5h), f5 (4h) are the oldest; three packages
			// of 1MiB free what the floor asks of an 8MiB file system
			// holding six.
			wantGone: []string{"f1", "f3", "f5"}},
		{name: "folders within the grace stay below the floor",
			finished:  slices.Repeat([]time.Duration{FloorGrace / 4}, 6),
			wantBelow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := mountTmpfs(t, fsSize)
			r := newRunner(t)
			r.cfg.Dir = dir
			for i, ago := range tt.finished {
				plantFinished(t, dir, fmt.Sprintf("f%d", i), ago, pkgSize)
			}
			if free := diskfree.Free(dir); free < 0 || free >= floor {
				t.Fatalf("set-up: got %d bytes free, want fewer than %d", free, floor)
			}
			if err := r.SetRetention(protocol.WorkRetention{Keep: 100, MinFree: floor}); err != nil {
				t.Fatal(err)
			}
			rep, err := r.CleanWork(context.Background())
			if err != nil {
				t.Fatalf("CleanWork: %v", err)
			}
			var gone []string
			for i := range tt.finished {
				if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("f%d", i))); os.IsNotExist(err) {
					gone = append(gone, fmt.Sprintf("f%d", i))
				}
			}
			if !slices.Equal(gone, tt.wantGone) {
				t.Errorf("removed: got %q, want %q", gone, tt.wantGone)
			}
			free := diskfree.Free(dir)
			if rep.BelowFloor != tt.wantBelow || (free < floor) != tt.wantBelow {
				t.Errorf("got below the floor %v with %d bytes free, want %v (floor %d)", rep.BelowFloor, free, tt.wantBelow, floor)
			}
			if rep.LastRemoved != len(tt.wantGone) {
				t.Errorf("report: got %d removed, want %d", rep.LastRemoved, len(tt.wantGone))
			}
		})
	}
}

// mountTmpfs mounts a tmpfs of size bytes for the test, or skips it where
// mounting is not allowed.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs for the free-space floor (needs root on Linux): %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestRunRetention checks the cleanups RunRetention makes besides its
// interval: at once, after a task finishes and when the rule changes.
func TestRunRetention(t *testing.T) {
	r := newRunner(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.RunRetention(ctx, time.Hour) // the interval never comes
	}()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("gave up waiting for %s; work folder holds %q, report %+v", what, folders(t, r.cfg.Dir), r.WorkReport())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	gone := func(ticket string) func() bool {
		return func() bool {
			_, err := os.Stat(filepath.Join(r.cfg.Dir, ticket))
			return os.IsNotExist(err)
		}
	}
	waitFor("the first cleanup", func() bool { return !r.WorkReport().LastCleanup.IsZero() })

	// The rule's own cleanup runs before anything is planted, so that
	// only the task's can remove what is.
	before := r.WorkReport().LastCleanup
	if err := r.SetRetention(protocol.WorkRetention{Keep: 1}); err != nil {
		t.Fatal(err)
	}
	waitFor("the cleanup after the rule changed", func() bool { return r.WorkReport().LastCleanup.After(before) })
	plantFinished(t, r.cfg.Dir, "old-1", 3*KeepGrace, 10)
	plantFinished(t, r.cfg.Dir, "old-2", 2*KeepGrace, 10)
	// A task that finishes is the newest, so the keep of 1 leaves no
	// room for the two old ones... once the cleanup it asks for runs.
	startTask(t, r, protocol.TaskStart{Ticket: "new", Args: []string{"-c", "echo hi"}})
	waitFor("the cleanup after a task finished", func() bool { return gone("old-1")() && gone("old-2")() })
	if _, err := os.Stat(filepath.Join(r.cfg.Dir, "new")); err != nil {
		t.Fatalf("the task just finished: got %v, want its folder kept", err)
	}

	plantFinished(t, r.cfg.Dir, "old-3", 2*KeepGrace, 10)
	plantFinished(t, r.cfg.Dir, "old-4", 3*KeepGrace, 10)
	if err := r.SetRetention(protocol.WorkRetention{Keep: 2}); err != nil {
		t.Fatal(err)
	}
	// Keep 2: "new" and old-3 stay, old-4 goes. Renamed first and removed
	// after, so the folders are compared once the report says the cleanup
	// ended.
	waitFor("the report of 3 removed in all and 2 tasks", func() bool {
		rep := r.WorkReport()
		return rep.RemovedTotal == 3 && rep.Tasks == 2
	})
	if got, want := folders(t, r.cfg.Dir), []string{"new", "old-3"}; !slices.Equal(got, want) {
		t.Fatalf("work folder: got %q, want %q", got, want)
	}
}

func TestSetRetentionRefusesNegatives(t *testing.T) {
	r := newRunner(t)
	for _, rule := range []protocol.WorkRetention{{Keep: -1}, {Keep: 1, MinFree: -1}} {
		if err := r.SetRetention(rule); err == nil {
			t.Errorf("SetRetention(%+v): got nil, want an error", rule)
		}
	}
	if got, want := r.Retention(), DefaultRetention(); got != want {
		t.Errorf("after refused rules: got %+v, want the default %+v", got, want)
	}
}
