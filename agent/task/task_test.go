package task

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/taskenv"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// readLog returns the entries of a task folder's log.
func readLog(t *testing.T, dir string) []protocol.LogEntry {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []protocol.LogEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e protocol.LogEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

func TestLineWriter(t *testing.T) {
	long := strings.Repeat("x", maxLine)
	euro := "€" // 3 bytes: a split must not cut it
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"lines", []string{"a\nb\n"}, []string{"a", "b"}},
		{"line across writes", []string{"he", "llo\nwor", "ld\n"}, []string{"hello", "world"}},
		{"no final newline", []string{"a\nlast"}, []string{"a", "last"}},
		{"empty lines kept", []string{"\n\na\n"}, []string{"", "", "a"}},
		{"windows line ends", []string{"a\r\nb\r\n"}, []string{"a", "b"}},
		{"exactly the limit", []string{long + "\n"}, []string{long}},
		{"one byte over", []string{long + "y\n"}, []string{long, "y"}},
		{"split before a multi-byte character", []string{long[:maxLine-1] + euro + "\n"}, []string{long[:maxLine-1], euro}},
		{"long line in small writes", splitEvery(strings.Repeat("z", 3*maxLine+5)+"\n", 1000), []string{strings.Repeat("z", maxLine), strings.Repeat("z", maxLine), strings.Repeat("z", maxLine), "zzzzz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tk, err := openTask("t", dir, "")
			if err != nil {
				t.Fatal(err)
			}
			defer tk.closeLog()
			w := &lineWriter{t: tk, stream: streamStdout}
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("write: got %d, %v; want %d, nil", n, err, len(s))
				}
			}
			w.flush()
			var got []string
			for i, e := range readLog(t, dir) {
				if e.Seq != int64(i+1) || e.Stream != streamStdout {
					t.Errorf("entry %d: got seq %d stream %s, want seq %d stdout", i, e.Seq, e.Stream, i+1)
				}
				got = append(got, e.Text)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %d entries %.40q, want %d %.40q", len(got), got, len(tt.want), tt.want)
			}
		})
	}
}

func splitEvery(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

func TestValidateNames(t *testing.T) {
	tests := []struct {
		name         string
		ticketOK     bool
		fileOK       bool
		wantTicketIs error
	}{
		{"abc-123_X.y", true, true, nil},
		{strings.Repeat("a", 128), true, true, nil},
		{strings.Repeat("a", 129), false, true, nil},
		{"", false, false, nil},
		{".hidden", false, false, nil},
		{"a/b", false, false, nil},
		{`a\b`, false, false, nil},
		{"..", false, false, nil},
		{"trailing.", false, false, nil},
		{"CON", false, false, nil},
		{"com1.txt", false, false, nil},
		{"my package.zip", false, true, nil},
		{"a:b", false, false, nil},
		{"tab\there", false, false, nil},
	}
	for _, tt := range tests {
		if err := ValidateTicket(tt.name); (err == nil) != tt.ticketOK || (err != nil && !errors.Is(err, ErrInvalidTicket)) {
			t.Errorf("ValidateTicket(%q): got %v, want ok=%v", tt.name, err, tt.ticketOK)
		}
		if err := ValidateFileName(tt.name); (err == nil) != tt.fileOK || (err != nil && !errors.Is(err, ErrInvalidFileName)) {
			t.Errorf("ValidateFileName(%q): got %v, want ok=%v", tt.name, err, tt.fileOK)
		}
	}
}

func TestOpenLogRepairsCutLine(t *testing.T) {
	tests := []struct {
		name     string
		content  string
		wantSeq  int64
		wantSize int64
	}{
		{"empty", "", 0, 0},
		{"whole lines", "{}\n{}\n", 2, 6},
		{"cut last line", "{}\n{}\n{\"se", 2, 6},
		{"only a cut line", "{\"se", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, logFile), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			f, size, seq, err := openLog(dir)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			st, _ := os.Stat(filepath.Join(dir, logFile))
			if seq != tt.wantSeq || size != tt.wantSize || st.Size() != tt.wantSize {
				t.Errorf("got seq %d size %d (file %d), want %d and %d", seq, size, st.Size(), tt.wantSeq, tt.wantSize)
			}
		})
	}
}

