package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// needSysV skips unless the host can install a real SysV service: Linux,
// root, and the init tooling present. CI runs as root.
func needSysV(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the service tests drive SysV init scripts, which only Linux has here")
	}
	if os.Geteuid() != 0 {
		t.Skip("the service tests install real services under /etc/init.d and need root (CI runs them as root)")
	}
	for _, p := range []string{"/etc/init.d", "/usr/sbin/service"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("no SysV init tooling on this host (%v)", err)
		}
	}
	if b, err := os.ReadFile("/proc/1/comm"); err == nil && strings.TrimSpace(string(b)) == "systemd" {
		t.Skip("PID 1 is systemd: kardianos would install a systemd unit, which these tests do not drive")
	}
}

// serviceName is a fresh name, so parallel runs and leftovers of a crashed
// run never collide.
func serviceName(t *testing.T) string {
	b := make([]byte, 4)
	rand.Read(b)
	return "tendril-e2e-" + hex.EncodeToString(b)
}

// agentService drives `tendril-agent service` for one installed agent.
type agentService struct {
	t          *testing.T
	exe, home  string
	name       string // "" for the default name
	nameOnDisk string // the name it is installed under
}

func newAgentService(t *testing.T, exe, home, name string) *agentService {
	s := &agentService{t: t, exe: exe, home: home, name: name, nameOnDisk: name}
	// Even when the test fails half-way, nothing stays installed.
	t.Cleanup(func() {
		s.run("stop")
		s.run("uninstall")
		if s.nameOnDisk != "" {
			for _, p := range leftovers(s.nameOnDisk) {
				os.Remove(p)
			}
		}
	})
	return s
}

// run runs `service ACTION --home HOME [--name NAME]` and returns its
// combined output and exit code.
func (s *agentService) run(action string, extra ...string) (string, int) {
	args := append([]string{"service", action, "--home", s.home}, extra...)
	if s.name != "" {
		args = append(args, "--name", s.name)
	}
	cmd := exec.Command(s.exe, args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			s.t.Fatalf("service %s: %v", action, err)
		}
		code = ee.ExitCode()
	}
	return strings.TrimSpace(string(out)), code
}

func (s *agentService) must(action string) string {
	s.t.Helper()
	out, code := s.run(action)
	if code != 0 {
		s.t.Fatalf("service %s: exit %d: %s", action, code, out)
	}
	return out
}

func (s *agentService) wantStatus(word string, code int) {
	s.t.Helper()
	out, got := s.run("status")
	if out != word || got != code {
		s.t.Fatalf("service status: got %q exit %d, want %q exit %d", out, got, word, code)
	}
}

