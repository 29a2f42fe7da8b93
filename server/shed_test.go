package server

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/internal/proxytest"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/admission"
	"github.com/tendrildeploy/tendril/server/metrics"
)

// agentRoads are the ways an agent reaches the agent port: directly,
// through an HTTP CONNECT proxy (the real tinyproxy) and inside a
// WebSocket through a reverse proxy (the real nginx).
var agentRoads = []struct {
	name string
	// addr returns the address the agent is registered with, and the
	// proxy it goes through ("none" for none).
	addr func(t *testing.T, ts *testServer) (addr, via string)
}{
	{"direct", func(t *testing.T, ts *testServer) (string, string) { return ts.AgentAddr(), "none" }},
	{"through an HTTP CONNECT proxy", func(t *testing.T, ts *testServer) (string, string) {
		p := proxytest.Tinyproxy(t, proxytest.Options{})
		return ts.AgentAddr(), "http://" + p.Addr
	}},
	{"inside a WebSocket through nginx", func(t *testing.T, ts *testServer) (string, string) {
		lb := proxytest.Nginx(t, ts.HTTPAddr(), protocol.WebSocketPath)
		return "wss://" + lb.Addr + protocol.WebSocketPath, "none"
	}},
}

// TestShedAgentToldWhenToComeBack: an agent that the coordinator sheds
// (its one handshake slot and its one place in the queue taken) is told
// in the busy answer when to come back, directly, through an HTTP CONNECT
// proxy and inside a WebSocket through nginx alike; it waits what it was
// told, not its backoff, and once there is room it gets in.
func TestShedAgentToldWhenToComeBack(t *testing.T) {
	for _, tc := range agentRoads {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, func(c *Config) {
				c.MaxHandshakes, c.HandshakeQueue = 1, 1
				// Those that take the slot and the queue's place hold
				// them until closed.
				c.HandshakeTimeout, c.HandshakeQueueWait = time.Minute, time.Minute
			})
			addr, via := tc.addr(t, ts)
			home := registerAgent(t, ts, addr, "web-1", func(rc *agent.RegisterConfig) { rc.Proxy = via })

			// The slot, then the queue's one place, taken by connections
			// that sent a byte of a ClientHello and nothing more.
			var holders []net.Conn
			for i, want := range []admission.Stats{{Busy: 1, Sources: 1}, {Busy: 1, Waiting: 1, Sources: 1}} {
				c, err := net.Dial("tcp", ts.AgentAddr())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				holders = append(holders, c)
				if _, err := c.Write([]byte{0x16}); err != nil {
					t.Fatal(err)
				}
				eventually(t, "the holder "+string(rune('1'+i))+" admitted", func() bool { return ts.admission.Stats() == want })
			}
			busy := ts.metrics.Handshakes.WithLabelValues(metrics.OutcomeBusy)
			before := counterValue(t, busy)

			core, logs := observer.New(zapcore.InfoLevel)
			log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
			// The agent's own backoff: were it used instead of what the
			// coordinator said, the wait would be below a second.
			a := startAgent(t, home, func(c *agent.Config) {
				c.Logger = log
				c.MinBackoff, c.MaxBackoff = time.Second, time.Minute
			})
			eventually(t, "the agent told the coordinator is busy", func() bool {
				return logs.FilterMessage("coordinator busy; trying again when it said").Len() > 0
			})
			if got := counterValue(t, busy); got <= before {
				t.Fatalf("busy answers counted: got %v, want more than %v", got, before)
			}
			told := logs.FilterMessage("coordinator busy; trying again when it said").All()[0]
			fields := told.ContextMap()
			errText, _ := fields["error"].(string)
			if !strings.Contains(errText, "coordinator busy: asked to come back in") {
				t.Errorf("the agent's error: got %q, want the busy answer's", errText)
			}
			retryIn, _ := fields["retry_in"].(time.Duration)
			// The coordinator names at least half a second (its floor)
			// and adds a little; the agent adds at most a tenth.
			if retryIn < 500*time.Millisecond || retryIn > time.Minute {
				t.Errorf("the agent waits %s, want what the coordinator said (from 500ms)", retryIn)
			}

			for _, c := range holders {
				c.Close()
			}
			ts.waitConnected(t, "web-1")
			eventually(t, "the agent's session counted", func() bool { return a.Status().Sessions > 0 })
			if st := a.Status(); st.Sessions != 1 {
				t.Errorf("sessions: got %d, want 1", st.Sessions)
			}
		})
	}
}