// newRunner is a Runner whose "Calamari" is the system shell.
func newRunner(t *testing.T) *Runner {
	t.Helper()
	return newRunnerIn(t, filepath.Join(t.TempDir(), "Work"))
}

// newRunnerIn is newRunner with its work folder at dir.
func newRunnerIn(t *testing.T, dir string) *Runner {
	t.Helper()
	return newRunnerOf(t, dir, "/bin/sh")
}

// newRunnerOf is newRunnerIn whose every Calamari version is entry.
func newRunnerOf(t *testing.T, dir, entry string) *Runner {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("runs /bin/sh")
	}
	r, err := New(Config{
		Dir:     dir,
		Home:    t.TempDir(),
		Resolve: func(string) (string, error) { return entry, nil },
		Logger:  zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return r
}

func collect(ctx context.Context, r *Runner, ticket string, from int64) ([]protocol.LogEntry, protocol.TaskEnd, error) {
	var got []protocol.LogEntry
	end, err := r.Follow(ctx, ticket, from, func(l protocol.TaskLog) error {
		got = append(got, l.Entries...)
		return nil
	})
	return got, end, err
}

func TestRunnerFollowsTaskStartedWhileWaiting(t *testing.T) {
	r := newRunner(t)
	// A follower that arrives while a task is being set up, before its log
	// file exists, waits for it instead of failing or spinning. (If the
	// goroutine below starts late it reads the finished task from disk,
	// which must give the same answer; TestFeedOpensLogLate covers the
	// early case deterministically.)
	dir := r.taskDir("early")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(filepath.Join(dir, infoFile), info{Ticket: "early", Calamari: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	tk := newTask("early", dir, "1.0.0")
	r.mu.Lock()
	r.tasks["early"] = tk
	r.versions["1.0.0"]++
	r.mu.Unlock()
	type outcome struct {
		entries []protocol.LogEntry
		end     protocol.TaskEnd
		err     error
	}
	done := make(chan outcome, 1)
	go func() {
		e, end, err := collect(context.Background(), r, "early", 1)
		done <- outcome{e, end, err}
	}()
	if err := tk.openLog(); err != nil {
		t.Fatal(err)
	}
	tk.append(streamStdout, "hello")
	r.finish(tk, result{State: protocol.TaskSucceeded}, "exited with code 0")
	o := <-done
	if o.err != nil || len(o.entries) != 2 || o.entries[0].Text != "hello" || o.end.State != protocol.TaskSucceeded || o.end.LastSeq != 2 {
		t.Errorf("got %+v %+v %v, want hello, the end line, and success", o.entries, o.end, o.err)
	}
	if inUse := r.InUse(); len(inUse) != 0 {
		t.Errorf("in use after the end: %v", inUse)
	}
}

func TestFeedOpensLogLate(t *testing.T) {
	dir := t.TempDir()
	var got []protocol.LogEntry
	fd := &feed{path: filepath.Join(dir, logFile), from: 1, next: 1, send: func(l protocol.TaskLog) error {
		got = append(got, l.Entries...)
		return nil
	}}
	defer fd.close()
	// No log yet: nothing to read to the end of, and entries known to
	// exist but missing are an error rather than a silent nothing.
	if err := fd.read(-1); err != nil || len(got) != 0 {
		t.Fatalf("read of a missing log: got %v, %v", got, err)
	}
	if err := fd.read(1); err == nil {
		t.Fatal("read of a known entry from a missing log: got nil error")
	}
	tk, err := openTask("t", dir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer tk.closeLog()
	tk.append(streamStdout, "one")
	tk.append(streamStdout, "two")
	if err := fd.read(2); err != nil || len(got) != 2 || got[1].Text != "two" || fd.next != 3 {
		t.Errorf("read once the log exists: got %+v, %v, next %d", got, err, fd.next)
	}
}

func TestRunnerFollowStopsWithContext(t *testing.T) {
	r := newRunner(t)
	if _, err := r.Start(context.Background(), protocol.TaskStart{Ticket: "quiet", Calamari: "1", Args: []string{"-c", "echo hi; sleep 1000"}}); err != nil {
		t.Fatal(err)
	}
	if got := r.InUse(); !slices.Equal(got, []string{"1"}) {
		t.Errorf("in use: got %v, want [1]", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sent := make(chan struct{}, 10)
	errc := make(chan error, 1)
	go func() {
		_, err := r.Follow(ctx, "quiet", 1, func(protocol.TaskLog) error { sent <- struct{}{}; return nil })
		errc <- err
	}()
	<-sent // the follow is under way and waits for more
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

func TestRunnerCloseCancelsAndRefuses(t *testing.T) {
	r := newRunner(t)
	st, err := r.Start(context.Background(), protocol.TaskStart{Ticket: "long", Calamari: "1", Args: []string{"-c", "sleep 1000"}})
	if err != nil || st.State != protocol.TaskRunning {
		t.Fatalf("start: got %+v, %v", st, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := readResult(r.taskDir("long"))
	if err != nil || res.State != protocol.TaskCancelled {
		t.Errorf("result: got %+v, %v; want cancelled", res, err)
	}
	if _, err := r.Start(context.Background(), protocol.TaskStart{Ticket: "late", Calamari: "1"}); !errors.Is(err, ErrClosed) {
		t.Errorf("start after close: got %v, want ErrClosed", err)
	}
	if err := r.Close(ctx); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func TestRunnerStartFailure(t *testing.T) {
	r := newRunner(t)
	r.cfg.Resolve = func(string) (string, error) { return "/nonexistent/calamari", nil }
	st, err := r.Start(context.Background(), protocol.TaskStart{Ticket: "broken", Calamari: "1"})
	if err != nil || st.State != protocol.TaskFailed {
		t.Fatalf("start: got %+v, %v; want a failed task", st, err)
	}
	entries, end, err := collect(context.Background(), r, "broken", 1)
	if err != nil || end.State != protocol.TaskFailed || !strings.Contains(end.Error, "could not start Calamari") || len(entries) != 2 {
		t.Errorf("follow: got %+v %+v %v", entries, end, err)
	}
	r.cfg.Resolve = func(string) (string, error) { return "", errors.New("gone") }
	_, err = r.Start(context.Background(), protocol.TaskStart{Ticket: "missing", Calamari: "2"})
	var ce *CalamariError
	if !errors.As(err, &ce) || !IsBadRequest(err) || exists(filepath.Join(r.taskDir("missing"), infoFile)) {
		t.Errorf("start with a missing Calamari: got %v, want a CalamariError and no task", err)
	}
}

// TestRunnerExitCodes checks the end a task's process leaves: its exit
// code, or for a process a signal killed 128 + the signal, as a shell
// reports it. The agent reads that itself because it tells calamari
// (taskenv.Exec, checked here too) that it may become the script's
// shell, whose signal no calamari is left to turn into an exit code.
func TestRunnerExitCodes(t *testing.T) {
	r := newRunner(t)
	tests := []struct {
		script    string
		wantState string
		wantCode  int
		wantLine  string
	}{
		{"exit 0", protocol.TaskSucceeded, 0, "exited with code 0"},
		{"exit 3", protocol.TaskFailed, 3, "exited with code 3"},
		{"kill -TERM $$", protocol.TaskFailed, 128 + 15, "killed by SIGTERM (exit code 143)"},
		{"kill -KILL $$", protocol.TaskFailed, 128 + 9, "killed by SIGKILL (exit code 137)"},
		{`test "$` + taskenv.Exec + `" = 1`, protocol.TaskSucceeded, 0, "exited with code 0"},
	}
	for i, tt := range tests {
		t.Run(tt.script, func(t *testing.T) {
			ticket := fmt.Sprintf("code-%d", i)
			startTask(t, r, protocol.TaskStart{Ticket: ticket, Isolation: protocol.IsolationNone, Args: []string{"-c", tt.script}})
			entries, end := followAll(t, r, ticket)
			if end.State != tt.wantState || end.ExitCode != tt.wantCode {
				t.Errorf("end: got %s with code %d (%s), want %s with code %d", end.State, end.ExitCode, end.Error, tt.wantState, tt.wantCode)
			}
			if last := entries[len(entries)-1]; last.Stream != streamAgent || last.Text != tt.wantLine {
				t.Errorf("last line: got %s %q, want agent %q", last.Stream, last.Text, tt.wantLine)
			}
		})
	}
}
