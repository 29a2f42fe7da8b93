package protocol

import (
	"encoding/binary"
	"net"
	"sync"
)

// yamux frame header layout (hashicorp/yamux, protocol version 0): version,
// type, flags, stream ID, length.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	// maxJoined is the largest header plus body joined into one write:
	// one TLS record's worth. Larger bodies are bulk transfers, where one
	// extra small record per frame does not matter.
	maxJoined = 16 << 10
)

var joinBuffers = sync.Pool{New: func() any { return new([maxJoined]byte) }}

// frameConn writes a yamux data frame's header and body with one Write.
// yamux's send loop writes the 12-byte header and the body separately, and
// over TLS each Write is a record of its own and a syscall: every small
// message (a health check, a reply) cost twice the records and syscalls it
// needs. In the health sweep of 10,000 agents, write syscalls were a
// quarter of the coordinator's CPU (BENCHMARKS.md).
//
// Only yamux's send loop writes to the connection, one frame at a time, so
// a held header is always followed by its body in the very next Write.
type frameConn struct {
	net.Conn
	hdr  [yamuxHeaderSize]byte
	held bool
	// watch, if set, learns of the streams the peer opens (from the
	// frames read) and of the connection's close.
	watch *Watch
	rd    frameScanner
}

func (c *frameConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.watch != nil && n > 0 {
		c.rd.scan(p[:n], c.watch.opened)
	}
	return n, err
}

// Close closes the connection; yamux calls it once, as the session ends
// for whatever reason.
func (c *frameConn) Close() error {
	err := c.Conn.Close()
	if c.watch != nil {
		c.watch.connClosed()
	}
	return err
}

func (c *frameConn) Write(p []byte) (int, error) {
	if !c.held {
		if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
			// A data frame's header: its body comes next.
			copy(c.hdr[:], p)
			c.held = true
			return len(p), nil
		}
		return c.Conn.Write(p)
	}
	c.held = false
	if len(p) > maxJoined-yamuxHeaderSize {
		if _, err := c.Conn.Write(c.hdr[:]); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	buf := joinBuffers.Get().(*[maxJoined]byte)
	defer joinBuffers.Put(buf)
	n := copy(buf[:], c.hdr[:])
	n += copy(buf[n:], p)
	w, err := c.Conn.Write(buf[:n])
	return max(0, w-yamuxHeaderSize), err
}
