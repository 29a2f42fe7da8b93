package server

// Faults of a task's storage: full disks on the agent and on the
// coordinator. A task always ends in its real final state, with its whole
// log or an honest count of what was lost, without an agent restart.

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/tmpfstest"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/store"
)

// agentOnTmpfs runs an agent whose home is a tmpfs of size bytes, ready
// for tasks with Calamari 1.0.0 installed, and returns it and its home.
func (ts *testServer) agentOnTmpfs(t *testing.T, name string, size int64) (*runningAgent, string) {
	t.Helper()
	home := tmpfstest.Mount(t, size)
	rc := agent.RegisterConfig{
		Home: home, Servers: []string{ts.AgentAddr()}, ServerThumbprint: ts.Thumbprint(),
		Token: ts.token(t, "Test"), Name: name, Version: "1.2.3", Logger: zaptest.NewLogger(t),
	}
	if _, err := agent.Register(context.Background(), rc); err != nil {
		t.Fatal(err)
	}
	ra := startAgent(t, home, nil)
	ts.waitConnected(t, name)
	eventually(t, name+" says it is connected", func() bool { return ra.Status().Connected })
	ts.upload(t, packBundle(t, "1.0.0", 0))
	// Calamari installed while there is room.
	if task, lines := ts.runTaskOn(t, name, "run-script", "--inline", "echo warm"); task.State != api.TaskSucceeded {
		t.Fatalf("warm-up task: got %s\n%s", task.State, logText(lines))
	}
	return ra, home
}

// waitLine waits until the task's stored log holds a line with text.
func (ts *testServer) waitLine(t *testing.T, id, stream, text string) {
	t.Helper()
	eventually(t, "task "+id+" logs "+text, func() bool {
		lines, err := ts.store.TaskLogs(context.Background(), id, 1, 0)
		_, ok := lineWith(lines, stream, text)
		return err == nil && ok
	})
}

// gatedScript prints "first", waits for the file gate, then prints n
// numbered lines and a last line without a newline.
func gatedScript(gate string, n int) string {
	return fmt.Sprintf(`echo first
while [ ! -e %s ]; do sleep 0.02; done
seq -f 'output line %%g, padded so that it takes some room on a disk' 1 %d
printf 'the last line'`, gate, n)
}

// TestTaskOutputLostOnFullAgentDisk runs a task that prints far more than
// the agent's disk takes: it keeps its real state (succeeded), its last
// line arrives, and the task's record, its view and its log say how many
// lines were lost and why.
func TestTaskOutputLostOnFullAgentDisk(t *testing.T) {
	ts := startServer(t, nil)
	_, home := ts.agentOnTmpfs(t, "web-1", 8<<20)
	const printed = 20000
	gate := filepath.Join(t.TempDir(), "gate")
	task := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", gatedScript(gate, printed)}})
	ts.waitLine(t, task.ID, "stdout", "first")
	tmpfstest.Fill(t, home)
	os.WriteFile(gate, nil, 0o600)

	task = ts.waitFinished(t, task.ID)
	lines := ts.allLines(t, task.ID)
	if task.State != api.TaskSucceeded || task.ExitCode != 0 {
		t.Fatalf("got %s exit %d (%s), want succeeded: lost output is a warning, not a failure", task.State, task.ExitCode, task.Error)
	}
	if task.LostLines <= 0 || task.LostLines >= printed || !strings.Contains(task.LostReason, "no space left on device") {
		t.Fatalf("got %d lines lost (%q), want some of %d, for no space left on device", task.LostLines, task.LostReason, printed)
	}
	if w := task.LostWarning(); !strings.Contains(w, fmt.Sprint(task.LostLines)) {
		t.Errorf("warning %q does not count the lines", w)
	}
	var stdout []string
	for _, l := range lines {
		if l.Stream == "stdout" {
			stdout = append(stdout, l.Text)
		}
	}
	if n := len(stdout); n == 0 || stdout[n-1] != "the last line" {
		t.Fatalf("the script's last line is not the last one stored: %q", stdout[max(0, n-3):])
	}
	if got := int64(len(stdout)) + task.LostLines; got != printed+2 {
		t.Errorf("%d stdout lines stored and %d lost, want %d printed", len(stdout), task.LostLines, printed+2)
	}
	if _, ok := lineWith(lines, "agent", "lines of output were lost here"); !ok {
		t.Error("the log does not say where the lines were lost")
	}
	last := lines[len(lines)-1]
	want := fmt.Sprintf("Task succeeded (exit code 0), but %d lines of its output were lost", task.LostLines)
	if last.Stream != "coordinator" || !strings.HasPrefix(last.Text, want) {
		t.Fatalf("last line: got %s %q, want the coordinator's %q...", last.Stream, last.Text, want)
	}
	consoleShows(t, ts, task.ID, `id="task-state">succeeded</span>`,
		`<p class="reason" id="task-lost">`+html.EscapeString(task.LostWarning())+`</p>`)
}

