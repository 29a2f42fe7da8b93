package server

// Listening agents: the real agent package listening on loopback, the real
// coordinator dialing it over real TLS.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/store"
)

// fastDialer makes the coordinator look for listening agents and redial
// them quickly; nothing asserts on the timers.
func fastDialer(c *Config) {
	c.DialScan = 50 * time.Millisecond
	c.DialMaxBackoff = 200 * time.Millisecond
}

// listeningAgent makes a listening agent's home trusting the given
// coordinator thumbprints, on a free loopback port, and runs it.
func listeningAgent(t *testing.T, trust ...string) (*runningAgent, string) {
	t.Helper()
	return listeningAgentWith(t, nil, trust...)
}

// listeningAgentWith is listeningAgent with the agent's config adjusted by
// mod.
func listeningAgentWith(t *testing.T, mod func(*agent.Config), trust ...string) (*runningAgent, string) {
	t.Helper()
	home := t.TempDir()
	addr := servertest.FreeAddr(t)
	if _, err := agent.RegisterListening(agent.ListenConfig{Home: home, Listen: addr, ServerThumbprints: trust}); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, home, mod)
	eventually(t, "the agent listening", func() bool { return a.Status().Listening != "" })
	return a, addr
}

// waitSession waits until both sides say the listening agent is
// connected: the coordinator lists the session before the agent has read
// its Welcome.
func (ts *testServer) waitSession(t *testing.T, name string, a *runningAgent) api.AgentView {
	t.Helper()
	v := ts.waitConnected(t, name)
	eventually(t, name+" says it is connected", func() bool { return a.Status().Connected })
	return v
}

