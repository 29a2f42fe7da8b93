package server

// Integration tests: the real agent package against the real coordinator,
// over real TLS on loopback, with network faults injected by a user-space
// proxy.

import (
	"context"
	"crypto/tls"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/faultproxy"
)

// runningAgent is a real agent running in the test process.
type runningAgent struct {
	*agent.Agent
	home   string
	cancel context.CancelFunc
	done   chan error
}

func (ra *runningAgent) stop() {
	ra.cancel()
	if ra.done != nil {
		<-ra.done
		ra.done = nil
	}
}

// fastAgent shortens the agent's timers so tests finish quickly; nothing
// asserts on them.
func fastAgent(c *agent.Config) {
	c.MinBackoff, c.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	c.RotationCheck = 50 * time.Millisecond
	c.KeepAlive = 200 * time.Millisecond
}

// registerAgent enrolls a real agent through addr (the coordinator, or a
// proxy in front of it).
func registerAgent(t *testing.T, ts *testServer, addr, name string, mod func(*agent.RegisterConfig)) string {
	t.Helper()
	home := t.TempDir()
	rc := agent.RegisterConfig{
		Home: home, Servers: []string{addr}, ServerThumbprint: ts.Thumbprint(),
		Token: ts.token(t, "Test"), Name: name, Version: "1.2.3", Logger: zaptest.NewLogger(t),
	}
	if mod != nil {
		mod(&rc)
	}
	if _, err := agent.Register(context.Background(), rc); err != nil {
		t.Fatal(err)
	}
	return home
}

