// Package faultproxy provides a fault-injecting TCP proxy for tests.
//
// A Proxy listens on a loopback port and forwards every accepted connection
// to a target address. While it runs, tests can inject network faults in
// user space: abrupt resets (KillAll, CutAfter), stalls (Pause), latency
// (SetLatency), throttling (SetDrip), refused service (SetRefuse) and a
// moved server (SetTarget). It is in the spirit of Halibut's PortForwarder
// used by Octopus Tentacle's tests.
//
// The proxy owns every goroutine it starts; Close stops them all and waits
// for them, so tests can verify with goleak that nothing is left behind.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// bufSize is the size of the buffer each forwarding direction reads into.
const bufSize = 32 * 1024

// acceptRetry is how long the accept loop waits after a non-fatal Accept
// error (for example running out of file descriptors) before trying again.
const acceptRetry = 5 * time.Millisecond

// errKilled is returned internally when a connection was ended by the proxy.
var errKilled = errors.New("faultproxy: connection killed")

// Proxy is a fault-injecting TCP proxy listening on 127.0.0.1. All methods
// are safe for concurrent use.
type Proxy struct {
	ln   net.Listener
	done chan struct{} // closed by Close
	wg   sync.WaitGroup

	accepted  atomic.Int64
	forwarded atomic.Int64

	mu        sync.Mutex
	closed    bool
	target    string
	paused    bool
	gate      chan struct{} // closed while not paused; replaced by Pause, closed by Resume
	latency   time.Duration
	dripChunk int
	dripEvery time.Duration
	cutAfter  int64
	cutReply  int // connections still to cut at their first reply byte
	refuse    bool
	conns     map[*conn]struct{}
}

// New starts a proxy listening on 127.0.0.1:0 that forwards to target.
// The target is only dialled when a client connects, so it need not be
// reachable yet. Call Close to stop the proxy.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	open := make(chan struct{})
	close(open)
	p := &Proxy{
		ln:     ln,
		done:   make(chan struct{}),
		target: target,
		gate:   open,
		conns:  make(map[*conn]struct{}),
	}
	p.wg.Go(p.acceptLoop)
	return p, nil
}

// Addr returns the host:port to dial instead of the target.
func (p *Proxy) Addr() string {
	return p.ln.Addr().String()
}

// Close stops listening, closes every connection abruptly and waits for all
// of the proxy's goroutines to end. It is idempotent: later calls wait for
// the same shutdown and return nil.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	close(p.done)
	conns := p.snapshotLocked()
	p.mu.Unlock()

	err := p.ln.Close()
	for _, c := range conns {
		c.kill()
	}
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("faultproxy: close listener: %w", err)
	}
	return nil
}

// KillAll closes every current connection abruptly: SO_LINGER is set to 0 on
// both of its sockets, so the client and the target each see a reset. The
// proxy keeps listening and accepts new connections.
func (p *Proxy) KillAll() {
	p.mu.Lock()
	conns := p.snapshotLocked()
	p.mu.Unlock()
	for _, c := range conns {
		c.kill()
	}
}

// Pause stops forwarding bytes in both directions on all connections. The
// connections stay open and new ones are still accepted (and dialled through
// to the target) but are paused too. A clean half-close is not propagated
// while paused either. Pause does not delay Close, KillAll or CutAfter.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.paused {
		p.paused = true
		p.gate = make(chan struct{})
	}
}

// Resume undoes Pause: forwarding continues where it stopped.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		p.paused = false
		close(p.gate)
	}
}

// SetLatency delays each forwarded chunk (each successful read from one
// side) by d before it is written to the other side; 0 (or less) turns the
// delay off. Chunks of one direction are delayed one after another, so the
// latency also limits throughput. It applies to existing connections
// immediately.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = max(d, 0)
}

