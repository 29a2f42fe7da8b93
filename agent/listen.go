package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

// DefaultListenPort is the port a listening agent binds unless told
// otherwise.
const DefaultListenPort = 10933

// Limits on who may knock on a listening agent's port. Only a pinned
// coordinator gets past the handshake, so these bound what everyone else
// can make the agent spend, and keep a pinned coordinator able to get in
// while others knock.
const (
	// maxListenHandshakes is how many handshakes from unknown addresses
	// run at once; further connections are closed at once, before TLS.
	maxListenHandshakes = 4
	// reservedHandshakes are kept for the addresses pinned coordinators
	// connected from before, which also skip the rate limit: a flood
	// from elsewhere does not lock the coordinator out.
	reservedHandshakes = 2
	// maxPerAddress is how many handshakes one unknown address may have
	// under way.
	maxPerAddress = 2
	// maxKnownAddresses bounds the addresses remembered as pinned
	// coordinators'.
	maxKnownAddresses = 64
	// listenRate and listenBurst bound new connections per second from
	// unknown addresses.
	listenRate  = 10
	listenBurst = 20
	// firstByteTimeout is how long a new connection may stay silent: a
	// coordinator sends its TLS hello at once, so a peer that says
	// nothing gives its handshake slot back quickly.
	firstByteTimeout = 2 * time.Second
)

// ListenConfig makes a listening agent: one the coordinator dials, for a
// machine that may not open connections out.
type ListenConfig struct {
	// Home is the agent's home folder; it is created if missing.
	Home string
	// Listen is the address to bind, host:port; ":10933" binds every
	// interface.
	Listen string
	// ServerThumbprints are the coordinator certificates to accept, as the
	// operator got them out of band ("tendril-server info"). Accepted in
	// any form certs.NormalizeThumbprint takes.
	ServerThumbprints []string
	// Name is the common name of the agent's certificate. The agent's
	// name on the coordinator is the one the operator gives when adding
	// it. Default: the host name.
	Name string
	// Force replaces an existing registration. The agent keeps its
	// certificate, so the coordinator's record of it stays valid.
	Force bool
}

func (c *ListenConfig) validate() error {
	if c.Home == "" {
		return errors.New("register listening agent: no home folder given")
	}
	abs, err := filepath.Abs(c.Home)
	if err != nil {
		return fmt.Errorf("register listening agent: home folder %q: %w", c.Home, err)
	}
	c.Home = abs
	if err := ValidateListen(c.Listen); err != nil {
		return fmt.Errorf("register listening agent: %w", err)
	}
	if len(c.ServerThumbprints) == 0 {
		return errors.New("register listening agent: no coordinator thumbprint given: the agent would accept no coordinator")
	}
	for i, t := range c.ServerThumbprints {
		n, err := certs.NormalizeThumbprint(t)
		if err != nil {
			return fmt.Errorf("register listening agent: coordinator %w", err)
		}
		c.ServerThumbprints[i] = n
	}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "tendril-agent"
		}
		c.Name = h
	}
	return nil
}

