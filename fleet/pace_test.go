package fleet

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestConnectPacer: at most n connections are between their connect and
// their first write; a write, a close or a failed connect gives the slot
// back, and a dial waiting for one ends with its context.
func TestConnectPacer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	p := newConnectPacer(2, 5*time.Second)
	ctx := context.Background()
	dial := func() net.Conn {
		t.Helper()
		c, err := p.dial(ctx, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	full := func() bool {
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		c, err := p.dial(cctx, "tcp", ln.Addr().String())
		if err == nil {
			c.Close()
			return false
		}
		return true
	}

	a, b := dial(), dial()
	if !full() {
		t.Fatal("a third connect with two silent: got a slot, want none")
	}
	if _, err := a.Write([]byte{0x16}); err != nil {
		t.Fatal(err)
	}
	if full() {
		t.Fatal("after the first's write: got no slot, want one")
	}
	c := dial() // the slot a's write gave back
	if !full() {
		t.Fatal("b and c silent: got a slot, want none")
	}
	b.Close()
	b.Close() // once only
	c.Write([]byte{0x16})
	c.Write([]byte{0x16}) // once only
	d, e := dial(), dial()
	if !full() {
		t.Fatal("d and e silent: got a slot, want none")
	}
	d.Close()
	e.Close()
	a.Close()
	c.Close()

	// A connect that fails gives its slot back.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := dead.Addr().String()
	dead.Close()
	for range 3 {
		if _, err := p.dial(ctx, "tcp", addr); err == nil {
			t.Fatal("dial to a closed port: got a connection")
		}
	}
	f, g := dial(), dial()
	f.Close()
	g.Close()
}
