package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/internal/proxytest"
	"github.com/tendrildeploy/tendril/internal/servertest"
)

// TestAgentBinaryThroughProxy: the real agent, registered with --proxy
// through Debian's tinyproxy asking for a password, enrolls, runs and is
// listed healthy, its sessions tunnelled through the proxy, and the
// password is in no log.
func TestAgentBinaryThroughProxy(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	agentAddr, httpAddr := servertest.FreeAddr(t), servertest.FreeAddr(t)
	mustRun(t, "tendril-server", "init", "--data", data)
	start(t, "tendril-server", "run", "--data", data, "--listen", agentAddr, "--http", httpAddr, "--health-interval", "1s")
	waitFor(t, "coordinator API", func() bool { return listAgents(t, data) != nil })
	p := proxytest.Tinyproxy(t, proxytest.Options{User: "alice", Password: "s3cret"})

	join := strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", data, "--environment", "Production"))
	home := filepath.Join(t.TempDir(), "agent")
	mustRun(t, "tendril-agent", "register", "--home", home, "--join", join, "--name", "proxied", "--proxy", "http://alice:s3cret@"+p.Addr)
	logFile := filepath.Join(t.TempDir(), "agent.log")
	start(t, "tendril-agent", "run", "--home", home, "--log-file", logFile, "--log-level", "debug")
	waitFor(t, "proxied healthy", func() bool { return healthy(listAgents(t, data), "proxied") })
	if n := p.Tunnels(agentAddr); n < 2 {
		t.Fatalf("got %d tunnels through the proxy, want the registration's and the session's", n)
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "s3cret") {
		t.Fatal("the proxy password is in the agent's log")
	}
	if !strings.Contains(string(b), `"proxy":"http://xxxxx@`+p.Addr+`"`) {
		t.Fatalf("the agent's log does not name its proxy (without the password):\n%s", b)
	}
}
