package e2e

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// newListeningFleet is newFleet whose agents are listening agents inside
// the network namespace ns: registered there with the coordinator's
// thumbprint only, added on the coordinator by address and thumbprint,
// and run inside ns, from where the coordinator cannot be dialed.
func newListeningFleet(t *testing.T, agentVersion string, ns *netNS) *fleet {
	t.Helper()
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatalf("the listening tests run agents in a network namespace with ip (iproute2): %v", err)
	}
	f := &fleet{t: t, data: filepath.Join(t.TempDir(), "data")}
	f.start = func(exe string, args ...string) *daemon {
		return startPath(t, ip, append([]string{"netns", "exec", ns.name, exe}, args...)...)
	}
	f.enroll = func(in *install) {
		addr := net.JoinHostPort(ns.nsIP, "10933")
		thumb := strings.TrimSpace(mustRun(t, "tendril-server", "thumbprint", "--data", f.data))
		out, err := exec.Command(in.exe, "register", "--home", in.home, "--listen", addr, "--server-thumbprint", thumb).CombinedOutput()
		if err != nil {
			t.Fatalf("register %s: %v\n%s", in.name, err, out)
		}
		agentThumb := strings.TrimSpace(string(mustOutput(t, in.exe, "thumbprint", "--home", in.home)))
		if !strings.Contains(string(out), "tendril-server agents add --listening "+addr+" --thumbprint "+agentThumb) {
			t.Fatalf("register --listen did not say how to add the agent on the coordinator:\n%s", out)
		}
		mustRun(t, "tendril-server", "agents", "add", "--listening", addr, "--thumbprint", agentThumb,
			"--environment", "Production", "--name", in.name, "--data", f.data)
	}
	return f.init(agentVersion)
}

func mustOutput(t *testing.T, exe string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(exe, args...).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", exe, strings.Join(args, " "), err)
	}
	return out
}

// TestListeningAgentInNamespace: an agent on a host that cannot dial the
// coordinator is added by the operator, dialed by the coordinator, gets
// Calamari, runs a task, and is upgraded and rolled back, through the
// commands an operator runs and the real binaries.
func TestListeningAgentInNamespace(t *testing.T) {
	ns := newNetNS(t)
	f := newListeningFleet(t, "1.0.0", ns)

	// The namespace cannot reach the coordinator: registering the usual
	// way, from inside it, fails to connect.
	cmd := ns.command(f.exe, "register", "--home", filepath.Join(t.TempDir(), "outbound"), "--join", f.join())
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "dial coordinator") {
		t.Fatalf("register from inside the namespace: got %v\n%s\nwant a failure to dial the coordinator", err, out)
	}

	upgradeAndRollBack(t, f)
	rows := listAgents(t, f.data)
	if len(rows) != 1 || rows[0].Mode != "listening" || rows[0].Address != net.JoinHostPort(ns.nsIP, "10933") {
		t.Fatalf("agents list: got %+v, want web-1 listening at %s:10933", rows, ns.nsIP)
	}
	list := mustRun(t, "tendril-server", "agents", "list", "--data", f.data)
	if !strings.Contains(list, "listening") {
		t.Fatalf("agents list does not show the mode:\n%s", list)
	}

	mustRun(t, "tendril-server", "calamari", "push", filepath.Join(binDir, "calamari.tar.gz"), "--data", f.data)
	stdout, stderr, code := runCode(t, "tendril-server", "task", "run", "--agent", "web-1", "--data", f.data, "--",
		"run-script", "--inline", "echo hello from the namespace")
	if code != 0 || !strings.Contains(stdout, "hello from the namespace") {
		t.Fatalf("task run: exit %d\n%s\n%s", code, stdout, stderr)
	}
}
