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
	"github.com/tendrildeploy/tendril/internal/servertest"
)

// fleet is a coordinator with agents installed the way an operator
// installs them: each binary in a folder of its own that it may replace.
type fleet struct {
	t          *testing.T
	data       string
	serverArgs []string
	server     *daemon
	proxy      *faultproxy.Proxy // between the agents and the coordinator
	join       func() string     // a fresh join string
	agents     []*install
	// home and exe are the first agent's.
	home string
	exe  string
	// httpAddr is the coordinator's HTTP listener.
	httpAddr string
	// register gives the register command's arguments that say how an
	// agent reaches the coordinator, from a fresh join string.
	register func(join string) []string
	// enroll registers an installed agent; default: register with the
	// arguments register gives.
	enroll func(in *install)
	// start runs an installed agent binary; default: on this host.
	start func(exe string, args ...string) *daemon
}

// install is one installed agent.
type install struct {
	name, home, exe string
}

func newFleet(t *testing.T, agentVersion string) *fleet {
	t.Helper()
	return newFleetVia(t, agentVersion, nil)
}

// newFleetVia is newFleet whose agents register with the arguments via
// gives (how they reach the coordinator); nil means the join string.
func newFleetVia(t *testing.T, agentVersion string, via func(f *fleet, join string) []string) *fleet {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the upgrade tests exercise the Unix re-exec path")
	}
	f := &fleet{t: t, data: filepath.Join(t.TempDir(), "data")}
	f.register = func(join string) []string { return []string{"--join", join} }
	if via != nil {
		f.register = func(join string) []string { return via(f, join) }
	}
	f.enroll = func(in *install) {
		args := append([]string{"register", "--home", in.home, "--name", in.name}, f.register(f.join())...)
		if out, err := exec.Command(in.exe, args...).CombinedOutput(); err != nil {
			t.Fatalf("register %s: %v\n%s", in.name, err, out)
		}
	}
	f.start = func(exe string, args ...string) *daemon { return startPath(t, exe, args...) }
	return f.init(agentVersion)
}

// init starts the coordinator, installs the first agent and stores the
// agent packages.
func (f *fleet) init(agentVersion string) *fleet {
	t := f.t
	t.Helper()
	mustRun(t, "tendril-server", "init", "--data", f.data)
	agentAddr := servertest.FreeAddr(t)
	f.httpAddr = servertest.FreeAddr(t)
	f.serverArgs = []string{"run", "--data", f.data, "--listen", agentAddr, "--http", f.httpAddr, "--health-interval", "1s"}
	f.server = start(t, "tendril-server", f.serverArgs...)
	waitFor(t, "coordinator API", func() bool { return listAgents(t, f.data) != nil })
	proxy, err := faultproxy.New(agentAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	f.proxy = proxy
	f.join = func() string {
		return strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", f.data, "--environment", "Production", "--server", proxy.Addr()))
	}
	first := f.addAgent("web-1", agentVersion)
	f.home, f.exe = first.home, first.exe
	for _, v := range []string{"2.0.0", "2.1.0-exits", "2.2.0-hangs"} {
		version, _, _ := strings.Cut(v, "-")
		mustRun(t, "tendril-server", "agent-package", "push", "--version", version, "--os", runtime.GOOS, "--arch", runtime.GOARCH,
			filepath.Join(binDir, "agent-"+v), "--data", f.data)
	}
	return f
}

// addAgent installs and registers one more agent (not started).
func (f *fleet) addAgent(name, version string) *install {
	t := f.t
	t.Helper()
	in := &install{name: name, home: filepath.Join(t.TempDir(), "home"), exe: filepath.Join(t.TempDir(), "bin", "tendril-agent")}
	copyFile(t, filepath.Join(binDir, "agent-"+version), in.exe)
	f.enroll(in)
	// Whatever the test leaves running under this home (an agent the
	// watchdog started, say) is stopped at the end.
	t.Cleanup(func() { killHomeAgent(in.home) })
	f.agents = append(f.agents, in)
	return in
}

// version returns what the coordinator lists for an agent ("" if it is
// not connected).
func (f *fleet) version(name string) string {
	for _, r := range listAgents(f.t, f.data) {
		if r.Name == name && r.Connected {
			return r.Version
		}
	}
	return ""
}

// rollout reads a rollout through the command line.
func (f *fleet) rollout(id string) rolloutView {
	var v rolloutView
	out, err := run(f.t, "tendril-server", "rollout", "show", id, "--data", f.data, "--json")
	if err == nil {
		json.Unmarshal([]byte(out), &v)
	}
	return v
}

type rolloutView struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Reason string `json:"reason"`
	Agents []struct {
		Agent  string `json:"agent"`
		State  string `json:"state"`
		Reason string `json:"reason"`
	} `json:"agents"`
}

