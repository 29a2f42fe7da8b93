package task

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/internal/tmpfstest"
	"github.com/tendrildeploy/tendril/protocol"
)

// waitLogHolds waits until the task's log file holds an entry with text.
func waitLogHolds(t *testing.T, dir, text string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if f, err := os.ReadFile(filepath.Join(dir, logFile)); err == nil && strings.Contains(string(f), text) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the log of %s never held %q", dir, text)
}

// lostNotes adds up what the agent's "lines of output were lost" entries
// say.
func lostNotes(t *testing.T, entries []protocol.LogEntry) (notes int, lines int64) {
	t.Helper()
	for _, e := range entries {
		if e.Stream != streamAgent || !strings.Contains(e.Text, "lines of output were lost here") {
			continue
		}
		var n int64
		if _, err := fmt.Sscanf(e.Text, "%d lines", &n); err != nil {
			t.Fatalf("entry %q: %v", e.Text, err)
		}
		notes++
		lines += n
	}
	return notes, lines
}

// TestTaskOutputOnFullDisk runs tasks that print far more than the
// agent's disk takes. The end of their output arrives whole, the lines
// lost are counted, said in the log where they were lost and reported in
// TaskEnd with the reason, and the task keeps its real state. What the
// disk did not take is served from memory, and written down once the
// disk has room again.
func TestTaskOutputOnFullDisk(t *testing.T) {
	const printed = 20000
	tests := []struct {
		name string
		// freeWhileRunning frees the disk before the task's second half.
		freeWhileRunning bool
	}{
		{name: "disk full until the task ends"},
		{name: "disk freed while the task runs", freeWhileRunning: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Filled whatever its size; once freed, it must take the rest
			// of the output (20,000 lines of about 120 bytes in the log),
			// or the end meets a full disk again and is kept in memory.
			mnt := tmpfstest.Mount(t, 8<<20)
			r := newRunnerIn(t, filepath.Join(mnt, "Work"))
			gates := t.TempDir()
			script := fmt.Sprintf(`echo first
while [ ! -e %[1]s/one ]; do sleep 0.02; done
seq -f 'line %%g of the first half, padded to take room on the disk' 1 %[2]d
while [ ! -e %[1]s/two ]; do sleep 0.02; done
seq -f 'line %%g of the second half, padded to take room on the disk' 1 %[2]d
printf 'the last line, without a newline'`, gates, printed/2)
			if st, err := r.Start(context.Background(), protocol.TaskStart{Ticket: "big", Calamari: "1", Args: []string{"-c", script}}); err != nil || st.State != protocol.TaskRunning {
				t.Fatalf("start: got %+v, %v", st, err)
			}
			dir := r.taskDir("big")
			waitLogHolds(t, dir, `"first"`)
			free := tmpfstest.Fill(t, mnt)
			os.WriteFile(filepath.Join(gates, "one"), nil, 0o600)
			if tt.freeWhileRunning {
				// The first half met a full disk; let some of it be lost
				// before freeing (the second gate holds the task).
				waitTail(t, r, "big")
				free()
			}
			os.WriteFile(filepath.Join(gates, "two"), nil, 0o600)

			entries, end, err := collect(context.Background(), r, "big", 1)
			if err != nil {
				t.Fatal(err)
			}
			if end.State != protocol.TaskSucceeded || end.ExitCode != 0 {
				t.Fatalf("got %s exit %d (%s), want succeeded: losing output is not failing", end.State, end.ExitCode, end.Error)
			}
			if end.LostLines <= 0 || end.LostLines >= printed || !strings.Contains(end.LostReason, "no space left on device") {
				t.Fatalf("got %d lines lost (%q), want some of %d, for no space left on device", end.LostLines, end.LostReason, printed)
			}
			if end.FinishedAt.IsZero() {
				t.Error("TaskEnd has no FinishedAt")
			}
			checkEntries(t, entries, end, printed)
			if _, said := lostNotes(t, entries); said != end.LostLines {
				t.Errorf("the log says %d lines were lost, TaskEnd %d", said, end.LostLines)
			}

			// With the disk freed while it ran, its log took everything
			// before the end; else the end is served from memory while
			// the disk is full, and written down once it has room.
			r.mu.Lock()
			_, inMemory := r.kept["big"]
			r.mu.Unlock()
			if inMemory == tt.freeWhileRunning {
				t.Fatalf("task kept in memory: got %v, want %v", inMemory, !tt.freeWhileRunning)
			}
			free()
			if _, err := r.CleanWork(context.Background()); err != nil {
				t.Fatal(err)
			}
			r.mu.Lock()
			kept := len(r.kept)
			r.mu.Unlock()
			if kept != 0 {
				t.Fatalf("%d tasks still kept in memory after the disk has room again", kept)
			}
			onDisk := readLog(t, dir)
			if len(onDisk) != len(entries) || onDisk[len(onDisk)-1] != entries[len(entries)-1] {
				t.Fatalf("the log on disk has %d entries, the follow had %d", len(onDisk), len(entries))
			}
			res, err := readResult(dir)
			if err != nil || res.State != protocol.TaskSucceeded || res.LostLines != end.LostLines || res.LostReason != end.LostReason {
				t.Fatalf("result.json: got %+v, %v; want succeeded with %d lines lost", res, err, end.LostLines)
			}
			again, end2, err := collect(context.Background(), r, "big", 1)
			if err != nil || len(again) != len(entries) || end2.LostLines != end.LostLines || !end2.FinishedAt.Equal(end.FinishedAt) {
				t.Fatalf("following again from disk: got %d entries, %+v, %v", len(again), end2, err)
			}
		})
	}
}

