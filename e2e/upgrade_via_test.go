package e2e

import (
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/internal/proxytest"
	"github.com/tendrildeploy/tendril/protocol"
)

// upgradeAndRollBack runs the real agent at 1.0.0, offers it a release
// that exits at once (rolled back: the agent comes back at 1.0.0 by the
// same road), then a good one (it comes back at 2.0.0), through the
// commands an operator runs.
func upgradeAndRollBack(t *testing.T, f *fleet) {
	t.Helper()
	f.start(f.exe, "run", "--home", f.home)
	waitFor(t, "web-1 at 1.0.0", func() bool { return f.connectedAt("1.0.0") })
	code, out := f.upgrade("2.1.0")
	if code == 0 || !strings.Contains(out, "rolled_back") && !strings.Contains(out, "rolled back") {
		t.Fatalf("upgrade to a release that exits: exit %d, want a halted rollout with the agent rolled back\n%s", code, out)
	}
	waitFor(t, "web-1 back at 1.0.0", func() bool { return f.connectedAt("1.0.0") })
	if code, out := f.upgrade("2.0.0"); code != 0 {
		t.Fatalf("upgrade to 2.0.0: exit %d\n%s", code, out)
	}
	waitFor(t, "web-1 at 2.0.0", func() bool { return f.connectedAt("2.0.0") })
}

// TestUpgradeThroughProxy: an agent whose only way out is tinyproxy
// asking for a password is upgraded, and rolled back, through it.
func TestUpgradeThroughProxy(t *testing.T) {
	p := proxytest.Tinyproxy(t, proxytest.Options{User: "alice", Password: "s3cret"})
	f := newFleetVia(t, "1.0.0", func(_ *fleet, join string) []string {
		return []string{"--join", join, "--proxy", "http://alice:s3cret@" + p.Addr}
	})
	upgradeAndRollBack(t, f)
	j, err := protocol.ParseJoin(f.join())
	if err != nil {
		t.Fatal(err)
	}
	// Registration, the sessions at 1.0.0, the rolled-back one and 2.0.0.
	if n := p.Tunnels(j.Servers[0]); n < 4 {
		t.Fatalf("got %d tunnels through the proxy, want every session's", n)
	}
}

// TestUpgradeThroughNginxWebSocket: an agent allowed out only on HTTPS,
// reaching the coordinator as a WebSocket through nginx, is upgraded and
// rolled back the same way.
func TestUpgradeThroughNginxWebSocket(t *testing.T) {
	var lb *proxytest.ReverseProxy
	f := newFleetVia(t, "1.0.0", func(f *fleet, join string) []string {
		j, err := protocol.ParseJoin(join)
		if err != nil {
			t.Fatal(err)
		}
		lb = proxytest.Nginx(t, f.httpAddr, protocol.WebSocketPath)
		return []string{"--server", "wss://" + lb.Addr + protocol.WebSocketPath, "--server-thumbprint", j.Thumbprint, "--token", j.Token}
	})
	upgradeAndRollBack(t, f)
	// nginx logs a WebSocket when it ends: the registration's, the first
	// session at 1.0.0 and the one after the rollback (2.0.0's is open).
	if n := lb.Upgrades(); n < 3 {
		t.Fatalf("nginx passed on %d ended WebSocket upgrades, want at least 3", n)
	}
}