// ValidateListen checks a listening address: host:port with a numeric
// port, the host optional (every interface).
func ValidateListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %v (want HOST:PORT or :PORT)", addr, err)
	}
	return protocol.ValidateAddress(net.JoinHostPort(cmpOr(host, "0.0.0.0"), port))
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// RegisterListening makes home a listening agent's: its identity, and the
// coordinator certificates it accepts. Nothing goes over the network: the
// operator then adds the agent on the coordinator with its address and
// the thumbprint returned in the state's certificate (Thumbprint), and the
// coordinator dials it. It refuses to replace a registration unless
// cfg.Force is set.
func RegisterListening(cfg ListenConfig) (State, error) {
	if err := cfg.validate(); err != nil {
		return State{}, err
	}
	// First: the registration found in a home another user could change
	// is not believed, not even to say it exists.
	if err := makeHome(cfg.Home); err != nil {
		return State{}, err
	}
	if !cfg.Force {
		prev, err := LoadState(cfg.Home)
		if err == nil {
			where := prev.Listen
			if where == "" {
				where = "coordinator " + strings.Join(prev.Servers, ", ")
			}
			return State{}, fmt.Errorf("already registered (%s); use --force to register again", where)
		}
		if !errors.Is(err, ErrNotRegistered) {
			return State{}, err
		}
	}
	if _, err := loadOrCreateIdentity(cfg.Home, cfg.Name); err != nil {
		return State{}, err
	}
	st := State{
		Listen:            cfg.Listen,
		ServerThumbprints: cfg.ServerThumbprints,
		ServerHint:        cfg.ServerThumbprints[0],
		RegisteredAt:      time.Now().UTC(),
	}
	if err := saveState(cfg.Home, st); err != nil {
		return State{}, fmt.Errorf("register listening agent: %w", err)
	}
	return st, nil
}

// adoptWelcome keeps what a Welcome says of this agent: its ID, name and
// environment on the coordinator, which a listening agent learns there,
// and the coordinator's signing key, which it keeps from its first
// Welcome on: a later, different key is not taken, since bundles and
// upgrades signed with it would then be trusted on the word of a session
// alone.
func (a *Agent) adoptWelcome(w protocol.Welcome) error {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	next := a.state
	if w.AgentID != "" {
		next.AgentID = w.AgentID
	}
	if w.Name != "" {
		next.Name = w.Name
	}
	if w.Environment != "" {
		next.Environment = w.Environment
	}
	newKey := false
	switch {
	case w.SigningKey == "" || w.SigningKey == next.SigningKey:
	case next.SigningKey == "" && validSigningKey(w.SigningKey):
		next.SigningKey = w.SigningKey
		newKey = true
	case next.SigningKey == "":
		a.log.Warn("the coordinator announced a signing key that is not one; bundles and upgrades stay refused until it sends a valid one",
			zap.String("announced", w.SigningKey))
	default:
		a.log.Warn("the coordinator announced another signing key; keeping the one this agent has: bundles signed with the new one will be refused",
			zap.String("kept", next.SigningKey), zap.String("announced", w.SigningKey))
	}
	if next.AgentID == a.state.AgentID && next.Name == a.state.Name && next.Environment == a.state.Environment && !newKey {
		return nil
	}
	if err := saveState(a.cfg.Home, next); err != nil {
		return err
	}
	a.state = next
	if newKey {
		a.calamari.SetSigningKey(next.SigningKey)
		a.log.Info("coordinator signing key learned", zap.String("signing_key", next.SigningKey))
	}
	return nil
}

// validSigningKey reports whether k is a hex Ed25519 public key.
func validSigningKey(k string) bool {
	b, err := hex.DecodeString(k)
	return err == nil && len(b) == ed25519.PublicKeySize
}

// listen is Run for a listening agent: it binds its address, accepts the
// coordinator's connections, and serves the newest session until ctx is
// done. A bind that fails (the port is taken) is retried with backoff:
// the agent must not take its machine dark over a port that frees up.
func (a *Agent) listen(ctx context.Context, addr string) error {
	bo := newJitterBackOff(a.cfg.MinBackoff, a.cfg.MaxBackoff)
	for {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			err = fmt.Errorf("listen for the coordinator on %s: %w", addr, err)
			a.setDisconnected(err)
			wait := bo.NextBackOff()
			a.log.Error("could not listen for the coordinator", zap.Error(err), zap.Duration("retry_in", wait))
			if !sleep(ctx, wait) {
				return nil
			}
			continue
		}
		bo.Reset()
		a.log.Info("listening for the coordinator", zap.String("address", ln.Addr().String()))
		a.setListening(ln.Addr().String())
		err = a.serveListener(ctx, ln)
		if a.restart.Load() {
			return ErrRestart
		}
		if ctx.Err() != nil {
			return nil
		}
		a.log.Error("stopped accepting the coordinator's connections; listening again", zap.Error(err))
		if !sleep(ctx, bo.NextBackOff()) {
			return nil
		}
	}
}

