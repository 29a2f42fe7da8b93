package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/internal/servertest"
)

// runCode runs a command and returns stdout, stderr and the exit code.
func runCode(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, bin), args...)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// tarGz writes a package holding the given files.
func tarGz(t *testing.T, path string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDeploymentJourney(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	mustRun(t, "tendril-server", "init", "--data", data)
	start(t, "tendril-server", "run", "--data", data, "--listen", servertest.FreeAddr(t), "--http", servertest.FreeAddr(t), "--health-interval", "1s")
	waitFor(t, "coordinator API", func() bool { return listAgents(t, data) != nil })
	join := strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", data, "--environment", "Production"))
	// A relative home, as an operator might type it: nothing the agent
	// runs may depend on its working directory.
	t.Chdir(t.TempDir())
	mustRun(t, "tendril-agent", "register", "--home", "agent", "--join", join, "--name", "web-1")
	start(t, "tendril-agent", "run", "--home", "agent")
	home, _ := filepath.Abs("agent")
	waitFor(t, "web-1 healthy", func() bool { return healthy(listAgents(t, data), "web-1") })

	// Upload the real Calamari bundle; the health check installs it.
	out := mustRun(t, "tendril-server", "calamari", "push", filepath.Join(binDir, "calamari.tar.gz"), "--data", data)
	if !strings.Contains(out, "stored Calamari "+testVersion) {
		t.Fatalf("calamari push printed %q", out)
	}
	waitFor(t, "Calamari installed on web-1", func() bool {
		rows := listAgents(t, data)
		return len(rows) == 1 && rows[0].CalamariVersion == testVersion && rows[0].CalamariCurrent
	})
	if _, err := os.Stat(filepath.Join(home, "Calamari", testVersion, "Success.txt")); err != nil {
		t.Fatalf("Success.txt: %v", err)
	}

	// A script, its output streamed, its exit code passed through.
	stdout, stderr, code := runCode(t, "tendril-server", "task", "run", "--agent", "web-1", "--data", data, "--",
		"run-script", "--inline", `echo "hello from $TENDRIL_TICKET"`)
	if code != 0 || !strings.Contains(stdout, "hello from ") {
		t.Fatalf("task run: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, _, code := runCode(t, "tendril-server", "task", "run", "--agent", "web-1", "--data", data, "--", "run-script", "--inline", "exit 3"); code != 3 {
		t.Fatalf("failing script: exit %d, want 3", code)
	}

	// Deploy a package twice: each goes to a new release and 'current'
	// moves.
	site := filepath.Join(t.TempDir(), "site")
	for i, body := range []string{"version one", "version two"} {
		pkg := filepath.Join(t.TempDir(), "app.tar.gz")
		tarGz(t, pkg, map[string]string{"index.html": body})
		stdout, stderr, code := runCode(t, "tendril-server", "task", "run", "--agent", "web-1", "--data", data, "--file", pkg, "--",
			"deploy-package", "--package", "app.tar.gz", "--target", site)
		if code != 0 {
			t.Fatalf("deploy %d: exit %d\nstdout %s\nstderr %s", i+1, code, stdout, stderr)
		}
		got, err := os.ReadFile(filepath.Join(site, "current", "index.html"))
		if err != nil || string(got) != body {
			t.Fatalf("deploy %d: current/index.html is %q (%v), want %q", i+1, got, err, body)
		}
	}
	if releases, _ := os.ReadDir(filepath.Join(site, "releases")); len(releases) != 2 {
		t.Fatalf("releases: got %d, want 2", len(releases))
	}

	// The task history and log are in the API.
	var tasks []struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "tendril-server", "task", "list", "--data", data, "--json")), &tasks); err != nil || len(tasks) != 4 {
		t.Fatalf("task list --json: %d tasks (%v), want 4", len(tasks), err)
	}
	show := mustRun(t, "tendril-server", "task", "show", tasks[len(tasks)-1].ID, "--data", data)
	if !strings.Contains(show, "hello from") {
		t.Fatalf("task show of the first task lacks its output:\n%s", show)
	}

	// A quarantined file is noticed and repaired.
	victim := filepath.Join(home, "Calamari", testVersion, "manifest.json")
	entries, _ := os.ReadDir(filepath.Join(home, "Calamari", testVersion))
	for _, e := range entries {
		if e.IsDir() {
			victim = filepath.Join(home, "Calamari", testVersion, e.Name(), "calamari")
		}
	}
	if err := os.Remove(victim); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the quarantined file restored", func() bool { _, err := os.Stat(victim); return err == nil })
	if _, _, code := runCode(t, "tendril-server", "task", "run", "--agent", "web-1", "--data", data, "--", "run-script", "--inline", "true"); code != 0 {
		t.Fatalf("task after repair: exit %d", code)
	}
}
