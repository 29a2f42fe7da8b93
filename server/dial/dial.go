// Package dial keeps the coordinator's sessions to listening agents: the
// agents it dials rather than the ones that dial it. It decides nothing
// about who holds an agent (Core.ShouldDial does, from the sessions and
// the other nodes) and runs no session itself: it dials, pins the agent's
// certificate, and hands the connection to Core.Start.
package dial

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

// maxDials bounds the handshakes the dialer runs at once, so that a
// restarted coordinator reaching thousands of listening agents does not
// starve the agents dialing it of CPU.
const maxDials = 16

// Core is what the dialer asks of the coordinator core.
type Core interface {
	// ShouldDial reports whether this node should dial the agent now:
	// not if it holds the agent's session already, another live node
	// does, or another node is the one to dial it.
	ShouldDial(ctx context.Context, a store.Agent) bool
	// Start runs the agent's session over a completed handshake (conn,
	// whose state is cs, over raw) and returns once the agent was
	// welcomed, with a channel closed when the session ends. release
	// gives back the dial's handshake slot.
	Start(raw, conn net.Conn, cs tls.ConnectionState, log *zap.Logger, release func()) (<-chan struct{}, error)
	// End closes the agent's session on this node, if any.
	End(agentID string)
	// Certificate is the coordinator certificate to present to an agent
	// whose last acknowledged coordinator thumbprint is ack.
	Certificate(ack string) *tls.Certificate
	// Thumbprint is the coordinator's current certificate's.
	Thumbprint() string
	// Refresh reads the coordinator nodes anew, for ShouldDial.
	Refresh(ctx context.Context) error
	// Go runs f in a goroutine the coordinator waits for at shutdown,
	// unless it is shutting down already.
	Go(f func()) bool
}

// Store is the part of the store the dialer reads and writes.
type Store interface {
	ListListeningAgents(ctx context.Context) ([]store.Agent, error)
	AgentByID(ctx context.Context, id string) (store.Agent, error)
	SetDialError(ctx context.Context, id, message string) error
}

// Config configures a Dialer. Core and Store are required.
type Config struct {
	Core  Core
	Store Store
	// Scan is how often to look for agents to dial that no node holds.
	Scan time.Duration
	// MaxBackoff caps the wait between attempts to reach one agent.
	MaxBackoff time.Duration
	// HandshakeTimeout bounds the TCP connect and the TLS handshake.
	HandshakeTimeout time.Duration
	// TLSMin is the lowest TLS version offered.
	TLSMin uint16
	Logger *zap.Logger
}

// Dialer keeps a session to every listening agent this node should hold:
// one loop per agent, which dials with backoff and jitter, waits while the
// session lasts and dials again.
type Dialer struct {
	cfg   Config
	log   *zap.Logger
	kickc chan struct{}
	slots chan struct{} // a slot per handshake under way

	mu    sync.Mutex
	loops map[string]*loop // by agent ID
	// started is false until the first scan, which spreads the first
	// dials of a restarted node over the reconnect window.
	started bool
	// scans counts the scans done.
	scans atomic.Int64
}

// loop is the loop dialing one agent.
type loop struct {
	// redial asks the loop to end its session and dial again now: the
	// agent's address changed.
	redial chan struct{}
}

// New returns a Dialer over cfg; Run starts it.
func New(cfg Config) *Dialer {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Dialer{cfg: cfg, log: cfg.Logger, kickc: make(chan struct{}, 1),
		slots: make(chan struct{}, maxDials), loops: make(map[string]*loop)}
}

// Kick makes the dialer look for agents to dial now.
func (d *Dialer) Kick() {
	select {
	case d.kickc <- struct{}{}:
	default:
	}
}

// Redial makes the agent's loop, if any, end its session and dial again
// now, and the dialer look for the agent otherwise.
func (d *Dialer) Redial(agentID string) {
	d.mu.Lock()
	l := d.loops[agentID]
	d.mu.Unlock()
	if l == nil {
		d.Kick()
		return
	}
	select {
	case l.redial <- struct{}{}:
	default:
	}
}

// Scans counts the scans done so far, which tests wait on.
func (d *Dialer) Scans() int64 { return d.scans.Load() }