// serveListener accepts on ln until ctx is done, the listener fails, or an
// upgrade swapped the binary. Each connection that passes the handshake
// and Hello becomes the session; a newer one replaces the older (the
// coordinator node dialing is the one that holds the agent now). ln is
// closed on return, and every goroutine started here has ended.
func (a *Agent) serveListener(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		ln.Close()
		wg.Wait()
	}()
	incoming := make(chan *liveSession)
	acceptErr := make(chan error, 1)
	wg.Go(func() { acceptErr <- a.acceptCoordinators(ctx, ln, incoming, &wg) })

	var cur *liveSession
	defer func() {
		if cur != nil {
			cur.close()
		}
	}()
	t := time.NewTicker(a.cfg.RotationCheck)
	defer t.Stop()
	for {
		var closed <-chan struct{}
		if cur != nil {
			closed = cur.ys.CloseChan()
		}
		select {
		case <-ctx.Done():
			if cur != nil {
				// As in Run: the coordinator learns the agent leaves on
				// purpose.
				cur.ys.GoAway()
			}
			return nil
		case <-a.restartc:
			// A new binary is in place; the upgrade handler closes its
			// session, and whichever session is current ends too (the
			// deferred close) so that the new binary can bind the port.
			return nil
		case err := <-acceptErr:
			return err
		case ns := <-incoming:
			if cur != nil {
				a.log.Info("a newer coordinator session replaces the current one", zap.String("from", cur.addr), zap.String("to", ns.addr))
				cur.ys.GoAway()
				cur.close()
			}
			cur = ns
			a.setConnected(cur)
			a.log.Info("coordinator connected",
				zap.String("server", cur.addr),
				zap.String("tls_version", protocol.TLSVersionName(cur.tlsVersion)),
				zap.Int("protocol", cur.welcome.Protocol),
				zap.String("agent_id", cur.welcome.AgentID))
		case <-closed:
			cur.close()
			err := errConnectionLost
			if g := cur.goAway.Load(); g != nil {
				err = &goAwayError{*g}
			}
			a.setDisconnected(err)
			a.log.Warn("coordinator session ended; waiting for the coordinator to connect again",
				zap.String("server", cur.addr), zap.Error(err), zap.Duration("lasted", time.Since(cur.established)))
			cur = nil
		case <-t.C:
			if cur == nil {
				continue
			}
			if err := a.presentPending(ctx, cur); err != nil {
				a.rotationFailed(ctx, err)
				continue
			}
			if a.identity().Thumbprint != cur.thumbprint {
				// The coordinator dials again and finds the new
				// certificate, which it was just told to accept.
				a.log.Info("certificate rotated; ending the session so the coordinator connects to the new certificate")
				a.lastRotationErr = ""
				cur.ys.GoAway()
				cur.close()
				a.setDisconnected(errors.New("certificate rotated; the coordinator connects again"))
				cur = nil
			}
		}
	}
}

