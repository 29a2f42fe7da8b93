package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/internal/faultproxy"
)

// fleet is a coordinator with one agent installed the way an operator
// installs it: its binary in a folder of its own that it may replace.
type fleet struct {
	t     *testing.T
	data  string
	home  string
	exe   string            // the installed agent binary
	proxy *faultproxy.Proxy // between the agent and the coordinator
}

func newFleet(t *testing.T, agentVersion string) *fleet {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the upgrade tests exercise the Unix re-exec path")
	}
	f := &fleet{t: t, data: filepath.Join(t.TempDir(), "data"), home: filepath.Join(t.TempDir(), "home")}
	f.exe = filepath.Join(t.TempDir(), "bin", "tendril-agent")
	copyFile(t, filepath.Join(binDir, "agent-"+agentVersion), f.exe)
	mustRun(t, "tendril-server", "init", "--data", f.data)
	agentAddr := freePort(t)
	start(t, "tendril-server", "run", "--data", f.data, "--listen", agentAddr, "--http", freePort(t), "--health-interval", "1s")
	waitFor(t, "coordinator API", func() bool { return listAgents(t, f.data) != nil })
	proxy, err := faultproxy.New(agentAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	f.proxy = proxy
	join := strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", f.data, "--environment", "Production", "--server", proxy.Addr()))
	if out, err := exec.Command(f.exe, "register", "--home", f.home, "--join", join, "--name", "web-1").CombinedOutput(); err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	// Whatever the test leaves running under this home (an agent the
	// watchdog started, say) is stopped at the end.
	t.Cleanup(func() { killHomeAgent(f.home) })
	for _, v := range []string{"2.0.0", "2.1.0-exits", "2.2.0-hangs"} {
		version, _, _ := strings.Cut(v, "-")
		mustRun(t, "tendril-server", "agent-package", "push", "--version", version, "--os", runtime.GOOS, "--arch", runtime.GOARCH,
			filepath.Join(binDir, "agent-"+v), "--data", f.data)
	}
	return f
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// killHomeAgent kills the agent holding the home's lock, if any.
func killHomeAgent(home string) {
	b, err := os.ReadFile(filepath.Join(home, "agent.lock"))
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// installedVersion is what the binary on disk says it is.
func (f *fleet) installedVersion() string {
	out, err := exec.Command(f.exe, "version", "--json").Output()
	if err != nil {
		return "missing: " + err.Error()
	}
	var v struct{ Version string }
	json.Unmarshal(out, &v)
	return v.Version
}

// connectedAt reports whether the coordinator lists web-1 connected at v.
func (f *fleet) connectedAt(v string) bool {
	rows := listAgents(f.t, f.data)
	return len(rows) == 1 && rows[0].Connected && rows[0].Version == v
}

// upgrade runs the rollout command and returns its exit code and output.
func (f *fleet) upgrade(version string, extra ...string) (int, string) {
	args := append([]string{"upgrade", "--environment", "Production", "--version", version, "--grace", "5s", "--wait", "--data", f.data}, extra...)
	stdout, stderr, code := runCode(f.t, "tendril-server", args...)
	return code, stdout + stderr
}

// supervisor restarts the agent whenever it exits, as a service manager
// configured to restart on failure does.
type supervisor struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	done    chan struct{}
	log     bytes.Buffer
}

func supervise(t *testing.T, exe string, args ...string) *supervisor {
	s := &supervisor{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			cmd := exec.Command(exe, args...)
			cmd.Stdout, cmd.Stderr = &lockedWriter{s: s}, &lockedWriter{s: s}
			s.mu.Lock()
			if s.stopped {
				s.mu.Unlock()
				return
			}
			err := cmd.Start()
			s.cmd = cmd
			s.mu.Unlock()
			if err == nil {
				cmd.Wait()
			}
			time.Sleep(200 * time.Millisecond) // restart delay, as RestartSec= would
		}
	}()
	t.Cleanup(func() {
		s.mu.Lock()
		s.stopped = true
		if s.cmd != nil && s.cmd.Process != nil {
			s.cmd.Process.Kill()
		}
		s.mu.Unlock()
		<-s.done
		if t.Failed() {
			t.Logf("supervised agent log:\n%s", s.log.String())
		}
	})
	return s
}

func (s *supervisor) kill9() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGKILL)
	}
}

type lockedWriter struct{ s *supervisor }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.log.Write(p)
}

var _ io.Writer = (*lockedWriter)(nil)