// Run scans for listening agents to dial until ctx is done. The loops it
// starts end with ctx too.
func (d *Dialer) Run(ctx context.Context) {
	t := time.NewTicker(d.cfg.Scan)
	defer t.Stop()
	for {
		if err := d.scan(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("look for listening agents to dial failed", zap.Error(err))
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
func (d *Dialer) scan(ctx context.Context) error {
	defer d.scans.Add(1)
	// Which node dials an agent is decided on the nodes as this scan
	// reads them, not as the last heartbeat did: a node that just started
	// knows no other yet, and would dial what another node holds.
	if err := d.cfg.Core.Refresh(ctx); err != nil {
		return err
	}
	all, err := d.cfg.Store.ListListeningAgents(ctx)
	if err != nil {
		return err
	}
	// Agents with a loop are that loop's to judge: asked here, ShouldDial
	// could take a session being set up for a stale record.
	d.mu.Lock()
	var candidates []store.Agent
	for _, a := range all {
		if a.Listening() && d.loops[a.ID] == nil {
			candidates = append(candidates, a)
		}
	}
	d.mu.Unlock()
	var mine []store.Agent
	for _, a := range candidates {
		if d.cfg.Core.ShouldDial(ctx, a) {
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
		l := &loop{redial: make(chan struct{}, 1)}
		var delay time.Duration
		if len(mine) > 1 && spread > 0 {
			delay = time.Duration(rand.Int64N(int64(spread)))
		}
		if !d.cfg.Core.Go(func() { d.loop(ctx, a.ID, l, delay) }) {
			return nil
		}
		d.loops[a.ID] = l
	}
	return nil
}

// loop dials one agent and waits on its sessions until ctx is done, the
// agent is deleted or is no longer this node's to dial.
func (d *Dialer) loop(ctx context.Context, agentID string, l *loop, delay time.Duration) {
	defer func() {
		d.mu.Lock()
		delete(d.loops, agentID)
		d.mu.Unlock()
	}()
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = time.Second
	bo.MaxInterval = d.cfg.MaxBackoff
	bo.MaxElapsedTime = 0
	bo.Reset()
	if !sleep(ctx, delay) {
		return
	}
	for {
		a, err := d.cfg.Store.AgentByID(ctx, agentID)
		if errors.Is(err, store.ErrNotFound) || err == nil && (!a.Listening() || !d.cfg.Core.ShouldDial(ctx, a)) {
			return
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// The store, not the agent: nothing to record on it. An
			// outage is logged once, by the heartbeat.
			if !errors.Is(err, store.ErrUnavailable) {
				d.log.Warn("read listening agent failed", zap.String("agent_id", agentID), zap.Error(err))
			}
		} else {
			var done <-chan struct{}
			done, err = d.dial(ctx, a)
			if ctx.Err() != nil {
				return
			}
			if err == nil && done == nil {
				err = fmt.Errorf("the agent at %s ended its session before saying hello", a.Address)
			}
			if err == nil {
				bo.Reset()
				if !d.serve(ctx, a, l, done, bo) {
					return
				}
				continue
			}
			if !errors.Is(err, store.ErrUnavailable) {
				d.failed(ctx, a, err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-l.redial:
		case <-time.After(retryWait(err, bo)):
		}
	}
}

// outageRetry bounds the wait before dialing again while the database
// is unreachable: the agent is not at fault, and once the database is
// back it should be dialed within seconds, not after a backoff grown over
// the outage. The jitter spreads a fleet's dials over the window.
const outageRetry = 3 * time.Second

// retryWait is how long to wait before dialing again after err: the
// backoff's next wait, or, while the database is unreachable, at most
// outageRetry, leaving the backoff where it was.
func retryWait(err error, bo backoff.BackOff) time.Duration {
	if errors.Is(err, store.ErrUnavailable) {
		return outageRetry/3 + rand.N(outageRetry*2/3)
	}
	return bo.NextBackOff()
}

// serve waits while a dialed session lasts. It reports false if ctx
// ended first.
func (d *Dialer) serve(ctx context.Context, a store.Agent, l *loop, done <-chan struct{}, bo backoff.BackOff) bool {
	if err := d.cfg.Store.SetDialError(ctx, a.ID, ""); err != nil && ctx.Err() == nil {
		d.log.Warn("record dial success failed", zap.String("agent", a.Name), zap.Error(err))
	}
	select {
	case <-done:
		// Dial again soon, not at once: a session that ends as soon as it
		// starts must not become a busy loop. A redial asked for during
		// the session's end is that new dial.
		select {
		case <-l.redial:
		default:
		}
		return sleep(ctx, bo.NextBackOff())
	case <-l.redial:
		d.cfg.Core.End(a.ID)
		<-done
		return true
	case <-ctx.Done():
		return false
	}
}

// failed records why a dial failed, where every node's API shows it.
func (d *Dialer) failed(ctx context.Context, a store.Agent, err error) {
	msg := err.Error()
	if msg == a.DialError {
		d.log.Debug("listening agent still unreachable", zap.String("agent", a.Name), zap.Error(err))
		return
	}
	d.log.Warn("could not reach listening agent", zap.String("agent", a.Name), zap.String("address", a.Address), zap.Error(err))
	if err := d.cfg.Store.SetDialError(ctx, a.ID, msg); err != nil && ctx.Err() == nil {
		d.log.Warn("record dial error failed", zap.String("agent", a.Name), zap.Error(err))
	}
}

// dial connects to a listening agent, pinning its certificate, and starts
// its session. It returns once the agent was welcomed, with a channel
// closed when the session ends.
func (d *Dialer) dial(ctx context.Context, a store.Agent) (<-chan struct{}, error) {
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
	timeout := d.cfg.HandshakeTimeout
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
		Certificate: d.cfg.Core.Certificate(a.ServerThumbprintAck),
		Agent:       pins,
		MinVersion:  d.cfg.TLSMin,
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
	log := d.log.WithLazy(zap.String("remote", a.Address), zap.Bool("dialed", true))
	return d.cfg.Core.Start(raw, &peekedConn{Conn: conn, r: br}, conn.ConnectionState(), log, release)
}

// handshakeError says what a failed handshake with a listening agent
// means for the operator.
func (d *Dialer) handshakeError(a store.Agent, err error) error {
	var op *net.OpError
	switch {
	case errors.Is(err, certs.ErrUntrusted):
		return fmt.Errorf("TLS handshake with %s: the agent there is not %s (check the address and the thumbprint): %w", a.Address, a.Name, err)
	case errors.As(err, &op) && op.Op == "remote error" && strings.Contains(op.Err.Error(), "certificate"):
		// crypto/tls reports the agent's alert (bad_certificate) only
		// in this form.
		return fmt.Errorf("TLS handshake with %s: the agent does not trust this coordinator's certificate (register it again with --server-thumbprint %s): %w",
			a.Address, d.cfg.Core.Thumbprint(), err)
	}
	return fmt.Errorf("TLS handshake with %s: %w", a.Address, err)
}

// peekedConn reads what was peeked before the rest of the connection.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// sleep waits d, or less if ctx ends first; it reports whether the wait
// ran to its end.
func sleep(ctx context.Context, d time.Duration) bool {
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