// acceptCoordinators accepts connections on ln and handshakes each in a
// goroutine tracked by wg, handing the sessions that reach Welcome to
// incoming. Connections beyond the limits above are closed before TLS:
// whoever is flooding the port, a pinned coordinator retries with backoff
// anyway, and has slots of its own. It returns when ln fails or ctx is
// done.
func (a *Agent) acceptCoordinators(ctx context.Context, ln net.Listener, incoming chan<- *liveSession, wg *sync.WaitGroup) error {
	g := newKnockGate()
	tlsCfg := protocol.ListenerTLS{
		Certificate: func() *tls.Certificate { return &a.identity().Certificate },
		Pins:        a.pins,
		MinVersion:  a.cfg.TLSMinVersion,
		Endorsed:    a.endorsement(),
	}.Config()
	var tempDelay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors or similar: back off like
				// net/http does, keeping the session that is up.
				tempDelay = max(5*time.Millisecond, min(2*tempDelay, time.Second))
				if !sleep(ctx, tempDelay) {
					return nil
				}
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		tempDelay = 0
		host := remoteHost(conn)
		release, ok := g.admit(host)
		if !ok {
			conn.Close()
			continue
		}
		wg.Go(func() {
			defer release()
			ns, err := a.acceptCoordinator(ctx, conn, tlsCfg)
			if err != nil {
				// Anyone can knock; a refusal is worth a line only when
				// debugging. A pinned coordinator's failure shows on its
				// side, with the reason.
				a.log.Debug("coordinator connection refused", zap.String("remote", conn.RemoteAddr().String()), zap.Error(err))
				return
			}
			g.know(host)
			select {
			case incoming <- ns:
			case <-ctx.Done():
				ns.close()
			}
		})
	}
}

// knockGate decides which connections to the listening port get a
// handshake.
type knockGate struct {
	limiter  *rate.Limiter
	slots    chan struct{} // for unknown addresses
	reserved chan struct{} // for addresses pinned coordinators used

	mu      sync.Mutex
	pending map[string]int  // handshakes under way per unknown address
	known   map[string]bool // addresses a pinned coordinator connected from
}

func newKnockGate() *knockGate {
	return &knockGate{
		limiter:  rate.NewLimiter(listenRate, listenBurst),
		slots:    make(chan struct{}, maxListenHandshakes),
		reserved: make(chan struct{}, reservedHandshakes),
		pending:  make(map[string]int),
		known:    make(map[string]bool),
	}
}

// admit takes a handshake slot for a connection from host, or says no;
// release gives it back.
func (g *knockGate) admit(host string) (release func(), ok bool) {
	g.mu.Lock()
	known := g.known[host]
	g.mu.Unlock()
	if known {
		for _, pool := range []chan struct{}{g.reserved, g.slots} {
			select {
			case pool <- struct{}{}:
				return func() { <-pool }, true
			default:
			}
		}
		return nil, false
	}
	if !g.limiter.Allow() {
		return nil, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending[host] >= maxPerAddress {
		return nil, false
	}
	select {
	case g.slots <- struct{}{}:
	default:
		return nil, false
	}
	g.pending[host]++
	return func() {
		<-g.slots
		g.mu.Lock()
		if g.pending[host]--; g.pending[host] <= 0 {
			delete(g.pending, host)
		}
		g.mu.Unlock()
	}, true
}

// know remembers host as one a pinned coordinator connected from.
func (g *knockGate) know(host string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.known[host] && len(g.known) < maxKnownAddresses {
		g.known[host] = true
	}
}

func remoteHost(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// acceptCoordinator handshakes one connection, within the handshake
// timeout (and the first byte within firstByteTimeout), and runs Hello
// over it.
func (a *Agent) acceptCoordinator(ctx context.Context, raw net.Conn, cfg *tls.Config) (*liveSession, error) {
	id := a.identity()
	peeked, err := protocol.Peek(raw, min(firstByteTimeout, a.cfg.HandshakeTimeout))
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("wait for the TLS hello: %w", err)
	}
	raw.SetDeadline(time.Now().Add(a.cfg.HandshakeTimeout))
	conn := tls.Server(peeked, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	raw.SetDeadline(time.Time{})
	return a.startSession(ctx, conn, raw.RemoteAddr().String(), id)
}

// setListening shows, before the coordinator's first connection, where
// the agent waits for it.
func (a *Agent) setListening(addr string) {
	a.mu.Lock()
	a.status.Listening = addr
	a.mu.Unlock()
}

// sleep waits d or until ctx is done; it reports whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