// addListening adds the agent at addr to ts under name.
func (ts *testServer) addListening(t *testing.T, name, addr, thumbprint string) api.AgentView {
	t.Helper()
	v, err := ts.AddListeningAgent(context.Background(), api.ListeningAgentRequest{
		Name: name, Environment: "Test", Address: addr, Thumbprint: thumbprint,
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestListeningAgentIsDialedAndWorks(t *testing.T) {
	ts := startServer(t, fastDialer)
	a, addr := listeningAgent(t, ts.Thumbprint())
	if st := a.Status(); st.Connected || st.Listening == "" {
		t.Fatalf("before it is added: got %+v, want listening and not connected", st)
	}
	v := ts.addListening(t, "dmz-1", addr, a.Status().Thumbprint)
	if v.Mode != api.ModeListening || v.Address != addr {
		t.Fatalf("got mode %q address %q, want listening at %s", v.Mode, v.Address, addr)
	}
	ts.waitConnected(t, "dmz-1")
	ts.checkAllHealth()
	v = ts.agentView(t, "dmz-1")
	if v.Health != api.HealthHealthy || v.TLSVersion != "1.3" || v.Version != "1.2.3" || v.DialError != "" {
		t.Fatalf("got health %s (%s) tls %s version %s dial error %q, want healthy 1.3 1.2.3 and none",
			v.Health, v.HealthDetail, v.TLSVersion, v.Version, v.DialError)
	}
	// The agent learned who it is from its Welcome, and the signing key
	// that Calamari is verified with.
	st, err := agent.LoadState(a.home)
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "dmz-1" || st.Environment != "Test" || st.AgentID != v.ID || st.SigningKey != ts.Info().SigningKey {
		t.Fatalf("agent state: got name %q env %q id %q key %q, want dmz-1 Test %s %s", st.Name, st.Environment, st.AgentID, st.SigningKey, v.ID, ts.Info().SigningKey)
	}

	ts.upload(t, packBundle(t, "1.0.0", 0))
	task, lines := ts.runTaskOn(t, "dmz-1", "run-script", "--inline", "echo from the dmz")
	if task.State != api.TaskSucceeded || !strings.Contains(logText(lines), "stdout: from the dmz") {
		t.Fatalf("task: got %s\n%s", task.State, logText(lines))
	}

	// The agent restarts (an upgrade, a reboot): the coordinator dials
	// again without being told.
	a.stop()
	eventually(t, "dmz-1 disconnected", func() bool { return !ts.agentView(t, "dmz-1").Connected })
	startAgent(t, a.home, nil)
	ts.waitConnected(t, "dmz-1")
	task, _ = ts.runTaskOn(t, "dmz-1", "run-script", "--inline", "echo again")
	if task.State != api.TaskSucceeded {
		t.Fatalf("task after the agent's restart: got %s", task.State)
	}
}

func TestListeningAgentDialErrors(t *testing.T) {
	ts := startServer(t, fastDialer)
	other := newIdentity(t)
	tests := []struct {
		name  string
		trust string // the coordinator thumbprint the agent accepts
		thumb func(agentThumb string) string
		want  string
	}{
		{"wrong agent thumbprint", ts.Thumbprint(), func(string) string { return other.Thumbprint }, "the agent there is not"},
		{"agent does not trust the coordinator", other.Thumbprint, func(t string) string { return t }, "does not trust this coordinator's certificate"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, addr := listeningAgent(t, tt.trust)
			name := fmt.Sprintf("bad-%d", i)
			ts.addListening(t, name, addr, tt.thumb(a.Status().Thumbprint))
			var v api.AgentView
			eventually(t, "a dial error", func() bool {
				v = ts.agentView(t, name)
				return v.DialError != ""
			})
			if v.Connected || !strings.Contains(v.DialError, tt.want) || !strings.Contains(v.HealthDetail, tt.want) {
				t.Fatalf("got connected %v dial error %q detail %q, want not connected and %q", v.Connected, v.DialError, v.HealthDetail, tt.want)
			}
			if a.Status().Connected {
				t.Fatal("the agent says it is connected")
			}
		})
	}
}

func TestListeningAgentMoves(t *testing.T) {
	ts := startServer(t, fastDialer)
	a, addr := listeningAgent(t, ts.Thumbprint())
	ts.addListening(t, "mover", addr, a.Status().Thumbprint)
	ts.waitConnected(t, "mover")

	// The agent comes back on another port; until the coordinator is
	// told, it says why it cannot reach it.
	a.stop()
	eventually(t, "a dial error for the old address", func() bool {
		v := ts.agentView(t, "mover")
		return !v.Connected && strings.Contains(v.DialError, addr)
	})
	st, err := agent.LoadState(a.home)
	if err != nil {
		t.Fatal(err)
	}
	moved := servertest.FreeAddr(t)
	if _, err := agent.RegisterListening(agent.ListenConfig{Home: a.home, Listen: moved, ServerThumbprints: st.ServerThumbprints, Force: true}); err != nil {
		t.Fatal(err)
	}
	startAgent(t, a.home, nil)
	if _, err := ts.SetAgentAddress(context.Background(), "mover", moved); err != nil {
		t.Fatal(err)
	}
	v := ts.waitConnected(t, "mover")
	if v.Address != moved || v.DialError != "" {
		t.Fatalf("got address %s dial error %q, want %s and none", v.Address, v.DialError, moved)
	}
}

// TestListeningPortRefusesStrangers knocks on a connected listening
// agent's port as an unpinned TLS client, as plain HTTP and as a silent
// peer: each is refused, and the coordinator's session carries on.
func TestListeningPortRefusesStrangers(t *testing.T) {
	ts := startServer(t, fastDialer)
	a, addr := listeningAgentWith(t, func(c *agent.Config) { c.HandshakeTimeout = time.Second }, ts.Thumbprint())
	ts.addListening(t, "guarded", addr, a.Status().Thumbprint)
	ts.waitSession(t, "guarded", a)
	sessions := a.Status().Sessions

	t.Run("unpinned client", func(t *testing.T) {
		id := newIdentity(t)
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
			Certificates: []tls.Certificate{id.Certificate}, InsecureSkipVerify: true, NextProtos: []string{protocol.ALPN},
		})
		if err == nil {
			// TLS 1.3: the client's handshake ends first; the refusal is
			// the first read.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("got %v, want a refused certificate", err)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("got %v, want a certificate required", err)
		}
	})
	t.Run("plain HTTP", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := bufio.NewReader(conn).ReadString('\n')
		if strings.HasPrefix(resp, "HTTP/") {
			t.Fatalf("got an HTTP answer %q, want the connection refused", resp)
		}
		if err == nil {
			t.Fatalf("got %q and no error, want the connection closed", resp)
		}
	})
	t.Run("silent peer", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// The agent's handshake deadline (1 s here) closes it; a generous
		// read deadline keeps the test from hanging if it does not.
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err = io.Copy(io.Discard, conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the agent kept a silent connection open past its handshake deadline")
		}
	})
	if st := a.Status(); !st.Connected || st.Sessions != sessions {
		t.Fatalf("after the strangers: got connected %v sessions %d, want the same session (%d)", st.Connected, st.Sessions, sessions)
	}
	if !ts.agentView(t, "guarded").Connected {
		t.Fatal("the coordinator lost the agent")
	}
}

func TestListeningAgentCertificateRotation(t *testing.T) {
	ts := startServer(t, fastDialer)
	a, addr := listeningAgent(t, ts.Thumbprint())
	old := a.Status().Thumbprint
	ts.addListening(t, "rotor", addr, old)
	ts.waitConnected(t, "rotor")
	next, err := agent.RotateCertificate(a.home)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the coordinator to know the new certificate", func() bool {
		v := ts.agentView(t, "rotor")
		return v.Connected && v.Thumbprint == next
	})
	if got := a.Status().Thumbprint; got != next {
		t.Fatalf("agent thumbprint: got %s, want %s", got, next)
	}
	// The old certificate is no longer accepted.
	if revoked, err := ts.store.IsRevoked(context.Background(), old); err != nil || !revoked {
		t.Fatalf("old thumbprint revoked: got %v (%v), want true", revoked, err)
	}
}

