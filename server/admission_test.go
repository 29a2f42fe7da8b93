package server

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/fleet"
	"github.com/tendrildeploy/tendril/server/admission"
	"github.com/tendrildeploy/tendril/server/metrics"
)

// TestAgentReconnectsDuringSilentFlood is issue 19's probe: 2,000 TCP
// connections from one address that never send a ClientHello, each
// opened again a second after the coordinator closes it, while a real
// agent from the same address (loopback: as behind a NAT it shares with
// the flooder) reconnects. It must get in; how fast is the benchmark's
// (BENCHMARKS.md), not asserted here. Afterwards every silent socket is
// closed by the coordinator and the handshake admission holds nothing.
func TestAgentReconnectsDuringSilentFlood(t *testing.T) {
	ts := startServer(t, nil) // the default admission settings
	home := registerAgent(t, ts, ts.AgentAddr(), "web-1", nil)
	a := startAgent(t, home, nil)
	ts.waitConnected(t, "web-1")
	a.stop()
	eventually(t, "web-1 disconnected", func() bool { return !ts.agentView(t, "web-1").Connected })
	eventually(t, "the admission at rest", func() bool { return ts.admission.Stats() == admission.Stats{} })
	before := runtime.NumGoroutine()

	f, err := fleet.StartFlood(context.Background(), ts.AgentAddr(), 2000, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	if st := f.Stats(); st.Opened < 2000 {
		t.Fatalf("flood: got %d connections opened, want 2000 (%d dials failed)", st.Opened, st.DialFailed)
	}
	// The agent comes back once the flood is in full swing: the sockets
	// the coordinator closed are being opened again.
	eventually(t, "the flood opening sockets again", func() bool { return f.Stats().Opened >= 3000 })
	startAgent(t, home, nil)
	ts.waitConnected(t, "web-1")

	f.StopReopening()
	eventually(t, "every silent socket closed by the coordinator", func() bool { return f.Stats().Open == 0 })
	if st := f.Stats(); st.ClosedByPeer != st.Opened {
		t.Fatalf("flood: got %d of %d connections closed by the coordinator, want all", st.ClosedByPeer, st.Opened)
	}
	f.Stop()
	eventually(t, "the admission at rest", func() bool { return ts.admission.Stats() == admission.Stats{} })
	if got := counterValue(t, ts.metrics.Handshakes.WithLabelValues(metrics.OutcomeSilent)); got < 2000 {
		t.Errorf("silent connections counted: got %v, want at least 2000", got)
	}
	// The agent's session is back, and nothing of the flood is left.
	eventually(t, "the goroutines of the flood gone", func() bool {
		return runtime.NumGoroutine() <= before+10
	})
	if !ts.agentView(t, "web-1").Connected {
		t.Fatal("web-1: got disconnected after the flood, want connected")
	}
}

// TestSilentConnectionHoldsNoSlot: with the one handshake slot's worth of
// room taken by a connection that never speaks, an agent still gets in
// at once, and the silent connection is closed at the first-byte
// deadline, long before the handshake's.
func TestSilentConnectionHoldsNoSlot(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.MaxHandshakes, c.HandshakeQueue = 1, 1
		c.HandshakeTimeout = time.Minute // were the deadline this one, the test would run out first
		c.FirstByteTimeout = 200 * time.Millisecond
	})
	mute, err := net.Dial("tcp", ts.AgentAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	home := registerAgent(t, ts, ts.AgentAddr(), "web-1", nil)
	startAgent(t, home, nil)
	ts.waitConnected(t, "web-1")
	mute.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := mute.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("silent peer: got %v, want the connection closed by the coordinator", err)
	}
	eventually(t, "the admission at rest", func() bool { return ts.admission.Stats() == admission.Stats{} })
}
