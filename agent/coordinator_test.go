package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

// testCoordinator is a small stand-in for tendril-server: real TLS and
// yamux on loopback, answering Register, Hello and RotateCertificate, and
// able to call the agent. The real coordinator is tested against the agent
// in the lead's integration tests; this one exists to observe the agent.
type testCoordinator struct {
	t  *testing.T
	ln net.Listener
	wg sync.WaitGroup

	// signer signs Calamari bundles; agents learn its public key at
	// registration.
	signer *certs.SigningKey

	mu          sync.Mutex
	id          *certs.Identity
	thumbprints []string        // sent in Registered and Welcome
	known       map[string]bool // agent thumbprints allowed to say Hello
	refused     map[string]bool // deleted agents, refused at the handshake (an older coordinator)
	// revoked are deleted agents refused in the session, as today's
	// coordinator does: the first request gets CodeRevoked and this
	// message.
	revoked     map[string]string
	registerErr *protocol.RemoteError
	// ackUpgrades makes Welcome acknowledge a Hello's upgrade report.
	ackUpgrades bool
	registers   []protocol.Register
	rotations   []string
	handshakes  int
	sessions    []*coordSession
	conns       map[net.Conn]bool
}

// coordSession is one agent session as the coordinator sees it.
type coordSession struct {
	thumbprint string
	ys         *yamux.Session
	mu         sync.Mutex
	hello      *protocol.Hello
}

func (s *coordSession) helloed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hello != nil
}

func newTestCoordinator(t *testing.T) *testCoordinator {
	t.Helper()
	id, err := certs.NewIdentity("coordinator")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := certs.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &testCoordinator{
		t:           t,
		ln:          ln,
		signer:      signer,
		id:          id,
		thumbprints: []string{id.Thumbprint},
		known:       map[string]bool{},
		refused:     map[string]bool{},
		revoked:     map[string]string{},
		conns:       map[net.Conn]bool{},
	}
	c.wg.Go(c.acceptLoop)
	t.Cleanup(c.close)
	return c
}

func (c *testCoordinator) addr() string { return c.ln.Addr().String() }

func (c *testCoordinator) close() {
	c.ln.Close()
	c.mu.Lock()
	for conn := range c.conns {
		conn.Close()
	}
	for _, s := range c.sessions {
		s.ys.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *testCoordinator) acceptLoop() {
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.conns[conn] = true
		c.mu.Unlock()
		c.wg.Go(func() { c.serveConn(conn) })
	}
}

func (c *testCoordinator) tlsConfig() *tls.Config {
	return protocol.ServerTLS{
		Certificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			return &c.id.Certificate, nil
		},
		VerifyClient: func(thumbprint string) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.refused[thumbprint] {
				return errors.New("agent was deleted")
			}
			return nil
		},
	}.Config()
}

func (c *testCoordinator) serveConn(raw net.Conn) {
	defer func() {
		c.mu.Lock()
		delete(c.conns, raw)
		c.mu.Unlock()
	}()
	c.mu.Lock()
	c.handshakes++
	c.mu.Unlock()
	conn := tls.Server(raw, c.tlsConfig())
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	if err := conn.Handshake(); err != nil {
		raw.Close()
		return
	}
	raw.SetDeadline(time.Time{})
	thumb, _ := certs.PeerThumbprint(conn.ConnectionState())
	ys, err := protocol.NewSession(conn, protocol.SessionOptions{Server: true})
	if err != nil {
		raw.Close()
		return
	}
	s := &coordSession{thumbprint: thumb, ys: ys}
	c.mu.Lock()
	c.sessions = append(c.sessions, s)
	c.mu.Unlock()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := ys.AcceptStream()
		if err != nil {
			return
		}
		wg.Go(func() { c.handle(s, st) })
	}
}

