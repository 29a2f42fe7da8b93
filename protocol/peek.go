package protocol

import (
	"fmt"
	"io"
	"net"
	"time"
)

// Peek waits up to within for conn's first byte, and returns a connection
// that reads that byte again before the rest, for the TLS handshake. Both
// ends that accept TLS from the open network (the coordinator's agent
// port, a listening agent's port) wait for a peer to speak before giving
// it anything that costs: a silent socket is then cheap to hold and to
// shed. The read deadline it set is left for the caller to replace.
func Peek(conn net.Conn, within time.Duration) (net.Conn, error) {
	conn.SetReadDeadline(time.Now().Add(within))
	first := make([]byte, 1)
	if _, err := io.ReadFull(conn, first); err != nil {
		return nil, fmt.Errorf("wait for the first byte: %w", err)
	}
	return &replayConn{Conn: conn, first: first}, nil
}

// replayConn reads first before the rest of the connection.
type replayConn struct {
	net.Conn
	first []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
