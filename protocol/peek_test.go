package protocol

import (
	"net"
	"testing"
	"time"
)

func TestPeek(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go b.Write([]byte("hello"))
	c, err := Peek(a, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Time{})
	got := make([]byte, 5)
	n := 0
	for n < len(got) {
		m, err := c.Read(got[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += m
	}
	if string(got) != "hello" {
		t.Fatalf("read after the peek: got %q, want %q", got, "hello")
	}
	// A peer that says nothing is not waited for past the deadline.
	silent, peer := net.Pipe()
	defer silent.Close()
	defer peer.Close()
	if _, err := Peek(silent, time.Millisecond); err == nil {
		t.Fatal("peek at a silent peer: got no error, want the deadline's")
	}
}
