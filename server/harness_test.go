package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/internal/pgtest"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/datadir"
)

// pg is the test binary's PostgreSQL cluster, started by the first test
// that needs one (the high-availability tests).
var pg pgtest.Shared

func TestMain(m *testing.M) { pg.Main(m, true) }

// testServer is a coordinator running in the test process on loopback.
type testServer struct {
	*Server
	dir    string
	cancel context.CancelFunc
	done   chan error
}

// startServer initializes a data folder and runs a coordinator on free
// loopback ports. mod may adjust the config.
func startServer(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	dir := t.TempDir()
	if _, err := datadir.Init(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	return runServer(t, dir, mod)
}

// runServer runs a coordinator on an initialized folder.
func runServer(t *testing.T, dir string, mod func(*Config)) *testServer {
	t.Helper()
	cfg := Config{
		DataDir: dir, Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0",
		HealthInterval: time.Hour, // tests trigger checks themselves
		Logger:         zaptest.NewLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Run(ctx) }()
	t.Cleanup(ts.stop)
	return ts
}

// stop shuts the coordinator down and waits for Run to return. Idempotent.
func (ts *testServer) stop() {
	ts.cancel()
	if ts.done != nil {
		<-ts.done
		ts.done = nil
	}
}

func (ts *testServer) token(t *testing.T, env string) string {
	t.Helper()
	res, err := ts.CreateToken(context.Background(), env, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Token
}

// peer is a hand-driven client built from protocol/, used to send exactly
// the bytes and messages a test needs, good or bad.
type peer struct {
	t    *testing.T
	id   *certs.Identity
	conn *tls.Conn
	sess *yamux.Session
}

func newIdentity(t *testing.T) *certs.Identity {
	t.Helper()
	id, err := certs.NewIdentity("test-peer")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// dialPeer completes TLS and starts a yamux client session.
func dialPeer(t *testing.T, ts *testServer, id *certs.Identity) (*peer, error) {
	t.Helper()
	return dialPeerWith(t, ts, protocol.ClientTLS{Identity: id, Pins: certs.NewPins(ts.Thumbprint())})
}

// dialPeerWith dials with a given client TLS policy, e.g. an old peer's.
func dialPeerWith(t *testing.T, ts *testServer, ct protocol.ClientTLS) (*peer, error) {
	t.Helper()
	id := ct.Identity
	cfg := ct.Config()
	d := net.Dialer{Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := d.DialContext(ctx, "tcp", ts.AgentAddr())
	if err != nil {
		return nil, err
	}
	// In TLS 1.3 a client certificate the server refuses is reported to
	// the client only on its first read, so a refusal may surface from
	// the first call rather than from here.
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	sess, err := protocol.NewSession(conn, protocol.SessionOptions{})
	if err != nil {
		conn.Close()
		return nil, err
	}
	p := &peer{t: t, id: id, conn: conn, sess: sess}
	t.Cleanup(func() { sess.Close() })
	return p, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (p *peer) call(reqType string, req any, respType string, resp any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return protocol.Call(ctx, p.sess, reqType, req, respType, resp)
}

func (p *peer) register(token, name string, force bool) (protocol.Registered, error) {
	var r protocol.Registered
	err := p.call(protocol.TypeRegister, protocol.Register{Token: token, Name: name, Force: force}, protocol.TypeRegistered, &r)
	return r, err
}

func (p *peer) hello() (protocol.Welcome, error) {
	var w protocol.Welcome
	err := p.call(protocol.TypeHello, protocol.Hello{Version: "1.0.0", ProtocolMin: 1, ProtocolMax: 1, OS: "linux", Arch: "amd64"}, protocol.TypeWelcome, &w)
	return w, err
}

// serveHealth answers the coordinator's requests on p's session like a
// minimal agent until the session ends.
func (p *peer) serveHealth() {
	go func() {
		for {
			st, err := p.sess.AcceptStream()
			if err != nil {
				return
			}
			f, err := protocol.ReadFrame(st, 0)
			if err == nil {
				switch f.Type {
				case protocol.TypeHealthRequest:
					protocol.WriteFrame(st, protocol.TypeHealth, protocol.Health{Version: "1.0.0", DiskFree: 10 << 30})
				default:
					protocol.WriteFrame(st, protocol.TypeAck, nil)
				}
			}
			st.Close()
		}
	}()
}

// deletedBeside enrolls two agents, deletes victim, and returns it once
// its session has ended; bystander stays, for stillServing.
func deletedBeside(t *testing.T, ts *testServer, bystander, victim string) *peer {
	t.Helper()
	enrolled(t, ts, bystander)
	p := enrolled(t, ts, victim)
	if err := ts.DeleteAgent(context.Background(), victim); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.sess.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatalf("deleted agent %s's session is still open", victim)
	}
	return p
}

// enrolled registers a fresh identity and connects it as an agent.
func enrolled(t *testing.T, ts *testServer, name string) *peer {
	t.Helper()
	return enrolledPeer(t, ts, name, true)
}

// enrolledPeer registers a peer and reconnects it with Hello; serve says
// whether it answers the coordinator's requests (serveHealth) or never
// reads its session.
func enrolledPeer(t *testing.T, ts *testServer, name string, serve bool) *peer {
	t.Helper()
	id := newIdentity(t)
	p, err := dialPeer(t, ts, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.register(ts.token(t, "Test"), name, false); err != nil {
		t.Fatal(err)
	}
	p.sess.Close()
	p, err = dialPeer(t, ts, id)
	if err != nil {
		t.Fatal(err)
	}
	if serve {
		p.serveHealth()
	}
	if _, err := p.hello(); err != nil {
		t.Fatal(err)
	}
	return p
}

// eventually polls cond until it holds or the deadline passes. The
// deadline is generous because it only matters when a test fails: a dead
// path takes the agent's keepalive about 15s to notice.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	servertest.WaitFor(t, 60*time.Second, what, cond)
}

// agentView returns the named agent as the API shows it.
func (ts *testServer) agentView(t *testing.T, name string) api.AgentView {
	t.Helper()
	v, err := ts.Agent(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// checkAllHealth runs one health sweep now.
func (ts *testServer) checkAllHealth() int {
	return ts.checkHealth(ts.ctx, ts.sessions.snapshot())
}