func TestUpgradeSucceeds(t *testing.T) {
	f := newFleet(t, "1.0.0")
	agent := startPath(t, f.exe, "run", "--home", f.home) // in the foreground, as a person runs it
	waitFor(t, "web-1 at 1.0.0", func() bool { return f.connectedAt("1.0.0") })
	if rows := listAgents(t, f.data); rows[0].Upgrade != "recommended" {
		t.Fatalf("upgrade column before: got %q, want recommended", rows[0].Upgrade)
	}
	code, out := f.upgrade("2.0.0")
	if code != 0 {
		t.Fatalf("upgrade --wait: exit %d\n%s", code, out)
	}
	if got := f.installedVersion(); got != "2.0.0" {
		t.Fatalf("binary on disk: got %s, want 2.0.0", got)
	}
	waitFor(t, "web-1 at 2.0.0", func() bool { return f.connectedAt("2.0.0") })
	// Re-exec kept the process: the one the operator started is still it.
	if agent.exited() {
		t.Fatal("the agent process the operator started has exited; re-exec should have kept it")
	}
	// Newer packages are stored (the broken 2.1.0 and 2.2.0), so an
	// upgrade is still recommended, to the newest.
	if rows := listAgents(t, f.data); rows[0].Upgrade != "recommended" || rows[0].UpgradeTo != "2.2.0" {
		t.Fatalf("upgrade column after: got %q to %q, want recommended to 2.2.0", rows[0].Upgrade, rows[0].UpgradeTo)
	}
}

func TestBrokenReleaseIsRolledBack(t *testing.T) {
	for _, broken := range []string{"2.1.0", "2.2.0"} { // exits at once; never connects
		t.Run(broken, func(t *testing.T) {
			f := newFleet(t, "1.0.0")
			startPath(t, f.exe, "run", "--home", f.home)
			waitFor(t, "web-1 at 1.0.0", func() bool { return f.connectedAt("1.0.0") })
			code, out := f.upgrade(broken)
			if code == 0 {
				t.Fatalf("upgrade to a broken release exited 0, want a halted rollout\n%s", out)
			}
			if !strings.Contains(out, "rolled_back") && !strings.Contains(out, "rolled back") {
				t.Fatalf("upgrade output does not say the agent was rolled back:\n%s", out)
			}
			waitFor(t, "web-1 back at 1.0.0", func() bool { return f.connectedAt("1.0.0") })
			if got := f.installedVersion(); got != "1.0.0" {
				t.Fatalf("binary on disk: got %s, want the restored 1.0.0", got)
			}
		})
	}
}

func TestKillDuringUpgradeNeverLeavesNoAgent(t *testing.T) {
	// The swap and the commit follow each other within milliseconds. To
	// stop at a step reliably, new connections are refused during the
	// upgrade: the package still arrives over the live session, but the
	// new version cannot commit until the proxy lets it through.
	steps := []struct {
		name string
		hold bool // refuse new connections during the upgrade
		when func(f *fleet) bool
	}{
		{"after receive", false, func(f *fleet) bool { return upgradePhase(f.home) != "" }},
		{"after swap", true, func(f *fleet) bool { return upgradePhase(f.home) == "swapped" }},
		{"before commit", true, func(f *fleet) bool {
			return upgradePhase(f.home) == "swapped" && f.installedVersion() == "2.0.0" && newVersionRunning(f.home)
		}},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			f := newFleet(t, "1.0.0")
			sup := supervise(t, f.exe, "run", "--home", f.home, "--supervised")
			waitFor(t, "web-1 at 1.0.0", func() bool { return f.connectedAt("1.0.0") })
			// Refusing new connections leaves the live session, which
			// carries the whole upgrade, alone.
			f.proxy.SetRefuse(step.hold)
			done := make(chan struct{})
			go func() { defer close(done); f.upgrade("2.0.0") }()
			waitFor(t, "the step "+step.name, func() bool { return step.when(f) })
			sup.kill9()
			f.proxy.SetRefuse(false)
			<-done
			// Old or new, but running, connected and matching its binary.
			var v string
			waitFor(t, "web-1 running and connected again", func() bool {
				rows := listAgents(t, f.data)
				if len(rows) != 1 || !rows[0].Connected || upgradePhase(f.home) == "swapped" {
					return false
				}
				v = rows[0].Version
				return v == "1.0.0" || v == "2.0.0"
			})
			if got := f.installedVersion(); got != v {
				t.Fatalf("connected at %s but the binary on disk is %s", v, got)
			}
		})
	}
}

// newVersionRunning reports whether the agent process recorded in the
// upgrade state runs the new binary (exec keeps the PID, so the process
// the state names is the one that was re-executed).
func newVersionRunning(home string) bool {
	b, err := os.ReadFile(filepath.Join(home, "Upgrade", "state.json"))
	if err != nil {
		return false
	}
	var st struct {
		PID int
		Exe string
	}
	json.Unmarshal(b, &st)
	exe, err := os.Readlink("/proc/" + strconv.Itoa(st.PID) + "/exe")
	return err == nil && exe == st.Exe
}

// upgradePhase reads the agent's upgrade state, "" if none.
func upgradePhase(home string) string {
	b, err := os.ReadFile(filepath.Join(home, "Upgrade", "state.json"))
	if err != nil {
		return ""
	}
	var st struct{ Phase string }
	json.Unmarshal(b, &st)
	return st.Phase
}