// SetDrip throttles every direction of every connection to at most chunk
// bytes per every. A chunk or every of 0 (or less) turns throttling off. It
// applies to existing connections immediately.
func (p *Proxy) SetDrip(chunk int, every time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if chunk <= 0 || every <= 0 {
		p.dripChunk, p.dripEvery = 0, 0
		return
	}
	p.dripChunk, p.dripEvery = chunk, every
}

// CutAfter makes each connection accepted from now on close abruptly once
// exactly n bytes have been forwarded in total across both directions. No
// byte beyond the n-th is forwarded. 0 (or less) turns it off for new
// connections; existing connections keep the limit they started with.
func (p *Proxy) CutAfter(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutAfter = max(n, 0)
}

// CutReplies makes the next n connections accepted close abruptly as soon
// as the target sends its first byte, which the client never gets: the
// request arrived whole and was acted on, its answer is lost (a server
// killed after its commit, a connection broken on the way back).
func (p *Proxy) CutReplies(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutReply = max(n, 0)
}

// SetRefuse makes the proxy accept new connections and close them
// immediately (the client sees end of file), without dialling the target:
// a server that is down while its port is still open. Existing connections
// are not affected.
func (p *Proxy) SetRefuse(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = refuse
}

// SetTarget makes connections accepted from now on go to target, for
// example a server restarted on a new port. Existing connections keep their
// target.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// Active returns the number of connections currently open through the
// proxy. Refused connections are never counted.
func (p *Proxy) Active() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Accepted returns the number of connections accepted since the proxy
// started, including refused ones.
func (p *Proxy) Accepted() int64 {
	return p.accepted.Load()
}

// BytesForwarded returns the number of bytes written to either side, over
// all connections and both directions, since the proxy started.
func (p *Proxy) BytesForwarded() int64 {
	return p.forwarded.Load()
}

func (p *Proxy) snapshotLocked() []*conn {
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	return conns
}

func (p *Proxy) acceptLoop() {
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t := time.NewTimer(acceptRetry)
			select {
			case <-p.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		p.accepted.Add(1)

		p.mu.Lock()
		switch {
		case p.closed:
			p.mu.Unlock()
			abort(nc)
			continue
		case p.refuse:
			p.mu.Unlock()
			_ = nc.Close()
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		c := &conn{
			p:      p,
			client: nc,
			target: p.target,
			limit:  p.cutAfter,
			ctx:    ctx,
			cancel: cancel,
		}
		if p.cutReply > 0 {
			p.cutReply--
			c.cutReply = true
		}
		p.conns[c] = struct{}{}
		// The accept loop is itself counted in wg and has not returned,
		// so this Add cannot race with a Wait that sees a zero counter.
		p.wg.Go(c.run)
		p.mu.Unlock()
	}
}

func (p *Proxy) remove(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

// settings returns the current per-chunk settings.
func (p *Proxy) settings() (latency time.Duration, dripChunk int, dripEvery time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latency, p.dripChunk, p.dripEvery
}

// conn is one proxied connection: the accepted client socket and the socket
// dialled to the target.
type conn struct {
	p      *Proxy
	client net.Conn
	target string
	limit  int64 // CutAfter limit for this connection; 0 = none
	// cutReply kills the connection at the target's first byte.
	cutReply bool

	// ctx is cancelled when the connection ends; it aborts the dial and
	// every wait (pause, latency, drip).
	ctx    context.Context
	cancel context.CancelFunc

	claimed atomic.Int64 // bytes reserved for writing, at most limit
	written atomic.Int64 // bytes actually written

	mu     sync.Mutex
	ended  bool
	server net.Conn
}

func (c *conn) run() {
	defer c.p.remove(c)
	defer c.cancel()

	var d net.Dialer
	server, err := d.DialContext(c.ctx, "tcp", c.target)
	if err != nil {
		// The target is unreachable (or the connection was killed while
		// dialling): reset the client.
		c.kill()
		return
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		abort(server)
		return
	}
	c.server = server
	c.mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(func() {
		if c.cutReply {
			// Wait for the reply's first byte, then cut without passing
			// it on.
			var b [1]byte
			if _, err := server.Read(b[:]); err == nil {
				c.kill()
				return
			}
		}
		c.pump(server, c.client)
	})
	c.pump(c.client, server)
	wg.Wait()
	c.finish()
}

// kill closes both sockets abruptly so that both peers see a reset. It is a
// no-op if the connection has already ended.
func (c *conn) kill() { c.end(true) }

// finish closes both sockets gracefully after both directions ended cleanly.
func (c *conn) finish() { c.end(false) }

func (c *conn) end(abruptly bool) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	server := c.server
	c.mu.Unlock()

	c.cancel()
	for _, sock := range []net.Conn{c.client, server} {
		switch {
		case sock == nil:
		case abruptly:
			abort(sock)
		default:
			_ = sock.Close()
		}
	}
}

// pump forwards src to dst until src ends. A clean end of src is propagated
// as a half-close of dst; any other failure kills the whole connection.
func (c *conn) pump(src, dst net.Conn) {
	buf := make([]byte, bufSize)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if err := c.forward(dst, buf[:n]); err != nil {
				c.kill()
				return
			}
		}
		if rerr == nil {
			continue
		}
		if !errors.Is(rerr, io.EOF) {
			c.kill()
			return
		}
		if err := c.waitGate(); err != nil {
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			if err := cw.CloseWrite(); err != nil {
				c.kill()
			}
		}
		return
	}
}

