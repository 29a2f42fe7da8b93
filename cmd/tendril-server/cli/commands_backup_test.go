package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/server/datadir"
)

// TestMaintenanceBackupRestoreCommands drains a coordinator that runs a
// task, backs it up while it runs, and restores the backup, all through
// the commands, against a real coordinator and agent.
func TestMaintenanceBackupRestoreCommands(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the test bundle's entry point is a shell script")
	}
	old := drainPoll
	drainPoll = 20 * time.Millisecond
	t.Cleanup(func() { drainPoll = old })
	dir, _ := startCoordinatorCmd(t)
	bg := context.Background()
	run := func(args ...string) (int, string, string) {
		t.Helper()
		// --data goes right after the command, before any "--".
		return cli(t, bg, nil, append([]string{args[0], "--data", dir}, args[1:]...)...)
	}
	startRealAgent(t, dir, "web-1", "Test")
	waitFor(t, "web-1 connected", func() bool {
		_, stdout, _ := run("agents", "list", "--json")
		return strings.Contains(stdout, `"connected": true`)
	})
	if code, _, stderr := run("calamari", "push", servertest.CalamariBundle(t, "1.0.0", 0)); code != 0 {
		t.Fatalf("push: %d %q", code, stderr)
	}
	if code, stdout, _ := run("maintenance", "status"); code != 0 || !strings.HasPrefix(stdout, "Maintenance mode is off.\n") {
		t.Fatalf("status: %d %q", code, stdout)
	}

	gate := filepath.Join(t.TempDir(), "gate")
	code, stdout, stderr := run("task", "run", "--agent", "web-1", "--json", "--", "run-script", "--inline",
		`echo started; while [ ! -e `+gate+` ]; do sleep 0.05; done`)
	if code != 0 {
		t.Fatalf("task run: %d %q", code, stderr)
	}
	var tasks []api.TaskView
	if err := json.Unmarshal([]byte(stdout), &tasks); err != nil || len(tasks) != 1 {
		t.Fatalf("task run --json: %q", stdout)
	}
	waitFor(t, "task running", func() bool {
		_, out, _ := run("task", "show", tasks[0].ID)
		return strings.Contains(out, "started")
	})

	var waitOut, waitErr syncBuffer
	waited := make(chan int, 1)
	go func() {
		waited <- Run(bg, []string{"maintenance", "on", "--wait", "--data", dir},
			Env{Stdout: &waitOut, Stderr: &waitErr, Getenv: func(string) string { return "" }})
	}()
	waitFor(t, "the drain to report the running task", func() bool {
		return strings.Contains(waitErr.String(), "Waiting: 1 task still running, 0 queued\n")
	})
	code, _, stderr = run("task", "run", "--agent", "web-1", "--", "run-script", "--inline", "true")
	if code != 1 || !strings.Contains(stderr, "the coordinator is in maintenance mode; no new tasks start (turn it off with: tendril-server maintenance off) (HTTP 409)") {
		t.Fatalf("task during maintenance: %d %q", code, stderr)
	}

	// Backup while the coordinator runs (and a task with it).
	pass := writeTempFile(t, "pass", []byte("s3cret phrase\n"))
	out := filepath.Join(t.TempDir(), "backup.tar.gz")
	if code, stdout, stderr := run("backup", "--out", out, "--passphrase-file", pass); code != 0 || !strings.HasPrefix(stdout, "Backed up ") {
		t.Fatalf("backup: %d %q %q", code, stdout, stderr)
	}
	if code, _, stderr := run("backup", "--passphrase-file", pass); code != 2 || !strings.Contains(stderr, "--out") {
		t.Fatalf("backup without --out: %d %q", code, stderr)
	}

	os.WriteFile(gate, nil, 0o644)
	select {
	case code := <-waited:
		if code != 0 || !strings.HasPrefix(waitOut.String(), "Maintenance mode is on since ") || !strings.Contains(waitErr.String(), "Drained") {
			t.Fatalf("maintenance on --wait: %d %q %q", code, waitOut.String(), waitErr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("maintenance on --wait did not return after the task finished")
	}
	code, stdout, _ = run("maintenance", "status", "--json")
	var v api.MaintenanceView
	if code != 0 || json.Unmarshal([]byte(stdout), &v) != nil || !v.On || !v.Drained() {
		t.Fatalf("status --json: %d %q", code, stdout)
	}
	if code, stdout, _ := run("maintenance", "off"); code != 0 || !strings.HasPrefix(stdout, "Maintenance mode is off.") {
		t.Fatalf("off: %d %q", code, stdout)
	}

	target := filepath.Join(t.TempDir(), "restored")
	restore := func(data, passFile string, extra ...string) (int, string, string) {
		return cli(t, bg, nil, append([]string{"restore", "--in", out, "--data", data, "--passphrase-file", passFile}, extra...)...)
	}
	wrong := writeTempFile(t, "wrong", []byte("not it"))
	for _, tt := range []struct {
		name, data, pass, want string
	}{
		{"wrong passphrase", target, wrong, "wrong passphrase or damaged backup"},
		{"running coordinator", dir, pass, "stop the coordinator first"},
	} {
		if code, _, stderr := restore(tt.data, tt.pass); code != 1 || !strings.Contains(stderr, tt.want) {
			t.Errorf("restore, %s: %d %q", tt.name, code, stderr)
		}
	}
	code, stdout, stderr = restore(target, pass)
	thumb, _ := datadir.ReadThumbprint(dir)
	if code != 0 || !strings.Contains(stdout, "Thumbprint: "+thumb+"\n") {
		t.Fatalf("restore: %d %q %q", code, stdout, stderr)
	}
	if code, _, stderr := restore(target, pass); code != 1 || !strings.Contains(stderr, "is not empty") {
		t.Fatalf("restore into the restored folder: %d %q", code, stderr)
	}
	if code, _, stderr := restore(target, pass, "--force"); code != 0 {
		t.Fatalf("restore --force: %d %q", code, stderr)
	}
}
