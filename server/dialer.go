package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/admission"
	"github.com/tendrildeploy/tendril/server/store"
)

const (
	// dialedKeepAlive is the ping interval of sessions the coordinator
	// dialed. Accepted sessions need none on this side (their agents
	// ping, and redial); for a dialed one the coordinator is the side
	// that must notice a dead path and redial.
	dialedKeepAlive = 30 * time.Second
	// maxDials bounds the handshakes the dialer runs at once, so that a
	// restarted coordinator reaching thousands of listening agents does
	// not starve the agents dialing it of CPU.
	maxDials = 16
)

// errNotDialer ends a dial loop once another node should dial the agent,
// or none should.
var errNotDialer = errors.New("not this node's agent to dial")

// dialer keeps a session to every listening agent this node should hold:
// one loop per agent, which dials with backoff and jitter, serves the
// session until it ends and dials again. Which node dials an agent is
// decided by cluster.Membership.Dialer, and never while another live node
// holds its session, so two nodes do not take it from each other in turn.
type dialer struct {
	s     *Server
	kickc chan struct{}
	slots chan struct{} // a slot per handshake under way

	mu    sync.Mutex
	loops map[string]*dialLoop // by agent ID
	// started is false until the first scan, which spreads the first
	// dials of a restarted node over the reconnect window.
	started bool
	// scans counts the scans done, which tests wait on.
	scans atomic.Int64
}

// dialLoop is the loop dialing one agent.
type dialLoop struct {
	// redial asks the loop to end its session and dial again now: the
	// agent's address changed.
	redial chan struct{}
}

func newDialer(s *Server) *dialer {
	return &dialer{s: s, kickc: make(chan struct{}, 1), slots: make(chan struct{}, maxDials), loops: make(map[string]*dialLoop)}
}

// kick makes the dialer look for agents to dial now.
func (d *dialer) kick() {
	select {
	case d.kickc <- struct{}{}:
	default:
	}
}

// redial makes the agent's loop, if any, dial it again now, and the
// dialer look for it otherwise.
func (d *dialer) redial(agentID string) {
	d.mu.Lock()
	l := d.loops[agentID]
	d.mu.Unlock()
	if l == nil {
		d.kick()
		return
	}
	select {
	case l.redial <- struct{}{}:
	default:
	}
}