// startRollout starts an upgrade without waiting and returns its id.
func (f *fleet) startRollout(version string, extra ...string) string {
	t := f.t
	t.Helper()
	args := append([]string{"upgrade", "--environment", "Production", "--version", version, "--data", f.data, "--json"}, extra...)
	var v rolloutView
	if err := json.Unmarshal([]byte(mustRun(t, "tendril-server", args...)), &v); err != nil || v.ID == "" {
		t.Fatalf("upgrade --json: no rollout id (%v)", err)
	}
	return v.ID
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
func (f *fleet) connectedAt(v string) bool { return f.version("web-1") == v }

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

func TestUpgradeWaitsForRunningTask(t *testing.T) {
	f := newFleet(t, "1.0.0")
	startPath(t, f.exe, "run", "--home", f.home)
	waitFor(t, "web-1 at 1.0.0", func() bool { return f.connectedAt("1.0.0") })
	mustRun(t, "tendril-server", "calamari", "push", filepath.Join(binDir, "calamari.tar.gz"), "--data", f.data)
	// A deployment that runs until the test lets it finish.
	gate := filepath.Join(t.TempDir(), "gate")
	type result struct {
		stdout string
		code   int
	}
	taskDone := make(chan result, 1)
	go func() {
		stdout, _, code := runCode(t, "tendril-server", "task", "run", "--agent", "web-1", "--data", f.data, "--",
			"run-script", "--inline", "echo deploying; while [ ! -e "+gate+" ]; do sleep 0.1; done; echo deployed")
		taskDone <- result{stdout, code}
	}()
	waitFor(t, "the deployment running", func() bool {
		out, _ := run(t, "tendril-server", "task", "list", "--data", f.data, "--json")
		return strings.Contains(out, `"state": "running"`) || strings.Contains(out, `"state":"running"`)
	})
	id := f.startRollout("2.0.0", "--grace", "30s")
	waitFor(t, "the rollout waiting for idle", func() bool {
		v := f.rollout(id)
		return len(v.Agents) == 1 && v.Agents[0].State == "waiting_for_idle"
	})
	// It keeps waiting: nothing is sent while the deployment runs.
	for range 10 {
		if upgradePhase(f.home) != "" || f.installedVersion() != "1.0.0" {
			t.Fatal("the upgrade started while a deployment was running")
		}
		time.Sleep(100 * time.Millisecond)
	}
	os.WriteFile(gate, nil, 0o644)
	res := <-taskDone
	if res.code != 0 || !strings.Contains(res.stdout, "deployed") {
		t.Fatalf("the deployment: exit %d, output %q; want it to finish untouched", res.code, res.stdout)
	}
	waitFor(t, "the rollout to succeed after the deployment", func() bool { return f.rollout(id).State == "succeeded" })
	waitFor(t, "web-1 at 2.0.0", func() bool { return f.connectedAt("2.0.0") })
}

func TestRolloutContinuesAfterCoordinatorKill(t *testing.T) {
	f := newFleet(t, "1.0.0")
	f.addAgent("web-2", "1.0.0")
	for _, a := range f.agents {
		startPath(t, a.exe, "run", "--home", a.home)
	}
	waitFor(t, "both agents at 1.0.0", func() bool { return f.version("web-1") == "1.0.0" && f.version("web-2") == "1.0.0" })
	// Hold the first agent's new version off the coordinator, so the
	// rollout is mid-way (one agent awaiting reconnect, one queued) when
	// the coordinator is killed.
	f.proxy.SetRefuse(true)
	id := f.startRollout("2.0.0", "--batch", "1", "--grace", "60s")
	waitFor(t, "one agent awaiting reconnect", func() bool {
		for _, a := range f.rollout(id).Agents {
			if a.State == "awaiting_reconnect" {
				return true
			}
		}
		return false
	})
	f.server.kill()
	f.server = start(t, "tendril-server", f.serverArgs...)
	f.proxy.SetRefuse(false)
	waitFor(t, "the rollout to finish after the restart", func() bool { s := f.rollout(id).State; return s == "succeeded" || s == "halted" })
	if v := f.rollout(id); v.State != "succeeded" {
		t.Fatalf("rollout after a coordinator kill: got %s (%s)", v.State, v.Reason)
	}
	waitFor(t, "both agents at 2.0.0", func() bool { return f.version("web-1") == "2.0.0" && f.version("web-2") == "2.0.0" })
}

func TestRolloutBatchesRealAgents(t *testing.T) {
	f := newFleet(t, "1.0.0")
	for i := 2; i <= 5; i++ {
		f.addAgent("web-"+strconv.Itoa(i), "1.0.0")
	}
	for _, a := range f.agents {
		startPath(t, a.exe, "run", "--home", a.home)
	}
	waitFor(t, "five agents at 1.0.0", func() bool {
		for _, a := range f.agents {
			if f.version(a.name) != "1.0.0" {
				return false
			}
		}
		return true
	})
	id := f.startRollout("2.0.0", "--batch", "2")
	most := 0
	waitFor(t, "the rollout to finish", func() bool {
		v := f.rollout(id)
		n := 0
		for _, a := range v.Agents {
			switch a.State {
			case "sending", "installing", "awaiting_reconnect":
				n++
			}
		}
		most = max(most, n)
		return v.State == "succeeded" || v.State == "halted"
	})
	if v := f.rollout(id); v.State != "succeeded" {
		t.Fatalf("rollout: got %s (%s)", v.State, v.Reason)
	}
	if most > 2 {
		t.Fatalf("saw %d agents upgrading at once, want at most 2 (--batch 2)", most)
	}
	for _, a := range f.agents {
		a := a
		waitFor(t, a.name+" at 2.0.0", func() bool { return f.version(a.name) == "2.0.0" })
	}
}