// forward writes b to dst, honouring pause, latency, drip and the cut limit.
func (c *conn) forward(dst net.Conn, b []byte) error {
	if err := c.waitGate(); err != nil {
		return err
	}
	latency, _, _ := c.p.settings()
	if err := c.sleep(latency); err != nil {
		return err
	}
	for len(b) > 0 {
		if err := c.waitGate(); err != nil {
			return err
		}
		_, chunk, every := c.p.settings()
		piece := b
		if chunk > 0 && len(piece) > chunk {
			piece = piece[:chunk]
		}
		if c.limit > 0 {
			k := c.claim(len(piece))
			if k == 0 {
				// The other direction holds the rest of the allowance
				// and kills the connection once it has written it.
				<-c.ctx.Done()
				return errKilled
			}
			piece = piece[:k]
		}
		n, err := dst.Write(piece)
		if n > 0 {
			c.p.forwarded.Add(int64(n))
			if c.limit > 0 && c.written.Add(int64(n)) >= c.limit {
				c.kill()
				return errKilled
			}
		}
		if err != nil {
			return err
		}
		b = b[n:]
		if chunk > 0 {
			if err := c.sleep(every); err != nil {
				return err
			}
		}
	}
	return nil
}

// claim reserves up to want bytes of the connection's cut allowance and
// returns how many it got (0 once the allowance is used up).
func (c *conn) claim(want int) int {
	for {
		cur := c.claimed.Load()
		rem := c.limit - cur
		if rem <= 0 {
			return 0
		}
		k := min(int64(want), rem)
		if c.claimed.CompareAndSwap(cur, cur+k) {
			return int(k)
		}
	}
}

// waitGate blocks while the proxy is paused. It returns errKilled if the
// connection ends first.
func (c *conn) waitGate() error {
	for {
		c.p.mu.Lock()
		paused, gate := c.p.paused, c.p.gate
		c.p.mu.Unlock()
		if !paused {
			if c.ctx.Err() != nil {
				return errKilled
			}
			return nil
		}
		select {
		case <-gate:
		case <-c.ctx.Done():
			return errKilled
		}
	}
}

// sleep waits for d, or returns errKilled if the connection ends first.
func (c *conn) sleep(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-c.ctx.Done():
		return errKilled
	}
}

// abort closes nc so that its peer sees a reset rather than end of file.
func abort(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = nc.Close()
}