// startAgent runs a registered agent until the test ends.
func startAgent(t *testing.T, home string, mod func(*agent.Config)) *runningAgent {
	t.Helper()
	cfg := agent.Config{Home: home, Version: "1.2.3", Logger: zaptest.NewLogger(t)}
	fastAgent(&cfg)
	if mod != nil {
		mod(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{Agent: a, home: home, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(ra.stop)
	return ra
}

func (ts *testServer) waitConnected(t *testing.T, name string) api.AgentView {
	t.Helper()
	var v api.AgentView
	eventually(t, name+" connected", func() bool {
		v = ts.agentView(t, name)
		return v.Connected
	})
	return v
}

func TestAgentEnrollsConnectsAndIsHealthy(t *testing.T) {
	ts := startServer(t, nil)
	home := registerAgent(t, ts, ts.AgentAddr(), "web-1", nil)
	a := startAgent(t, home, nil)
	ts.waitConnected(t, "web-1")
	// The connect-time health check has run once Connected shows, or will
	// shortly; a sweep makes it certain.
	ts.checkAllHealth()
	v := ts.agentView(t, "web-1")
	if v.Health != api.HealthHealthy || v.Version != "1.2.3" || v.TLSVersion != "1.3" || v.Environment != "Test" {
		t.Fatalf("got health %s (%s) version %s tls %s env %s, want healthy 1.2.3 1.3 Test", v.Health, v.HealthDetail, v.Version, v.TLSVersion, v.Environment)
	}
	if v.DiskFree <= 0 || v.OS == "" || v.Arch == "" || v.Thumbprint != a.Status().Thumbprint {
		t.Fatalf("got disk %d os %q arch %q thumbprint %s, want real host facts and the agent's thumbprint %s", v.DiskFree, v.OS, v.Arch, v.Thumbprint, a.Status().Thumbprint)
	}
	if st := a.Status(); !st.Connected || st.TLSVersion != "1.3" || st.Protocol != 1 {
		t.Fatalf("agent status: %+v", st)
	}
}

func TestAgentWithWrongCoordinatorThumbprint(t *testing.T) {
	ts := startServer(t, nil)
	token := ts.token(t, "Test")
	_, err := agent.Register(context.Background(), agent.RegisterConfig{
		Home: t.TempDir(), Servers: []string{ts.AgentAddr()}, ServerThumbprint: strings.Repeat("ab", 32),
		Token: token, Name: "misled",
	})
	if err == nil || !strings.Contains(err.Error(), "thumbprint") {
		t.Fatalf("got %v, want a refusal that names the thumbprint", err)
	}
	// The token never reached the coordinator, so it still works.
	_, err = agent.Register(context.Background(), agent.RegisterConfig{
		Home: t.TempDir(), Servers: []string{ts.AgentAddr()}, ServerThumbprint: ts.Thumbprint(),
		Token: token, Name: "right",
	})
	if err != nil {
		t.Fatalf("token after a refused attempt: %v", err)
	}
}

func TestAgentsReconnectAfterCoordinatorRestart(t *testing.T) {
	ts := startServer(t, nil)
	proxy, err := faultproxy.New(ts.AgentAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	names := []string{"a-1", "a-2", "a-3"}
	var agents []*runningAgent
	for _, n := range names {
		agents = append(agents, startAgent(t, registerAgent(t, ts, proxy.Addr(), n, nil), nil))
	}
	for _, n := range names {
		ts.waitConnected(t, n)
	}
	before := make([]int64, len(agents))
	for i, a := range agents {
		eventually(t, names[i]+" says it is connected", func() bool { return a.Status().Connected })
		before[i] = a.Status().Sessions
	}

	ts.stop()
	// A new coordinator process on the same data folder, at a new port
	// behind the same address.
	ts2 := runServer(t, ts.dir, nil)
	proxy.SetTarget(ts2.AgentAddr())
	for _, n := range names {
		ts2.waitConnected(t, n)
	}
	for i, a := range agents {
		eventually(t, names[i]+" on a new session", func() bool { return a.Status().Sessions > before[i] })
	}
}

func TestAgentSurvivesNetworkFaults(t *testing.T) {
	ts := startServer(t, nil)
	proxy, err := faultproxy.New(ts.AgentAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	a := startAgent(t, registerAgent(t, ts, proxy.Addr(), "flaky", nil), nil)
	ts.waitConnected(t, "flaky")

	sessions := func() int64 { return a.Status().Sessions }
	reconnected := func(after int64) {
		t.Helper()
		eventually(t, "a new session", func() bool { return sessions() > after && a.Status().Connected })
		ts.waitConnected(t, "flaky")
	}

	t.Run("connections reset", func(t *testing.T) {
		n := sessions()
		proxy.KillAll()
		reconnected(n)
	})
	t.Run("path goes silent", func(t *testing.T) {
		// Nothing passes: the agent's keepalive notices the dead path and
		// it reconnects once traffic flows again.
		n := sessions()
		proxy.Pause()
		eventually(t, "agent notices the dead path", func() bool { return !a.Status().Connected })
		proxy.Resume()
		reconnected(n)
	})
	t.Run("coordinator port open but refusing", func(t *testing.T) {
		n := sessions()
		proxy.SetRefuse(true)
		proxy.KillAll()
		eventually(t, "several refused attempts", func() bool { return proxy.Accepted() > 3 })
		proxy.SetRefuse(false)
		reconnected(n)
	})
	t.Run("slow, dripping link", func(t *testing.T) {
		n := sessions()
		proxy.SetLatency(20 * time.Millisecond)
		proxy.SetDrip(512, time.Millisecond)
		proxy.KillAll()
		reconnected(n)
		proxy.SetLatency(0)
		proxy.SetDrip(0, 0)
	})
	t.Run("connection cut mid-handshake", func(t *testing.T) {
		n := sessions()
		accepted := proxy.Accepted()
		proxy.CutAfter(700) // inside the TLS handshake
		proxy.KillAll()
		eventually(t, "attempts cut mid-handshake", func() bool { return proxy.Accepted() >= accepted+2 })
		if sessions() != n {
			t.Fatal("a session was established through a link that cuts every handshake")
		}
		proxy.CutAfter(0)
		reconnected(n)
	})
	ts.checkAllHealth()
	if v := ts.agentView(t, "flaky"); v.Health != api.HealthHealthy {
		t.Fatalf("after the faults: got %s (%s), want healthy", v.Health, v.HealthDetail)
	}
}

func TestLegacyTLSAgent(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.TLSMin = tls.VersionTLS10 })
	home := registerAgent(t, ts, ts.AgentAddr(), "win2008", func(rc *agent.RegisterConfig) {
		rc.TLSMinVersion, rc.TLSMaxVersion = tls.VersionTLS10, tls.VersionTLS10
	})
	startAgent(t, home, func(c *agent.Config) { c.TLSMinVersion, c.TLSMaxVersion = tls.VersionTLS10, tls.VersionTLS10 })
	ts.waitConnected(t, "win2008")
	ts.checkAllHealth()
	v := ts.agentView(t, "win2008")
	if v.TLSVersion != "1.0" || v.Health != api.HealthWarning {
		t.Fatalf("got tls %s health %s, want 1.0 and warning", v.TLSVersion, v.Health)
	}
}

func TestDeleteRunningAgent(t *testing.T) {
	ts := startServer(t, nil)
	keep := startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "keep", nil), nil)
	gone := startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "gone", nil), nil)
	ts.waitConnected(t, "keep")
	ts.waitConnected(t, "gone")
	if err := ts.DeleteAgent(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted agent disconnected", func() bool { return !gone.Status().Connected })
	// It keeps trying (it must not exit) and keeps being refused.
	n := gone.Status().Sessions
	eventually(t, "refused attempts", func() bool { return gone.Status().LastError != "" })
	if gone.Status().Sessions != n || gone.Status().Connected {
		t.Fatal("deleted agent got a session again")
	}
	if !keep.Status().Connected {
		t.Fatal("other agent was disconnected")
	}
}