func (c *testCoordinator) handle(s *coordSession, st *yamux.Stream) {
	defer st.Close()
	st.SetDeadline(time.Now().Add(5 * time.Second))
	f, err := protocol.ReadFrame(st, 0)
	if err != nil {
		return
	}
	c.mu.Lock()
	why, revoked := c.revoked[s.thumbprint]
	c.mu.Unlock()
	if revoked {
		protocol.WriteError(st, protocol.CodeRevoked, why)
		return
	}
	switch f.Type {
	case protocol.TypeRegister:
		var req protocol.Register
		f.Decode(&req)
		c.mu.Lock()
		c.registers = append(c.registers, req)
		rerr := c.registerErr
		if rerr == nil {
			c.known[s.thumbprint] = true
		}
		thumbs := c.thumbprints
		c.mu.Unlock()
		if rerr != nil {
			protocol.WriteError(st, rerr.Code, rerr.Message)
			return
		}
		env := req.Environment
		if env == "" {
			env = "Test"
		}
		protocol.WriteFrame(st, protocol.TypeRegistered, protocol.Registered{
			AgentID: "agent-1", Name: req.Name, Environment: env,
			SigningKey: c.signer.Public(), ServerThumbprints: thumbs,
		})
	case protocol.TypeHello:
		var h protocol.Hello
		f.Decode(&h)
		c.mu.Lock()
		ok := c.known[s.thumbprint]
		thumbs := c.thumbprints
		ack := c.ackUpgrades && h.Upgrade != nil
		c.mu.Unlock()
		if !ok {
			protocol.WriteError(st, protocol.CodeUnauthorized, "unknown agent certificate")
			return
		}
		s.mu.Lock()
		s.hello = &h
		s.mu.Unlock()
		protocol.WriteFrame(st, protocol.TypeWelcome, protocol.Welcome{
			Protocol: h.ProtocolMax, ServerVersion: "test", AgentID: "agent-1",
			Name: "test-agent", Environment: "Test", ServerThumbprints: thumbs,
			UpgradeAcknowledged: ack,
		})
	case protocol.TypeRotateCertificate:
		var req protocol.RotateCertificate
		f.Decode(&req)
		cert, err := certs.ParseSelfSigned(req.Certificate)
		if err != nil {
			protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
			return
		}
		c.mu.Lock()
		t := certs.Thumbprint(cert.Raw)
		c.known[t] = true
		c.rotations = append(c.rotations, t)
		c.mu.Unlock()
		protocol.WriteFrame(st, protocol.TypeAck, nil)
	default:
		protocol.WriteError(st, protocol.CodeUnknownType, "unknown message type "+f.Type)
	}
}

// call makes an RPC to the agent over session s.
func (c *testCoordinator) call(s *coordSession, reqType string, req any, respType string, resp any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return protocol.Call(ctx, s.ys, reqType, req, respType, resp)
}

// push sends a header of type typ and then bulk bytes as the coordinator
// does: the bytes from the offset the agent asks for, then it reads the
// final reply of respType into resp. If cut is 0 or more, only that many
// bytes are sent before the stream is closed, as a connection lost
// mid-transfer would. No reply is read after PushReady{Done}.
func (c *testCoordinator) push(s *coordSession, typ string, hdr any, data []byte, cut int64, respType string, resp any) (protocol.PushReady, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.ys.OpenStream()
	if err != nil {
		return protocol.PushReady{}, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	defer stop()
	if err := protocol.WriteFrame(st, typ, hdr); err != nil {
		return protocol.PushReady{}, err
	}
	f, err := protocol.ReadFrame(st, 0)
	if err != nil {
		return protocol.PushReady{}, err
	}
	var ready protocol.PushReady
	if err := protocol.DecodeReply(f, protocol.TypePushReady, &ready); err != nil || ready.Done {
		return ready, err
	}
	end := int64(len(data))
	if cut >= 0 {
		end = min(end, ready.Offset+cut)
	}
	if _, err := st.Write(data[ready.Offset:end]); err != nil {
		return ready, err
	}
	if end < int64(len(data)) {
		return ready, errCut
	}
	f, err = protocol.ReadFrame(st, 0)
	if err != nil {
		return ready, err
	}
	return ready, protocol.DecodeReply(f, respType, resp)
}

// errCut is what push returns for a transfer it cut on purpose.
var errCut = errors.New("transfer cut by the test")

// followed is what a follow collected.
type followed struct {
	entries []protocol.LogEntry
	frames  []int // entries per TaskLog frame
	end     protocol.TaskEnd
}

// follow follows a task's log from seq from until its TaskEnd.
func (c *testCoordinator) follow(s *coordSession, ticket string, from int64) (followed, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.ys.OpenStream()
	if err != nil {
		return followed{}, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	defer stop()
	if err := protocol.WriteFrame(st, protocol.TypeTaskFollow, protocol.TaskFollow{Ticket: ticket, From: from}); err != nil {
		return followed{}, err
	}
	var out followed
	for {
		f, err := protocol.ReadFrame(st, 0)
		if err != nil {
			return out, err
		}
		switch f.Type {
		case protocol.TypeTaskLog:
			var l protocol.TaskLog
			if err := f.Decode(&l); err != nil {
				return out, err
			}
			out.frames = append(out.frames, len(l.Entries))
			out.entries = append(out.entries, l.Entries...)
		case protocol.TypeTaskEnd:
			return out, f.Decode(&out.end)
		default:
			return out, protocol.DecodeReply(f, protocol.TypeTaskEnd, nil)
		}
	}
}

// waitSession waits for a session that said Hello and satisfies ok.
func (c *testCoordinator) waitSession(ok func(*coordSession) bool) *coordSession {
	c.t.Helper()
	var found *coordSession
	eventually(c.t, "a session from the agent", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, s := range c.sessions {
			if !s.ys.IsClosed() && s.helloed() && ok(s) {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

func (c *testCoordinator) live() *coordSession {
	return c.waitSession(func(*coordSession) bool { return true })
}

// dropAll closes every session, as a coordinator restart would.
func (c *testCoordinator) dropAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sessions {
		s.ys.Close()
	}
}

func (c *testCoordinator) setIdentity(id *certs.Identity) {
	c.mu.Lock()
	c.id = id
	c.mu.Unlock()
}

func (c *testCoordinator) count(f func() int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return f()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