func TestCoordinatorRotationReachesListeningAgent(t *testing.T) {
	ts := startServer(t, fastDialer)
	a, addr := listeningAgent(t, ts.Thumbprint())
	ts.addListening(t, "rot-srv", addr, a.Status().Thumbprint)
	ts.waitConnected(t, "rot-srv")
	res, err := ts.RotateCertificate(context.Background(), false)
	if err != nil || res.Notified != 1 {
		t.Fatalf("rotate: got %+v, %v; want the agent notified", res, err)
	}
	// A new session after the rotation presents the new certificate,
	// which the agent was told to trust.
	a.stop()
	eventually(t, "disconnected", func() bool { return !ts.agentView(t, "rot-srv").Connected })
	b := startAgent(t, a.home, nil)
	ts.waitSession(t, "rot-srv", b)
	st, err := agent.LoadState(a.home)
	if err != nil {
		t.Fatal(err)
	}
	if st.ServerThumbprints[0] != res.Thumbprint {
		t.Fatalf("agent trusts %v, want %s first", st.ServerThumbprints, res.Thumbprint)
	}
}

// TestListeningAgentOneNodeDials runs two coordinator nodes on one
// database: one of them holds the listening agent, and when it stops the
// other takes over.
func TestListeningAgentOneNodeDials(t *testing.T) {
	c := newHACluster(t)
	na := c.node("a", fastDialer)
	nb := c.node("b", fastDialer)
	a, addr := listeningAgent(t, na.Thumbprint())
	na.addListening(t, "shared", addr, a.Status().Thumbprint)
	var holder string
	eventually(t, "shared connected", func() bool {
		v := na.agentView(t, "shared")
		holder = v.Node
		return v.Connected && a.Status().Connected
	})
	// Both nodes keep looking; the agent keeps one session.
	sessions := a.Status().Sessions
	scansA, scansB := na.dialer.Scans(), nb.dialer.Scans()
	eventually(t, "both nodes to look again", func() bool {
		return na.dialer.Scans() >= scansA+3 && nb.dialer.Scans() >= scansB+3
	})
	if got := a.Status().Sessions; got != sessions {
		t.Fatalf("sessions: got %d, want %d: the nodes took the agent from each other", got, sessions)
	}
	if v := nb.agentView(t, "shared"); v.Node != holder {
		t.Fatalf("node b says node %q holds the agent, want %q", v.Node, holder)
	}
	nodes := map[string]*testServer{"a": na, "b": nb}
	other := map[string]string{"a": "b", "b": "a"}[holder]

	// The holder drains: the other node takes the agent over.
	if _, err := nodes[other].SetNodeDraining(context.Background(), holder, true); err != nil {
		t.Fatal(err)
	}
	nodes[other].connectedTo(t, "shared", other)
	if _, err := nodes[other].SetNodeDraining(context.Background(), holder, false); err != nil {
		t.Fatal(err)
	}

	// The new holder dies: the first takes the agent back.
	nodes[other].stop()
	nodes[holder].connectedTo(t, "shared", holder)
}

// TestListeningAgentStaleRecord: the database says a live node holds the
// agent, which it does not (a disconnect it could not record): that node
// clears the record, and the node that should dial the agent does.
func TestListeningAgentStaleRecord(t *testing.T) {
	c := newHACluster(t)
	na := c.node("a", fastDialer)
	nb := c.node("b", fastDialer)
	a, addr := listeningAgent(t, na.Thumbprint())
	v := na.addListening(t, "stale", addr, a.Status().Thumbprint)
	na.waitSession(t, "stale", a)
	a.stop()
	eventually(t, "stale disconnected", func() bool { return !na.agentView(t, "stale").Connected })
	// The node that is not the agent's dialer is recorded as holding it.
	other := nb
	if na.members.Dialer(v.ID) == nb.nodeID() {
		other = na
	}
	if err := other.store.RecordConnection(context.Background(), store.Connection{
		AgentID: v.ID, Version: "1.2.3", Protocol: 1, At: time.Now().UTC(), Node: other.nodeID(),
	}); err != nil {
		t.Fatal(err)
	}
	b := startAgent(t, a.home, nil)
	eventually(t, "stale dialed again", func() bool { return b.Status().Connected })
}

// TestAgentTooNewIsListedWithTheReason: an agent whose protocol the
// coordinator does not speak is refused, and its listing says why and
// what to do instead of a bare "not connected".
func TestAgentTooNewIsListedWithTheReason(t *testing.T) {
	ts := startServer(t, nil)
	home := registerAgent(t, ts, ts.AgentAddr(), "future-1", nil)
	startAgent(t, home, func(c *agent.Config) { c.ProtocolMin, c.ProtocolMax = 2, 2 })
	eventually(t, "the refusal in the listing", func() bool {
		return strings.Contains(ts.agentView(t, "future-1").HealthDetail, "refused: agent 1.2.3 speaks protocol 2-2")
	})
	if v := ts.agentView(t, "future-1"); v.Connected || !strings.HasSuffix(v.HealthDetail, "upgrade the coordinator") {
		t.Fatalf("got connected %v detail %q, want not connected and the remedy", v.Connected, v.HealthDetail)
	}
}