func TestAgentCertificateRotationStaysConnected(t *testing.T) {
	ts := startServer(t, nil)
	a := startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "rotor", nil), nil)
	ts.waitConnected(t, "rotor")
	// The coordinator lists a session before the agent has read its
	// Welcome: sampling starts once both sides say so.
	eventually(t, "rotor says it is connected", func() bool { return a.Status().Connected })
	old := a.Status().Thumbprint

	// Sample connectivity, as the coordinator and the agent see it, for the
	// whole rotation.
	var drops atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !a.Status().Connected || ts.sessions.count() != 1 {
				drops.Add(1)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	next, err := agent.RotateCertificate(a.home)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "coordinator lists the new thumbprint", func() bool {
		return ts.agentView(t, "rotor").Thumbprint == next && a.Status().Thumbprint == next
	})
	close(stop)
	wg.Wait()
	if n := drops.Load(); n != 0 {
		t.Errorf("observed %d samples without a session during rotation, want 0", n)
	}
	// The old certificate is no longer accepted.
	revoked, err := ts.store.IsRevoked(context.Background(), old)
	if err != nil || !revoked {
		t.Errorf("old thumbprint revoked: got %v, %v; want true", revoked, err)
	}
}

func TestCoordinatorRotationWithRealAgents(t *testing.T) {
	ts := startServer(t, nil)
	proxy, err := faultproxy.New(ts.AgentAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	a := startAgent(t, registerAgent(t, ts, proxy.Addr(), "stay", nil), nil)
	ts.waitConnected(t, "stay")
	// The coordinator lists a session before the agent has read its
	// Welcome: count the agent's sessions once it says it is connected.
	eventually(t, "stay says it is connected", func() bool { return a.Status().Connected })
	n := a.Status().Sessions
	res, err := ts.RotateCertificate(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	st, err := agent.LoadState(a.home)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.ServerThumbprints) == 0 || st.ServerThumbprints[0] != res.Thumbprint {
		t.Fatalf("agent trusts %v, want %s first", st.ServerThumbprints, res.Thumbprint)
	}
	if a.Status().Sessions != n || !a.Status().Connected {
		t.Fatal("the rotation interrupted the agent's session")
	}
	// After a coordinator restart the agent connects to the new
	// certificate.
	ts.stop()
	ts2 := runServer(t, ts.dir, nil)
	proxy.SetTarget(ts2.AgentAddr())
	ts2.waitConnected(t, "stay")
	if ts2.Thumbprint() != res.Thumbprint {
		t.Fatalf("restarted coordinator presents %s, want %s", ts2.Thumbprint(), res.Thumbprint)
	}
}