// TestTaskStartedOnFullAgentDisk starts a task while the agent's disk is
// full: it fails at once with the agent's reason rather than stay queued,
// and a task started once there is room again runs.
func TestTaskStartedOnFullAgentDisk(t *testing.T) {
	ts := startServer(t, nil)
	_, home := ts.agentOnTmpfs(t, "web-1", 8<<20)
	free := tmpfstest.Fill(t, home)
	task := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", "echo never"}})
	task = ts.waitFinished(t, task.ID)
	if task.State != api.TaskFailed || !strings.Contains(task.Error, "no space left on device") {
		t.Fatalf("got %s (%q), want failed for no space left on device", task.State, task.Error)
	}
	if _, ok := lineWith(ts.taskLines(t, task.ID), "coordinator", "no space left on device"); !ok {
		t.Errorf("the log does not say why:\n%s", logText(ts.taskLines(t, task.ID)))
	}
	free()
	if again, lines := ts.runTaskOn(t, "web-1", "run-script", "--inline", "echo room"); again.State != api.TaskSucceeded {
		t.Fatalf("once there is room: got %s (%s)\n%s", again.State, again.Error, logText(lines))
	}
}

// agentResult reads a task's result.json in the agent's home.
func agentResult(t *testing.T, home, id string) (finishedAt time.Time, ok bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(home, "Work", id, "result.json"))
	if err != nil {
		return time.Time{}, false
	}
	var res struct {
		FinishedAt time.Time `json:"finished_at"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	return res.FinishedAt, true
}

// TestTaskLogStoredAfterCoordinatorDiskFull fills the coordinator's data
// folder (its SQLite database with it) while a task prints and finishes:
// the task is held running, with the reason shown, until there is room
// again; then, with no agent restart, it reaches its final state with its
// whole log and the agent's end time.
func TestTaskLogStoredAfterCoordinatorDiskFull(t *testing.T) {
	mnt := tmpfstest.Mount(t, 64<<20)
	dir := filepath.Join(mnt, "data")
	if _, err := datadir.Init(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	ts := runServer(t, dir, nil)
	ra := ts.readyAgent(t, "web-1", nil)
	const printed = 20000
	gate := filepath.Join(t.TempDir(), "gate")
	task := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", gatedScript(gate, printed)}})
	ts.waitLine(t, task.ID, "stdout", "first")
	sessions := ra.Status().Sessions
	free := tmpfstest.Fill(t, mnt)
	os.WriteFile(gate, nil, 0o600)

	var finishedAt time.Time
	eventually(t, "the task finished on the agent", func() bool {
		var ok bool
		finishedAt, ok = agentResult(t, ra.home, task.ID)
		return ok
	})
	eventually(t, "the task says what holds it up", func() bool {
		v, err := ts.Task(context.Background(), task.ID)
		return err == nil && strings.Contains(v.StateReason, "cannot")
	})
	v, err := ts.Task(context.Background(), task.ID)
	if err != nil || v.State != api.TaskRunning || !strings.Contains(v.StateReason, "full") && !strings.Contains(v.StateReason, "no space") {
		t.Fatalf("while the data folder is full: got %s (%q), %v; want running, saying the disk is full", v.State, v.StateReason, err)
	}
	// Cancelling it says what holds it up; it finished on the agent, so
	// it ends as it finished there.
	if v, err := ts.CancelTask(context.Background(), task.ID); err != nil || v.StateReason == "" {
		t.Fatalf("cancel while the data folder is full: got %s (%q), %v; want what holds it up", v.State, v.StateReason, err)
	}
	free()

	ts.checkWholeGatedTask(t, task.ID, printed, finishedAt)
	if got := ra.Status().Sessions; got != sessions {
		t.Errorf("the agent has had %d sessions, want %d: the result came without a reconnect", got, sessions)
	}
}

// checkWholeGatedTask waits for a task of gatedScript(_, printed) to end
// and checks that it succeeded with nothing lost: every line stored once,
// in gapless order, the coordinator's final line, and the agent's end
// time as finished_at.
func (ts *testServer) checkWholeGatedTask(t *testing.T, id string, printed int, finishedAt time.Time) {
	t.Helper()
	task := ts.waitFinished(t, id)
	if task.State != api.TaskSucceeded || task.StateReason != "" || task.LostLines != 0 {
		t.Fatalf("got %s (%q, %d lines lost), want succeeded with nothing lost", task.State, task.StateReason, task.LostLines)
	}
	if task.FinishedAt == nil || !task.FinishedAt.Equal(finishedAt) {
		t.Errorf("finished at %v, want the agent's end time %v", task.FinishedAt, finishedAt)
	}
	lines := ts.allLines(t, id)
	seen := map[string]int{}
	for _, l := range lines {
		if l.Stream == "stdout" {
			seen[l.Text]++
		}
	}
	for i := 1; i <= printed; i++ {
		if text := fmt.Sprintf("output line %d, padded so that it takes some room on a disk", i); seen[text] != 1 {
			t.Fatalf("line %d stored %d times, want once", i, seen[text])
		}
	}
	if seen["first"] != 1 || seen["the last line"] != 1 {
		t.Fatalf("first and last lines stored %d and %d times, want once", seen["first"], seen["the last line"])
	}
	if _, ok := lineWith(lines, "coordinator", "Task succeeded (exit code 0)"); !ok {
		t.Errorf("no final line in:\n%s", logText(lines[max(0, len(lines)-5):]))
	}
	checkGapless(t, lines)
}

// allLines returns every line of a task's log, however many.
func (ts *testServer) allLines(t *testing.T, id string) []store.LogLine {
	t.Helper()
	var out []store.LogLine
	for {
		page, err := ts.store.TaskLogs(context.Background(), id, int64(len(out))+1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
	}
}

// checkGapless fails unless lines are numbered 1, 2, 3...
func checkGapless(t *testing.T, lines []store.LogLine) {
	t.Helper()
	for i, l := range lines {
		if l.Seq != int64(i+1) {
			t.Fatalf("line %d has seq %d: want gapless order", i, l.Seq)
		}
	}
}

// consoleShows fetches a task's console page and fails unless it holds
// each of want.
func consoleShows(t *testing.T, ts *testServer, id string, want ...string) {
	t.Helper()
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	resp, body := c.get("/tasks/" + id)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("task page: got %d, want 200", resp.StatusCode)
	}
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("task page lacks %q:\n%s", w, body)
		}
	}
}

// TestArtifactStoredAfterCoordinatorDiskFull: an artifact the coordinator's
// full data folder cannot take holds its task (saying why) instead of
// being dropped, and is collected, whole, once space is freed.
func TestArtifactStoredAfterCoordinatorDiskFull(t *testing.T) {
	// Only the data folder's files are on the full disk: its database
	// has room, so the log is stored and the artifact alone waits.
	mnt := tmpfstest.Mount(t, 16<<20)
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := datadir.Init(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(mnt, filepath.Join(dir, "files")); err != nil {
		t.Fatal(err)
	}
	ts := runServer(t, dir, nil)
	ts.readyAgent(t, "web-1", nil)
	gate := filepath.Join(t.TempDir(), "gate")
	script := strings.Join([]string{
		`head -c 4194304 /dev/urandom > build.bin`,
		`echo first`,
		`while [ ! -e ` + gate + ` ]; do sleep 0.02; done`,
		serviceLine("artifact", "", "build.bin"),
	}, "\n")
	task := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", script}})
	ts.waitLine(t, task.ID, "stdout", "first")
	free := tmpfstest.Fill(t, mnt)
	os.WriteFile(gate, nil, 0o600)

	eventually(t, "the task says the artifact waits for space", func() bool {
		v, err := ts.Task(context.Background(), task.ID)
		return err == nil && strings.Contains(v.StateReason, "build.bin")
	})
	if v, _ := ts.Task(context.Background(), task.ID); v.State != api.TaskRunning || len(v.Artifacts) != 0 {
		t.Fatalf("while the data folder is full: got %s with artifacts %+v, want running without them", v.State, v.Artifacts)
	}
	free()

	task = ts.waitFinished(t, task.ID)
	if task.State != api.TaskSucceeded || len(task.Artifacts) != 1 || task.Artifacts[0].Name != "build.bin" || task.Artifacts[0].Size != 4<<20 {
		t.Fatalf("got %s with artifacts %+v, want succeeded with build.bin of 4 MiB", task.State, task.Artifacts)
	}
	d, err := ts.TaskArtifact(context.Background(), task.ID, "build.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Body.Close()
	if n, err := io.Copy(io.Discard, d.Body); err != nil || n != 4<<20 {
		t.Fatalf("download: got %d bytes, %v; want 4 MiB", n, err)
	}
}
