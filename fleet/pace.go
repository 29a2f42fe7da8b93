package fleet

import (
	"context"
	"net"
	"sync"
	"time"
)

// connectPacer lets a connection be made only while its ClientHello can
// follow at once. A real agent's first byte reaches the coordinator one
// round trip after its TCP handshake, since each agent has its own host.
// The simulator's agents share two cores with the coordinator: started at
// once, 10,000 connects complete in the kernel within a second while
// their ClientHellos, each a key generation away, trickle out over many.
// The coordinator then holds thousands of connections that have not said
// a word, which is what a flood looks like (server/admission closes the
// oldest silent ones to make room), not a fleet. Holding each connect
// until its agent's handshake can start keeps what the coordinator sees
// what it would see of a real fleet, at whatever rate the simulator can
// produce ClientHellos, which is well above the rate the coordinator
// completes handshakes.
type connectPacer struct {
	slots   chan struct{}
	timeout time.Duration
}

// newConnectPacer allows n connections at once between their connect
// and their first write; timeout bounds each connect.
func newConnectPacer(n int, timeout time.Duration) *connectPacer {
	return &connectPacer{slots: make(chan struct{}, n), timeout: timeout}
}

// dial is an agent.Config.Dial: it waits for a slot, connects, and hands
// the slot back when the connection first writes (its ClientHello), is
// closed, or fails to connect.
func (p *connectPacer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	d := net.Dialer{Timeout: p.timeout}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		<-p.slots
		return nil, err
	}
	return &pacedConn{Conn: c, release: sync.OnceFunc(func() { <-p.slots })}, nil
}

// pacedConn releases its pacer slot at its first write or its close.
type pacedConn struct {
	net.Conn
	release func()
}

func (c *pacedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.release()
	return n, err
}

func (c *pacedConn) Close() error {
	c.release()
	return c.Conn.Close()
}