// pid is the pid the init script's pid file names (0 if none).
func (s *agentService) pid() int {
	b, err := os.ReadFile("/var/run/" + s.nameOnDisk + ".pid")
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// wantPIDRuns checks that the pid file names a live process running the
// agent binary at exe.
func (s *agentService) wantPIDRuns(exe string) int {
	s.t.Helper()
	pid := s.pid()
	if pid <= 0 {
		s.t.Fatal("the init script's pid file names no process")
	}
	got, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil || strings.TrimSuffix(got, " (deleted)") != exe {
		s.t.Fatalf("pid file names %d, which runs %q (%v), want the agent %s", pid, got, err, exe)
	}
	return pid
}

// leftovers are the files a SysV service named name leaves, if any.
func leftovers(name string) []string {
	var left []string
	links, _ := filepath.Glob("/etc/rc?.d/*" + name)
	left = append(left, links...)
	for _, p := range []string{"/etc/init.d/" + name, "/var/run/" + name + ".pid"} {
		if _, err := os.Lstat(p); err == nil {
			left = append(left, p)
		}
	}
	return left
}

// serviceState is the service part of the agent's upgrade state.
func serviceState(home string) (service string, pid int) {
	b, _ := os.ReadFile(filepath.Join(home, "Upgrade", "state.json"))
	var st struct {
		Service string
		PID     int
	}
	json.Unmarshal(b, &st)
	return st.Service, st.PID
}

func TestAgentServiceLifecycleAndUpgrade(t *testing.T) {
	needSysV(t)
	f := newFleet(t, "1.0.0")
	s := newAgentService(t, f.exe, f.home, serviceName(t))

	s.wantStatus("not installed", 4)
	s.must("install")
	if _, err := os.Stat("/etc/init.d/" + s.name); err != nil {
		t.Fatalf("install wrote no init script: %v", err)
	}
	s.wantStatus("stopped", 3)

	s.must("start")
	s.wantStatus("running", 0)
	waitFor(t, "web-1 connected at 1.0.0 as a service", func() bool { return f.connectedAt("1.0.0") })
	first := s.wantPIDRuns(f.exe)
	if b, err := os.ReadFile(filepath.Join(f.home, "Logs", "agent.log")); err != nil || !bytes.Contains(b, []byte(`"msg":"agent starting"`)) {
		t.Fatalf("Logs/agent.log has no JSON start line (%v):\n%s", err, b)
	}

	s.must("restart")
	s.wantStatus("running", 0)
	if again := s.wantPIDRuns(f.exe); again == first {
		t.Fatalf("restart kept pid %d, want a new process", first)
	}
	waitFor(t, "web-1 connected after the restart", func() bool { return f.connectedAt("1.0.0") })

	// Stop is graceful and ends the session: the coordinator sees it go.
	s.must("stop")
	s.wantStatus("stopped", 3)
	waitFor(t, "web-1 disconnected after the stop", func() bool { return f.version("web-1") == "" })
	if _, err := os.Stat("/var/run/" + s.name + ".pid"); err == nil {
		t.Fatal("stop left the pid file")
	}

	s.must("start")
	waitFor(t, "web-1 connected at 1.0.0 again", func() bool { return f.connectedAt("1.0.0") })
	pid := s.wantPIDRuns(f.exe)

	// Upgrade while running as a service: re-exec keeps the pid the init
	// script recorded.
	if code, out := f.upgrade("2.0.0"); code != 0 {
		t.Fatalf("upgrade to 2.0.0 as a service: exit %d\n%s", code, out)
	}
	waitFor(t, "web-1 at 2.0.0", func() bool { return f.connectedAt("2.0.0") })
	if got := s.wantPIDRuns(f.exe); got != pid {
		t.Fatalf("after the upgrade the pid file names %d, want %d (re-exec keeps the pid)", got, pid)
	}
	if got := f.installedVersion(); got != "2.0.0" {
		t.Fatalf("binary on disk: got %s, want 2.0.0", got)
	}
	if svc, _ := serviceState(f.home); svc != s.name {
		t.Fatalf("upgrade state records service %q, want %q", svc, s.name)
	}
	s.wantStatus("running", 0)

	// A broken release: the watchdog restores 2.0.0 and restarts the agent
	// through the init script, which records the new process.
	if code, out := f.upgrade("2.1.0"); code == 0 {
		t.Fatalf("upgrade to the broken 2.1.0 exited 0\n%s", out)
	}
	waitFor(t, "web-1 back at 2.0.0", func() bool { return f.connectedAt("2.0.0") })
	waitFor(t, "the init script to record the restarted agent", func() bool {
		p := s.pid()
		exe, _ := os.Readlink("/proc/" + strconv.Itoa(p) + "/exe")
		return p > 0 && p != pid && exe == f.exe
	})
	s.wantPIDRuns(f.exe)
	s.wantStatus("running", 0)
	if got := f.installedVersion(); got != "2.0.0" {
		t.Fatalf("binary on disk after the rollback: got %s, want 2.0.0", got)
	}
	waitFor(t, "watchdog.log to say it restarted the agent through its service", func() bool {
		b, _ := os.ReadFile(filepath.Join(f.home, "Logs", "watchdog.log"))
		return bytes.Contains(b, []byte("through its service"))
	})

	// kill -9: SysV init has no restart on failure (systemd's
	// Restart=on-failure has). The script reports it stopped, and a start
	// recovers from the stale pid file.
	syscall.Kill(s.pid(), syscall.SIGKILL)
	waitFor(t, "status to say stopped after kill -9", func() bool { out, code := s.run("status"); return out == "stopped" && code == 3 })
	s.must("start")
	waitFor(t, "web-1 back after kill -9 and start", func() bool { return f.connectedAt("2.0.0") })

	// Uninstall stops it and leaves nothing behind.
	s.must("uninstall")
	waitFor(t, "web-1 disconnected after the uninstall", func() bool { return f.version("web-1") == "" })
	if left := leftovers(s.name); len(left) > 0 {
		t.Fatalf("uninstall left %v", left)
	}
	s.wantStatus("not installed", 4)
}

func TestAgentServicesSideBySide(t *testing.T) {
	needSysV(t)
	f := newFleet(t, "1.0.0")
	second := f.addAgent("web-2", "1.0.0")
	// Default names: derived from each home, so they differ.
	a := newAgentService(t, f.exe, f.home, "")
	b := newAgentService(t, second.exe, second.home, "")
	for _, s := range []*agentService{a, b} {
		out := s.must("install")
		name := strings.Fields(strings.TrimPrefix(out, "installed service "))[0]
		if !strings.HasPrefix(name, "tendril-agent-home-") {
			t.Fatalf("default service name %q, want tendril-agent-home-<hash>", name)
		}
		s.nameOnDisk = name
	}
	if a.nameOnDisk == b.nameOnDisk {
		t.Fatalf("two homes got the same service name %s", a.nameOnDisk)
	}
	a.must("start")
	b.must("start")
	waitFor(t, "both agents connected as services", func() bool { return f.version("web-1") == "1.0.0" && f.version("web-2") == "1.0.0" })
	a.must("uninstall")
	b.wantStatus("running", 0)
	b.must("uninstall")
	for _, s := range []*agentService{a, b} {
		if left := leftovers(s.nameOnDisk); len(left) > 0 {
			t.Fatalf("uninstall of %s left %v", s.nameOnDisk, left)
		}
	}
}

func TestAgentServiceBadInput(t *testing.T) {
	needSysV(t)
	f := newFleet(t, "1.0.0")
	s := newAgentService(t, f.exe, f.home, serviceName(t))
	unchanged := func(t *testing.T, name string) {
		t.Helper()
		if left := leftovers(name); len(left) > 0 {
			t.Fatalf("a refused command changed the system: %v", left)
		}
	}
	expectFail := func(t *testing.T, out string, code int, want string) {
		t.Helper()
		if code == 0 || !strings.Contains(out, want) {
			t.Fatalf("got exit %d %q, want a failure mentioning %q", code, out, want)
		}
	}

	t.Run("uninstall not installed", func(t *testing.T) {
		out, code := s.run("uninstall")
		expectFail(t, out, code, "is not installed")
		unchanged(t, s.name)
	})
	t.Run("start not installed", func(t *testing.T) {
		out, code := s.run("start")
		expectFail(t, out, code, "is not installed")
	})
	t.Run("install without registration", func(t *testing.T) {
		bare := newAgentService(t, f.exe, filepath.Join(t.TempDir(), "unregistered"), serviceName(t))
		out, code := bare.run("install")
		expectFail(t, out, code, "tendril-agent register --home")
		unchanged(t, bare.name)
	})
	t.Run("home under a regular file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		os.WriteFile(file, nil, 0o600)
		bad := newAgentService(t, f.exe, filepath.Join(file, "home"), serviceName(t))
		out, code := bad.run("install")
		expectFail(t, out, code, "not a directory")
		unchanged(t, bad.name)
	})
	t.Run("home not writable", func(t *testing.T) {
		// Root ignores permission bits: a Logs folder that is a file
		// makes the home unusable for the service instead.
		logs := filepath.Join(f.home, "Logs")
		os.RemoveAll(logs)
		os.WriteFile(logs, nil, 0o600)
		defer os.Remove(logs)
		out, code := s.run("install")
		expectFail(t, out, code, "is not writable")
		unchanged(t, s.name)
	})
	t.Run("install without root", func(t *testing.T) {
		// A copy of the binary that user nobody can execute.
		dir, err := os.MkdirTemp("", "tendril-e2e-nobody-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755)
		exe := filepath.Join(dir, "tendril-agent")
		copyFile(t, f.exe, exe)
		cmd := exec.Command(exe, "service", "install", "--home", f.home, "--name", s.name)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "installing a service needs root: run with sudo") {
			t.Fatalf("install as nobody: got %v %q, want the root message", err, out)
		}
		unchanged(t, s.name)
	})
	t.Run("install twice", func(t *testing.T) {
		s.must("install")
		before, _ := os.ReadFile("/etc/init.d/" + s.name)
		out, code := s.run("install")
		expectFail(t, out, code, "service "+s.name+" is already installed")
		after, _ := os.ReadFile("/etc/init.d/" + s.name)
		if !bytes.Equal(before, after) {
			t.Fatal("a second install changed the init script")
		}
	})
	t.Run("start without registration", func(t *testing.T) {
		reg := filepath.Join(f.home, "agent.json")
		os.Rename(reg, reg+".away")
		defer os.Rename(reg+".away", reg)
		out, code := s.run("start")
		expectFail(t, out, code, "tendril-agent register --home")
		s.wantStatus("stopped", 3)
	})
	t.Run("bad name", func(t *testing.T) {
		bad := &agentService{t: t, exe: f.exe, home: f.home, name: "../../etc/passwd"}
		out, code := bad.run("install")
		expectFail(t, out, code, "service name")
	})
	s.must("uninstall")
	unchanged(t, s.name)
}
