package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/protocol"
)

// startCoordinatorCmd runs "tendril-server run" on a new data folder until
// the test ends.
func startCoordinatorCmd(t *testing.T) (dir string, ri api.RunInfo) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "data")
	return dir, startCoordinatorCmdIn(t, dir)
}

// startCoordinatorCmdIn is startCoordinatorCmd on a data folder dir that
// init makes (it must not exist yet).
func startCoordinatorCmdIn(t *testing.T, dir string) (ri api.RunInfo) {
	t.Helper()
	if code, _, stderr := cli(t, context.Background(), nil, "init", "--data", dir); code != 0 {
		t.Fatalf("init: %d %q", code, stderr)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var runErr syncBuffer
	go func() {
		// No health sweep during the test: the first task finds Calamari
		// missing rather than an automatic update racing it.
		done <- Run(ctx, []string{"run", "--data", dir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--health-interval", "1h"},
			Env{Stdout: &bytes.Buffer{}, Stderr: &runErr, Getenv: func(string) string { return "" }})
	}()
	t.Cleanup(func() {
		stop()
		if code := <-done; code != 0 {
			t.Errorf("run exited %d: %s", code, runErr.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for ri, err = api.ReadRunInfo(dir); err != nil; ri, err = api.ReadRunInfo(dir) {
		if time.Now().After(deadline) {
			t.Fatalf("coordinator did not start: %v\n%s", err, runErr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return ri
}

// startRealAgent enrolls and runs a real agent in the test process, with
// a token the commands create.
func startRealAgent(t *testing.T, dir, name, environment string) {
	t.Helper()
	code, join, stderr := cli(t, context.Background(), nil, "token", "create", "--data", dir, "--environment", environment)
	if code != 0 {
		t.Fatalf("token create: %d %q", code, stderr)
	}
	j, err := protocol.ParseJoin(join)
	if err != nil {
		t.Fatal(err)
	}
	servertest.StartAgent(t, servertest.Agent{Name: name, Join: j, MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
}

// TestCalamariAndTasksEndToEnd drives the calamari and task commands
// against a real coordinator and a real agent, over loopback TLS.
func TestCalamariAndTasksEndToEnd(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the test bundle's entry point is a shell script")
	}
	dir, _ := startCoordinatorCmd(t)
	bg := context.Background()
	data := []string{"--data", dir}
	// run adds --data before any "--": what follows it is Calamari's.
	run := func(args ...string) (int, string, string) {
		t.Helper()
		dash := slices.Index(args, "--")
		if dash < 0 {
			dash = len(args)
		}
		return cli(t, bg, nil, slices.Concat(args[:dash], data, args[dash:])...)
	}

	if code, stdout, _ := run("calamari", "list"); code != 0 || !strings.HasPrefix(stdout, "No Calamari bundles yet.") {
		t.Fatalf("calamari list before push: %d %q", code, stdout)
	}
	notBundle := writeTempFile(t, "calamari-9.9.9.tar.gz", []byte("not a bundle"))
	if code, _, stderr := run("calamari", "push", notBundle); code != 1 ||
		!strings.HasPrefix(stderr, "tendril-server: upload calamari: not a valid Calamari bundle") || !strings.HasSuffix(stderr, "(HTTP 400)\n") {
		t.Fatalf("push of a non-bundle: %d %q", code, stderr)
	}
	if code, _, stderr := run("task", "run", "--agent", "ghost", "--", "run-script", "--inline", "true"); code != 1 ||
		stderr != "tendril-server: create task: no agent named \"ghost\"; nothing was started (see tendril-server agents list) (HTTP 404)\n" {
		t.Fatalf("task run on an unknown agent: %d %q", code, stderr)
	}

	startRealAgent(t, dir, "web-1", "Test")
	// Checked, not only connected: the first health check of a new
	// session, were it to come after the push below, would install
	// Calamari by itself, and the first task would find it current.
	waitFor(t, "web-1 connected and checked", func() bool {
		_, stdout, _ := run("agents", "list", "--json")
		return strings.Contains(stdout, `"connected": true`) && strings.Contains(stdout, `"health": "healthy"`)
	})

	b := servertest.CalamariBundle(t, "1.0.0", 0)
	if code, stdout, stderr := run("calamari", "push", b); code != 0 || stdout != "stored Calamari 1.0.0 (latest)\n" {
		t.Fatalf("push: %d %q %q", code, stdout, stderr)
	}
	if code, stdout, _ := run("calamari", "push", b); code != 0 || stdout != "Calamari 1.0.0 was already stored\n" {
		t.Fatalf("push again: %d %q", code, stdout)
	}
	if code, stdout, _ := run("calamari", "list"); code != 0 || !strings.Contains(stdout, "1.0.0    yes     "+runtime.GOOS+"/"+runtime.GOARCH) {
		t.Fatalf("calamari list: %d %q", code, stdout)
	}

	// The first task installs Calamari, says so in its log, and exits
	// with the script's code.
	code, stdout, stderr := run("task", "run", "--agent", "web-1", "--", "run-script", "--inline", "echo hello; echo oops >&2; exit 3")
	if code != 3 || !strings.Contains(stdout, "Calamari on web-1 is out of date (") || !strings.Contains(stdout, "installing 1.0.0") ||
		!strings.Contains(stdout, "\nhello\n") || !strings.Contains(stdout, "\noops\n") || !strings.HasSuffix(stdout, "Task failed (exit code 3)\n") {
		t.Fatalf("task run: %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(strings.SplitN(stderr, "\n", 2)[0], "task "), " on web-1")
	if want := "task " + id + " on web-1\ntendril-server: task " + id + " on web-1 failed (exit code 3)\n"; stderr != want {
		t.Fatalf("task run stderr: got %q, want %q", stderr, want)
	}
	if code, out, _ := run("task", "show", id); code != 0 || !strings.Contains(out, "State:     failed (exit code 3)\n") || !strings.HasSuffix(out, stdout) {
		t.Fatalf("task show: %d\n%s", code, out)
	}

	if code, stdout, _ := run("calamari", "update", "--agent", "web-1"); code != 0 || stdout != "web-1  current\n" {
		t.Fatalf("calamari update: %d %q", code, stdout)
	}
	_, stdout, _ = run("agents", "list", "--json")
	var agents []api.AgentView
	if json.Unmarshal([]byte(stdout), &agents) != nil || len(agents) != 1 || agents[0].CalamariVersion != "1.0.0" || !agents[0].CalamariCurrent {
		t.Fatalf("agents after the update: %s", stdout)
	}

	// Ctrl-C stops following, not the task; show --follow picks it up.
	ctx, interrupt := context.WithCancel(bg)
	defer interrupt()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"task", "run", "--agent", "web-1", "--data", dir, "--", "run-script", "--inline", "echo start; sleep 1; echo end"},
			Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }})
	}()
	waitFor(t, "the first line", func() bool { return strings.Contains(out.String(), "start\n") })
	interrupt()
	if code := <-done; code != 130 || !strings.Contains(errOut.String(), " keeps running; see it with: tendril-server task show ") {
		t.Fatalf("interrupted task run: %d %q", code, errOut.String())
	}
	id = strings.TrimSuffix(strings.TrimPrefix(strings.SplitN(errOut.String(), "\n", 2)[0], "task "), " on web-1")
	if code, out, stderr := run("task", "show", id, "--follow"); code != 0 || !strings.Contains(out, "start\nend\n") || !strings.HasSuffix(out, "Task succeeded (exit code 0)\n") {
		t.Fatalf("task show --follow after the interrupt: %d %q %q", code, out, stderr)
	}
	if code, stdout, _ := run("task", "list", "--agent", "web-1"); code != 0 || strings.Count(stdout, "\n") != 3 || !strings.Contains(stdout, id+"  web-1  succeeded  0") {
		t.Fatalf("task list: %d\n%s", code, stdout)
	}
}

// waitFor waits for ok, long enough for a coordinator and agents running
// in the test process.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	servertest.WaitFor(t, 20*time.Second, what, ok)
}
