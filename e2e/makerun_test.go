package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/internal/servertest"
)

// TestMakeRunKeepsKeysFromTasks runs scripts/run.sh (make run) as root in
// a copy of the repository's layout: the agent runs as a user of its own,
// with its home outside the data folder, and a task it runs cannot read
// the coordinator's admin.key, which the same task as root could. Run by
// anyone else the script says why tasks can read the keys (the other
// branch of its decision); that branch is not run here, since the test
// needs root to create the agent's user.
func TestMakeRunKeepsKeysFromTasks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("make run gives the agent a user of its own only when run as root")
	}
	for _, tool := range []string{"useradd", "runuser", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: %v", tool, err)
		}
	}
	// A user of the test's own, removed afterwards: the default
	// tendril-agent may belong to a real installation.
	user := fmt.Sprintf("tdl-e2e-%d", os.Getpid()%100000)
	t.Cleanup(func() { exec.Command("userdel", user).Run() })

	root := t.TempDir()
	// t.TempDir's folders are 0700: the agent's user must reach its home
	// inside, as it reaches a checkout under /home or /work.
	for d := root; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	for _, f := range []struct{ from, to string }{
		{filepath.Join(moduleRoot(), "scripts", "run.sh"), "scripts/run.sh"},
		{binPath("tendril-server"), "bin/tendril-server"},
		{binPath("tendril-agent"), "bin/tendril-agent"},
		{binPath("calamari.tar.gz"), "dist/calamari-" + testVersion + ".tar.gz"},
	} {
		copyFile(t, f.from, filepath.Join(root, f.to))
	}
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "run.sh"))
	cmd.Env = append(cleanEnv(), "VERSION="+testVersion, "TENDRIL_AGENT_USER="+user,
		"TENDRIL_LISTEN="+servertest.FreeAddr(t), "TENDRIL_HTTP="+servertest.FreeAddr(t))
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("make run:\n%s", out.String())
		}
	})
	waitFor(t, "make run to say Tendril is running", func() bool {
		select {
		case <-done:
			t.Fatalf("make run exited:\n%s", out.String())
		default:
		}
		return strings.Contains(out.String(), "Tendril is running.")
	})

	data := filepath.Join(root, "data")
	home := filepath.Join(root, "agent-home")
	key, err := os.ReadFile(filepath.Join(data, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(data); err != nil || st.Mode().Perm() != 0o700 || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("data folder: got %v (%v), want 0700 owned by root", st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Join(home, "agent.json")); err != nil || fmt.Sprint(st.Sys().(*syscall.Stat_t).Uid) != strings.TrimSpace(string(mustOutput(t, "id", "-u", user))) {
		t.Errorf("agent home: agent.json is not the agent user's (%v)", err)
	}
	name := strings.TrimSpace(string(mustOutput(t, "sed", "-nE", `s/^ *"name": *"([^"]*)".*/\1/p`, filepath.Join(home, "agent.json"))))
	stdout, stderr, code := runCode(t, "tendril-server", "task", "run", "--agent", name, "--data", data, "--",
		"run-script", "--inline", "id -un; cat "+filepath.Join(data, "admin.key"))
	if code == 0 || !strings.Contains(stdout+stderr, user) || !strings.Contains(stdout+stderr, "Permission denied") ||
		strings.Contains(stdout+stderr, strings.TrimSpace(string(key))) {
		t.Fatalf("a task reading admin.key: exit %d, want it refused, run as %s\nstdout %s\nstderr %s", code, user, stdout, stderr)
	}
}

// syncBuffer is a bytes.Buffer written by a process and read by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
