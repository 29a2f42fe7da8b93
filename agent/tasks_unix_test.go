//go:build unix

package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/protocol"
)

// taskAgent is a running agent with Calamari 1.0.0 installed.
type taskAgent struct {
	c    *testCoordinator
	s    *coordSession
	a    runningAgent
	home string
}

func newTaskAgent(t *testing.T, mod func(*Config)) *taskAgent {
	t.Helper()
	c := newTestCoordinator(t)
	home := registered(t, c)
	a := startAgent(t, home, mod)
	a.waitConnected(t, 1)
	s := c.live()
	if _, _, err := c.pushBundle(s, newTestBundle(t, c, "1.0.0")); err != nil {
		t.Fatal(err)
	}
	return &taskAgent{c: c, s: s, a: a, home: home}
}

func (ta *taskAgent) start(t *testing.T, ticket string, args ...string) protocol.TaskStarted {
	t.Helper()
	var st protocol.TaskStarted
	req := protocol.TaskStart{Ticket: ticket, Calamari: "1.0.0", Args: args}
	if err := ta.c.call(ta.s, protocol.TypeTaskStart, req, protocol.TypeTaskStarted, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func (ta *taskAgent) follow(t *testing.T, ticket string, from int64) followed {
	t.Helper()
	f, err := ta.c.follow(ta.s, ticket, from)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (ta *taskAgent) taskDir(ticket string) string { return filepath.Join(ta.home, workDir, ticket) }

// release lets a task waiting in "await go" go on.
func (ta *taskAgent) release(t *testing.T, ticket string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(ta.taskDir(ticket), "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (ta *taskAgent) runs(t *testing.T, ticket string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ta.taskDir(ticket), "runs"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "run\n")
}

// texts returns the texts of the entries of one stream.
func texts(entries []protocol.LogEntry, stream string) []string {
	var out []string
	for _, e := range entries {
		if e.Stream == stream {
			out = append(out, e.Text)
		}
	}
	return out
}

func TestTaskRunsAndFollows(t *testing.T) {
	ta := newTaskAgent(t, nil)
	tests := []struct {
		name       string
		args       []string
		wantState  string
		wantCode   int
		wantStdout []string
	}{
		{"succeeds", []string{"lines", "3"}, protocol.TaskSucceeded, 0, []string{"args: lines 3", "line 1", "line 2", "line 3"}},
		{"fails with its exit code", []string{"lines", "2", "exit", "3"}, protocol.TaskFailed, 3, []string{"args: lines 2 exit 3", "line 1", "line 2"}},
		{"arguments with spaces", []string{"a b", "", "exit", "0"}, protocol.TaskSucceeded, 0, []string{"args: a b  exit 0"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ticket := fmt.Sprintf("run-%d", i)
			if st := ta.start(t, ticket, tt.args...); st.State != protocol.TaskRunning || st.Existing || st.Ticket != ticket {
				t.Fatalf("start: got %+v, want a new running task", st)
			}
			f := ta.follow(t, ticket, 1)
			checkSeqs(t, f.entries, 1)
			n := int64(len(f.entries))
			if f.end.State != tt.wantState || f.end.ExitCode != tt.wantCode || f.end.LastSeq != n {
				t.Errorf("end: got %+v, want %s with code %d and last seq %d", f.end, tt.wantState, tt.wantCode, n)
			}
			if got := texts(f.entries, "stdout"); !slices.Equal(got, tt.wantStdout) {
				t.Errorf("stdout: got %q, want %q", got, tt.wantStdout)
			}
			if got := texts(f.entries, "stderr"); !slices.Equal(got, []string{"to stderr"}) {
				t.Errorf("stderr: got %q, want [to stderr]", got)
			}
			agentLines := texts(f.entries, "agent")
			if len(agentLines) != 2 || !strings.HasPrefix(agentLines[0], "running calamari 1.0.0") || agentLines[1] != fmt.Sprintf("exited with code %d", tt.wantCode) {
				t.Errorf("agent lines: got %q", agentLines)
			}
			if f.entries[0].Stream != "agent" || f.entries[n-1].Stream != "agent" {
				t.Errorf("the agent's lines do not open and close the log: first %+v, last %+v", f.entries[0], f.entries[n-1])
			}

			// The task has finished: a new follow reads it all from disk,
			// and one from the middle gets exactly the rest.
			again := ta.follow(t, ticket, 1)
			if !slices.EqualFunc(again.entries, f.entries, func(a, b protocol.LogEntry) bool { return a.Seq == b.Seq && a.Text == b.Text && a.Stream == b.Stream }) || !reflect.DeepEqual(again.end, f.end) {
				t.Errorf("follow after the end: got %d entries %+v, want the same %d entries and end", len(again.entries), again.end, n)
			}
			for _, k := range []int64{2, n, n + 1} {
				mid := ta.follow(t, ticket, k)
				checkSeqs(t, mid.entries, k)
				if int64(len(mid.entries)) != n-k+1 || !reflect.DeepEqual(mid.end, f.end) {
					t.Errorf("follow from %d: got %d entries and %+v, want %d and the same end", k, len(mid.entries), mid.end, n-k+1)
				}
			}
			if st := ta.start(t, ticket, tt.args...); !st.Existing || st.State != tt.wantState {
				t.Errorf("second start: got %+v, want the existing %s task", st, tt.wantState)
			}
			if r := ta.runs(t, ticket); r != 1 {
				t.Errorf("ran %d times, want once", r)
			}
			for _, name := range []string{"task.json", "log.jsonl", "result.json"} {
				if !exists(filepath.Join(ta.taskDir(ticket), name)) {
					t.Errorf("%s missing", name)
				}
			}
		})
	}
}

func TestTaskStartedTwiceWhileRunningRunsOnce(t *testing.T) {
	ta := newTaskAgent(t, nil)
	ta.start(t, "once", "await", "go")
	if st := ta.start(t, "once", "await", "go"); !st.Existing || st.State != protocol.TaskRunning {
		t.Errorf("second start: got %+v, want the existing running task", st)
	}
	ta.release(t, "once")
	if f := ta.follow(t, "once", 1); f.end.State != protocol.TaskSucceeded {
		t.Errorf("end: %+v", f.end)
	}
	if r := ta.runs(t, "once"); r != 1 {
		t.Errorf("ran %d times, want once", r)
	}
}

func TestTaskFollowWaitsForOutput(t *testing.T) {
	ta := newTaskAgent(t, nil)
	ta.start(t, "live", "lines", "2", "await", "go", "lines", "2")
	done := make(chan followed, 1)
	errc := make(chan error, 1)
	go func() {
		f, err := ta.c.follow(ta.s, "live", 1)
		errc <- err
		done <- f
	}()
	// Released only once the follow began, so the rest arrives while it
	// waits.
	eventually(t, "the first lines", func() bool {
		b, _ := os.ReadFile(filepath.Join(ta.taskDir("live"), "log.jsonl"))
		return strings.Contains(string(b), "line 2")
	})
	ta.release(t, "live")
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	f := <-done
	checkSeqs(t, f.entries, 1)
	if got := texts(f.entries, "stdout"); !slices.Equal(got, []string{"args: lines 2 await go lines 2", "line 1", "line 2", "line 1", "line 2"}) {
		t.Errorf("stdout: got %q", got)
	}
	if f.end.State != protocol.TaskSucceeded || f.end.LastSeq != int64(len(f.entries)) {
		t.Errorf("end: %+v", f.end)
	}
}

func TestTaskOutputIsBatchedAndSplit(t *testing.T) {
	ta := newTaskAgent(t, nil)
	ta.start(t, "big", "lines", "1200", "long", "200000")
	f := ta.follow(t, "big", 1)
	checkSeqs(t, f.entries, 1)
	for i, n := range f.frames {
		if n < 1 || n > 500 {
			t.Errorf("frame %d: got %d entries, want 1..500", i, n)
		}
	}
	var long []string
	for _, e := range f.entries {
		if strings.HasPrefix(e.Text, "xxx") {
			long = append(long, e.Text)
		}
	}
	total := 0
	for _, l := range long {
		if len(l) > 64<<10 {
			t.Errorf("an entry of %d bytes, want at most %d", len(l), 64<<10)
		}
		total += len(l)
	}
	if len(long) != 4 || total != 200000 {
		t.Errorf("the 200000-byte line: got %d entries of %d bytes in all, want 4 entries of 200000", len(long), total)
	}
	if len(texts(f.entries, "stdout")) != 1+1200+4 {
		t.Errorf("stdout entries: got %d, want %d", len(texts(f.entries, "stdout")), 1+1200+4)
	}
}

func TestTaskFilesAndEnvironment(t *testing.T) {
	ta := newTaskAgent(t, nil)
	content := []byte("package contents\n")
	push := protocol.FilePush{Ticket: "files", Name: "pkg.txt", File: transferOf(content)}
	if ready, err := ta.c.push(ta.s, protocol.TypeFilePush, push, content, -1, protocol.TypeAck, nil); err != nil || ready.Done || ready.Offset != 0 {
		t.Fatalf("file push: got %+v, %v", ready, err)
	}
	// A cut push of another file resumes.
	big := []byte(strings.Repeat("0123456789", 10000))
	bigPush := protocol.FilePush{Ticket: "files", Name: "big.bin", File: transferOf(big)}
	if _, err := ta.c.push(ta.s, protocol.TypeFilePush, bigPush, big, 5000, protocol.TypeAck, nil); err != errCut {
		t.Fatalf("cut file push: %v", err)
	}
	if ready, err := ta.c.push(ta.s, protocol.TypeFilePush, bigPush, big, -1, protocol.TypeAck, nil); err != nil || ready.Offset != 5000 {
		t.Fatalf("resumed file push: got %+v, %v; want offset 5000", ready, err)
	}
	if ready, err := ta.c.push(ta.s, protocol.TypeFilePush, push, content, -1, protocol.TypeAck, nil); err != nil || !ready.Done {
		t.Fatalf("second file push: got %+v, %v; want Done", ready, err)
	}

	ta.start(t, "files", "env", "cat", "pkg.txt")
	f := ta.follow(t, "files", 1)
	dir := ta.taskDir("files")
	wantEnv := fmt.Sprintf("ticket=files dir=%s files=%s home=%s pwd=%s", dir, filepath.Join(dir, "files"), ta.home, dir)
	if got := texts(f.entries, "stdout"); !slices.Equal(got, []string{"args: env cat pkg.txt", wantEnv, "package contents"}) {
		t.Errorf("stdout: got %q, want the environment %q and the file", got, wantEnv)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "files", "big.bin")); string(got) != string(big) {
		t.Errorf("big.bin: got %d bytes, want the %d pushed", len(got), len(big))
	}

	// Once the task ran, its files are what it ran with.
	changed := protocol.FilePush{Ticket: "files", Name: "pkg.txt", File: transferOf([]byte("other"))}
	if _, err := ta.c.push(ta.s, protocol.TypeFilePush, changed, []byte("other"), -1, protocol.TypeAck, nil); !protocol.IsCode(err, protocol.CodeBadRequest) {
		t.Errorf("changing a started task's file: got %v, want %s", err, protocol.CodeBadRequest)
	}
	for _, name := range []string{"../x", ".hidden", "a/b", "NUL", ""} {
		bad := protocol.FilePush{Ticket: "files2", Name: name, File: transferOf(content)}
		if _, err := ta.c.push(ta.s, protocol.TypeFilePush, bad, content, -1, protocol.TypeAck, nil); !protocol.IsCode(err, protocol.CodeBadRequest) {
			t.Errorf("file name %q: got %v, want %s", name, err, protocol.CodeBadRequest)
		}
	}
}

func TestTaskSurvivesLostSession(t *testing.T) {
	ta := newTaskAgent(t, nil)
	ta.start(t, "survivor", "lines", "2", "await", "go", "lines", "3", "exit", "4")
	eventually(t, "the task to print", func() bool {
		b, _ := os.ReadFile(filepath.Join(ta.taskDir("survivor"), "log.jsonl"))
		return strings.Contains(string(b), "line 2")
	})
	old := ta.s
	ta.c.dropAll()
	ta.a.waitConnected(t, 2)
	ta.s = ta.c.waitSession(func(s *coordSession) bool { return s != old })
	ta.release(t, "survivor")
	f := ta.follow(t, "survivor", 1)
	checkSeqs(t, f.entries, 1)
	if got := texts(f.entries, "stdout"); !slices.Equal(got, []string{"args: lines 2 await go lines 3 exit 4", "line 1", "line 2", "line 1", "line 2", "line 3"}) {
		t.Errorf("stdout: got %q", got)
	}
	if f.end.State != protocol.TaskFailed || f.end.ExitCode != 4 {
		t.Errorf("end: got %+v, want failed with code 4", f.end)
	}
}

// gone reports whether pid no longer runs: it does not exist, or is a
// zombie nobody reaped yet (a container's init may never do it).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false // no /proc (macOS): kill said it exists
	}
	// The state follows the command name, which is in parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	eventually(t, path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	return pid
}

func TestTaskCancelKillsTree(t *testing.T) {
	ta := newTaskAgent(t, nil)
	ta.start(t, "tree", "child")
	mainPID := readPID(t, filepath.Join(ta.taskDir("tree"), "main.pid"))
	childPID := readPID(t, filepath.Join(ta.taskDir("tree"), "child.pid"))
	if err := ta.c.call(ta.s, protocol.TypeTaskCancel, protocol.TaskCancel{Ticket: "tree"}, protocol.TypeAck, nil); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{mainPID, childPID} {
		eventually(t, fmt.Sprintf("process %d to be gone", pid), func() bool { return gone(pid) })
	}
	f := ta.follow(t, "tree", 1)
	if f.end.State != protocol.TaskCancelled || f.entries[len(f.entries)-1].Text != "cancelled" {
		t.Errorf("end: got %+v and last entry %+v, want cancelled", f.end, f.entries[len(f.entries)-1])
	}
	// Cancelling a finished task has nothing to do.
	if err := ta.c.call(ta.s, protocol.TypeTaskCancel, protocol.TaskCancel{Ticket: "tree"}, protocol.TypeAck, nil); err != nil {
		t.Errorf("cancel of a finished task: %v", err)
	}
}

func TestTaskCancelKillsWhatIgnoresSIGTERM(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent sees the main process exit before reaping it only on Linux")
	}
	// The main process exits on SIGTERM but its child ignores it: the
	// child goes with the rest of the group as soon as the main process
	// is gone, long before the grace period would end.
	ta := newTaskAgent(t, func(c *Config) { c.TaskKillGrace = time.Hour })
	ta.start(t, "stubborn", "stubborn")
	childPID := readPID(t, filepath.Join(ta.taskDir("stubborn"), "child.pid"))
	readPID(t, filepath.Join(ta.taskDir("stubborn"), "main.pid"))
	if err := ta.c.call(ta.s, protocol.TypeTaskCancel, protocol.TaskCancel{Ticket: "stubborn"}, protocol.TypeAck, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the child to be gone", func() bool { return gone(childPID) })
	if f := ta.follow(t, "stubborn", 1); f.end.State != protocol.TaskCancelled {
		t.Errorf("end: got %+v, want cancelled", f.end)
	}
}

func TestTaskAgentStopCancelsTasks(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	a, err := New(Config{Home: home, Version: "1.2.3", MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	s := c.live()
	if _, _, err := c.pushBundle(s, newTestBundle(t, c, "1.0.0")); err != nil {
		t.Fatal(err)
	}
	req := protocol.TaskStart{Ticket: "orphan", Calamari: "1.0.0", Args: []string{"child"}}
	if err := c.call(s, protocol.TypeTaskStart, req, protocol.TypeTaskStarted, nil); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(home, workDir, "orphan")
	mainPID, childPID := readPID(t, filepath.Join(dir, "main.pid")), readPID(t, filepath.Join(dir, "child.pid"))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Run returned only after the task was cancelled and reaped.
	b, err := os.ReadFile(filepath.Join(dir, "result.json"))
	if err != nil || !strings.Contains(string(b), `"state": "cancelled"`) {
		t.Errorf("result.json: got %s, %v; want cancelled", b, err)
	}
	for _, pid := range []int{mainPID, childPID} {
		eventually(t, fmt.Sprintf("process %d to be gone", pid), func() bool { return gone(pid) })
	}
	if err := a.Run(context.Background()); err == nil {
		t.Error("a second Run of a stopped agent: got nil error")
	}
}

func TestPruneKeepsVersionsInUse(t *testing.T) {
	ta := newTaskAgent(t, nil) // 1.0.0 installed
	ta.start(t, "holds-1.0.0", "await", "go")
	steps := []struct {
		version    string
		wantPruned []string
		wantOnDisk []string
	}{
		{"1.1.0", nil, []string{"1.0.0", "1.1.0"}},
		{"1.2.0", nil, []string{"1.0.0", "1.1.0", "1.2.0"}},
		{"1.3.0", nil, []string{"1.0.0", "1.1.0", "1.2.0", "1.3.0"}},               // 1.0.0 is beyond the newest 3 but in use
		{"1.4.0", []string{"1.1.0"}, []string{"1.0.0", "1.2.0", "1.3.0", "1.4.0"}}, // still in use
		{"finish", nil, nil}, // the task ends
		{"1.5.0", []string{"1.0.0", "1.2.0"}, []string{"1.3.0", "1.4.0", "1.5.0"}}, // no longer in use
		{"0.9.0", nil, []string{"0.9.0", "1.3.0", "1.4.0", "1.5.0"}},               // just pushed: a task is about to use it
		{"1.6.0", []string{"0.9.0", "1.3.0"}, []string{"1.4.0", "1.5.0", "1.6.0"}}, // until the next install
	}
	for _, step := range steps {
		if step.version == "finish" {
			ta.release(t, "holds-1.0.0")
			if f := ta.follow(t, "holds-1.0.0", 1); f.end.State != protocol.TaskSucceeded {
				t.Fatalf("task end: %+v", f.end)
			}
			continue
		}
		_, inst, err := ta.c.pushBundle(ta.s, newTestBundle(t, ta.c, step.version))
		if err != nil {
			t.Fatalf("push %s: %v", step.version, err)
		}
		if !slices.Equal(inst.Pruned, step.wantPruned) {
			t.Errorf("push %s: pruned %v, want %v", step.version, inst.Pruned, step.wantPruned)
		}
		if versions, _ := versionsOnDisk(t, ta.home); !slices.Equal(versions, step.wantOnDisk) {
			t.Errorf("after pushing %s: on disk %v, want %v", step.version, versions, step.wantOnDisk)
		}
	}
}