// waitTail waits until the ticket's running task holds output in memory
// that its log refused, and has lost some.
func waitTail(t *testing.T, r *Runner, ticket string) {
	t.Helper()
	r.mu.Lock()
	tk := r.tasks[ticket]
	r.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		tk.mu.Lock()
		lost := tk.tail.lost
		tk.mu.Unlock()
		if lost > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the task never lost output to the full disk")
}

// checkEntries checks a followed log: numbered without gaps, the script's
// last line last but for the agent's own, and every line of the output
// either there or counted lost.
func checkEntries(t *testing.T, entries []protocol.LogEntry, end protocol.TaskEnd, printed int) {
	t.Helper()
	for i, e := range entries {
		if e.Seq != int64(i+1) {
			t.Fatalf("entry %d has seq %d: want no gaps", i, e.Seq)
		}
	}
	if n := int64(len(entries)); n != end.LastSeq {
		t.Fatalf("got %d entries, TaskEnd says the last is %d", n, end.LastSeq)
	}
	out := texts(entries, streamStdout)
	if len(out) == 0 || out[len(out)-1] != "the last line, without a newline" {
		t.Fatalf("the script's last line did not arrive last; the last of %d stdout lines: %q", len(out), out[max(0, len(out)-3):])
	}
	if got := int64(len(out)) + end.LostLines; got != int64(printed)+2 {
		t.Errorf("%d stdout lines arrived and %d were lost: want %d printed", len(out), end.LostLines, printed+2)
	}
	if last := entries[len(entries)-1]; last.Stream != streamAgent || last.Text != "exited with code 0" {
		t.Errorf("last entry: got %s %q, want the agent's exit line", last.Stream, last.Text)
	}
}

func texts(entries []protocol.LogEntry, stream string) []string {
	var out []string
	for _, e := range entries {
		if e.Stream == stream {
			out = append(out, e.Text)
		}
	}
	return out
}

// TestTaskStartOnFullDisk starts a task on an agent whose disk is full:
// the start fails at once with the reason, makes no task, and a start
// once the disk has room runs.
func TestTaskStartOnFullDisk(t *testing.T) {
	mnt := tmpfstest.Mount(t, 1<<20)
	r := newRunnerIn(t, filepath.Join(mnt, "Work"))
	free := tmpfstest.Fill(t, mnt)
	_, err := r.Start(context.Background(), protocol.TaskStart{Ticket: "full", Calamari: "1", Args: []string{"-c", "echo hi"}})
	var se *StartError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "free in "+r.cfg.Dir) || IsBadRequest(err) {
		t.Fatalf("start on a full disk: got %v, want a StartError saying no space left and the free space", err)
	}
	if got := r.Running(); got != 0 {
		t.Fatalf("%d tasks running after a refused start", got)
	}
	if _, _, err := collect(context.Background(), r, "full", 1); !errors.Is(err, ErrUnknownTicket) {
		t.Fatalf("follow a refused start: got %v, want ErrUnknownTicket", err)
	}
	free()
	st, err := r.Start(context.Background(), protocol.TaskStart{Ticket: "roomy", Calamari: "1", Args: []string{"-c", "echo hi"}})
	if err != nil || st.State != protocol.TaskRunning {
		t.Fatalf("start once the disk has room: got %+v, %v", st, err)
	}
	if _, end, err := collect(context.Background(), r, "roomy", 1); err != nil || end.State != protocol.TaskSucceeded || end.LostLines != 0 {
		t.Fatalf("the task once the disk has room: got %+v, %v", end, err)
	}
}