// run scans for listening agents to dial until ctx is done.
func (d *dialer) run(ctx context.Context) {
	t := time.NewTicker(d.s.cfg.DialScan)
	defer t.Stop()
	for {
		if err := d.scan(ctx); err != nil && ctx.Err() == nil {
			d.s.log.Warn("look for listening agents to dial failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.kickc:
		}
	}
}

// scan starts a loop for each listening agent this node should dial and
// has none for.
func (d *dialer) scan(ctx context.Context) error {
	defer d.scans.Add(1)
	// Which node dials an agent is decided on the nodes as this scan
	// reads them, not as the last heartbeat did: a node that just started
	// knows no other yet, and would dial what another node holds.
	if _, err := d.s.members.Refresh(ctx); err != nil {
		return err
	}
	all, err := d.s.store.ListAgents(ctx)
	if err != nil {
		return err
	}
	var mine []store.Agent
	for _, a := range all {
		if a.Listening() && d.s.shouldDial(a) == nil {
			mine = append(mine, a)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	spread := time.Duration(0)
	if !d.started {
		d.started = true
		spread = admission.ReconnectSpread(len(mine))
	}
	for _, a := range mine {
		if d.loops[a.ID] != nil {
			continue
		}
		l := &dialLoop{redial: make(chan struct{}, 1)}
		var delay time.Duration
		if len(mine) > 1 && spread > 0 {
			delay = time.Duration(rand.Int64N(int64(spread)))
		}
		if !d.s.goIfRunning(func() { d.loop(ctx, a.ID, l, delay) }) {
			return nil
		}
		d.loops[a.ID] = l
	}
	return nil
}

// loop dials one agent and serves its sessions until ctx is done, the
// agent is deleted or is no longer this node's to dial.
func (d *dialer) loop(ctx context.Context, agentID string, l *dialLoop, delay time.Duration) {
	defer func() {
		d.mu.Lock()
		delete(d.loops, agentID)
		d.mu.Unlock()
	}()
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = time.Second
	bo.MaxInterval = d.s.cfg.DialMaxBackoff
	bo.MaxElapsedTime = 0
	bo.Reset()
	if !sleepCtx(ctx, delay) {
		return
	}
	for {
		a, err := d.s.store.AgentByID(ctx, agentID)
		if errors.Is(err, store.ErrNotFound) || err == nil && !a.Listening() {
			return
		}
		if err == nil {
			err = d.s.shouldDial(a)
			if errors.Is(err, errNotDialer) {
				return
			}
		}
		var done <-chan struct{}
		if err == nil {
			done, err = d.dial(ctx, a)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d.failed(ctx, a, err)
			select {
			case <-ctx.Done():
				return
			case <-l.redial:
			case <-time.After(bo.NextBackOff()):
			}
			continue
		}
		bo.Reset()
		if err := d.s.store.SetDialError(ctx, a.ID, ""); err != nil && ctx.Err() == nil {
			d.s.log.Warn("record dial success failed", zap.String("agent", a.Name), zap.Error(err))
		}
		select {
		case <-done:
			// Dial again soon, not at once: a session that ends as soon as
			// it starts must not become a busy loop.
			if !sleepCtx(ctx, bo.NextBackOff()) {
				return
			}
		case <-l.redial:
			if as := d.s.sessions.get(agentID); as != nil {
				as.sess.Close()
			}
			<-done
		case <-ctx.Done():
			return
		}
	}
}

// failed records why a dial failed, where every node's API shows it.
func (d *dialer) failed(ctx context.Context, a store.Agent, err error) {
	msg := err.Error()
	if msg == a.DialError {
		d.s.log.Debug("listening agent still unreachable", zap.String("agent", a.Name), zap.Error(err))
		return
	}
	d.s.log.Warn("could not reach listening agent", zap.String("agent", a.Name), zap.String("address", a.Address), zap.Error(err))
	if err := d.s.store.SetDialError(ctx, a.ID, msg); err != nil && ctx.Err() == nil {
		d.s.log.Warn("record dial error failed", zap.String("agent", a.Name), zap.Error(err))
	}
}

// dial connects to a listening agent, pinning its certificate, and starts
// its session. It returns once the agent was welcomed, with a channel
// closed when the session ends.
func (d *dialer) dial(ctx context.Context, a store.Agent) (<-chan struct{}, error) {
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	released := false
	release := func() {
		if !released {
			released = true
			<-d.slots
		}
	}
	defer release()
	timeout := d.s.cfg.HandshakeTimeout
	nd := net.Dialer{Timeout: timeout}
	raw, err := nd.DialContext(ctx, "tcp", a.Address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", a.Address, err)
	}
	raw.SetDeadline(time.Now().Add(timeout))
	pins := certs.NewPins(a.Thumbprint)
	if a.NextThumbprint != "" {
		pins.Set(a.Thumbprint, a.NextThumbprint)
	}
	conn := tls.Client(raw, protocol.DialerTLS{
		Certificate: d.s.ids.ForAgent(a.ServerThumbprintAck),
		Agent:       pins,
		MinVersion:  d.s.cfg.TLSMin,
	}.Config())
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, d.handshakeError(a, err)
	}
	// With TLS 1.3 the client's handshake ends before the agent has
	// judged the coordinator's certificate: a refusal arrives as the
	// first read. The agent speaks first (its session's first stream, for
	// Hello), so reading one byte here turns a refusal into this dial's
	// error rather than a session that never says hello.
	br := bufio.NewReader(conn)
	if _, err := br.Peek(1); err != nil {
		conn.Close()
		return nil, d.handshakeError(a, err)
	}
	log := d.s.log.WithLazy(zap.String("remote", a.Address), zap.Bool("dialed", true))
	return d.s.startSession(raw, &peekedConn{Conn: conn, r: br}, conn.ConnectionState(), log, release, true)
}

// handshakeError says what a failed handshake with a listening agent
// means for the operator.
func (d *dialer) handshakeError(a store.Agent, err error) error {
	var op *net.OpError
	switch {
	case errors.Is(err, certs.ErrUntrusted):
		return fmt.Errorf("TLS handshake with %s: the agent there is not %s (check the address and the thumbprint): %w", a.Address, a.Name, err)
	case errors.As(err, &op) && op.Op == "remote error" && strings.Contains(op.Err.Error(), "certificate"):
		// crypto/tls reports the agent's alert (bad_certificate) only
		// in this form.
		return fmt.Errorf("TLS handshake with %s: the agent does not trust this coordinator's certificate (register it again with --server-thumbprint %s): %w", a.Address, d.s.ids.Current(), err)
	}
	return fmt.Errorf("TLS handshake with %s: %w", a.Address, err)
}

// peekedConn reads what was peeked before the rest of the connection.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// shouldDial says whether this node should dial a listening agent now:
// nil if so, errNotDialer if it holds the session already, another live
// node does, or another node (or none, when all drain) should dial it.
func (s *Server) shouldDial(a store.Agent) error {
	if s.sessions.get(a.ID) != nil {
		return errNotDialer // already held here
	}
	if a.Node != "" && a.Node != s.nodeID() {
		if _, alive := s.nodeAlive(a.Node); alive {
			return errNotDialer
		}
	}
	if s.members.Dialer(a.ID) != s.nodeID() {
		return errNotDialer
	}
	return nil
}

// sleepCtx waits d, or less if ctx ends first; it reports whether the
// wait ran to its end.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