// TestQueuedAgentToldToWait: with the one handshake slot taken, an agent
// is queued and told in the wait line how long it may be kept, so it
// outlasts its own handshake timeout in the queue and connects on its
// first attempt once the slot is free, directly, through an HTTP CONNECT
// proxy and inside a WebSocket through nginx alike. A client of an earlier
// release, which does not offer protocol.WaitALPN, is told nothing and
// shed with the busy answer at the usual queue wait.
func TestQueuedAgentToldToWait(t *testing.T) {
	for _, tc := range agentRoads {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, func(c *Config) {
				c.MaxHandshakes, c.HandshakeQueue = 1, 4
				c.HandshakeTimeout = time.Minute // the holder keeps the slot until closed
				c.HandshakeQueueWait, c.HandshakeQueueLongWait = 300*time.Millisecond, time.Minute
			})
			addr, via := tc.addr(t, ts)
			home := registerAgent(t, ts, addr, "web-1", func(rc *agent.RegisterConfig) { rc.Proxy = via })

			holder, err := net.Dial("tcp", ts.AgentAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close()
			if _, err := holder.Write([]byte{0x16}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the holder in the slot", func() bool { return ts.admission.Stats().Busy == 1 })

			count := func(outcome string) float64 {
				return counterValue(t, ts.metrics.Handshakes.WithLabelValues(outcome))
			}
			turnedAway := func() float64 {
				return count(metrics.OutcomeBusy) + count(metrics.OutcomeShed) + count(metrics.OutcomeSilent)
			}
			before, okBefore := turnedAway(), count(metrics.OutcomeOK)

			// An earlier release's client: queued for the usual wait only,
			// then shed with the busy answer, never sent a wait line.
			raw, err := net.Dial("tcp", ts.AgentAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.SetDeadline(time.Now().Add(30 * time.Second))
			watch := protocol.WatchBusy(raw)
			watch.OnWait = func(d time.Duration) { t.Errorf("an earlier client was sent a wait line (%s)", d) }
			old := tls.Client(watch, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{protocol.ALPN}})
			if _, ok := protocol.BusyAfter(watch.Busy(old.Handshake())); !ok {
				t.Fatal("earlier client: got no busy answer after the queue wait")
			}
			raw.Close()

			a := startAgent(t, home, func(c *agent.Config) {
				// Far below how long it is kept waiting: only the wait line
				// lets the handshake last that long.
				c.HandshakeTimeout = 500 * time.Millisecond
				c.MinBackoff, c.MaxBackoff = time.Minute, time.Minute
			})
			eventually(t, "the agent queued", func() bool { return ts.admission.Stats().Waiting == 1 })
			// Past the agent's own handshake timeout and the usual queue
			// wait: the passing of time is what is tested here.
			time.Sleep(time.Second)
			if st := a.Status(); st.LastError != "" {
				t.Fatalf("the agent's attempt failed while queued: %s", st.LastError)
			}
			holder.Close()
			ts.waitConnected(t, "web-1")
			if got, want := turnedAway(), before+1; got != want {
				t.Errorf("connections turned away: got %v, want %v (the earlier client's only)", got, want)
			}
			eventually(t, "the agent's handshake counted", func() bool { return count(metrics.OutcomeOK) > okBefore })
			if got := count(metrics.OutcomeOK); got != okBefore+1 {
				t.Errorf("handshakes that succeeded: got %v, want %v", got, okBefore+1)
			}
			eventually(t, "the agent's session counted", func() bool { return a.Status().Sessions > 0 })
			if st := a.Status(); st.Sessions != 1 {
				t.Errorf("sessions: got %d, want 1", st.Sessions)
			}
		})
	}
}
