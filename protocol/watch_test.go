package protocol

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

func yamuxHeader(typ uint8, flags uint16, id, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], id)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

func TestFrameScannerCountsSYNs(t *testing.T) {
	const (
		data, window, ping, goAway = 0, 1, 2, 3
		syn, ack                   = 1, 2
	)
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	body := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = 0xff // would read as SYN flags if taken for a header
		}
		return b
	}
	tests := []struct {
		name   string
		stream []byte
		want   int
	}{
		{"window update opening a stream", yamuxHeader(window, syn, 1, 256<<10), 1},
		{"data frame opening a stream, with a body", cat(yamuxHeader(data, syn, 1, 5), body(5)), 1},
		{"acknowledgement", yamuxHeader(window, ack, 2, 0), 0},
		{"body that looks like a SYN header", cat(yamuxHeader(data, 0, 2, 24), body(24), yamuxHeader(ping, 0, 0, 7)), 0},
		{"keepalive ping (SYN asks for a reply), then a stream", cat(yamuxHeader(ping, syn, 0, 1<<31), yamuxHeader(ping, ack, 0, 1<<31), yamuxHeader(window, syn, 3, 0)), 1},
		{"go away with a SYN flag", yamuxHeader(goAway, syn, 0, 0), 0},
		{"go away", yamuxHeader(goAway, 0, 0, 2), 0},
		{"three streams between data", cat(
			yamuxHeader(window, syn, 1, 0), yamuxHeader(data, 0, 1, 3), body(3),
			yamuxHeader(window, syn, 3, 0), yamuxHeader(data, syn, 5, 40000), body(40000),
			yamuxHeader(window, ack, 2, 0)), 3},
	}
	for _, tc := range tests {
		// Every way of cutting the stream in two reads, and byte by byte.
		cuts := []int{}
		for i := 0; i <= len(tc.stream) && i < 64; i++ {
			cuts = append(cuts, i)
		}
		t.Run(tc.name, func(t *testing.T) {
			for _, cut := range cuts {
				var f frameScanner
				n := 0
				f.scan(tc.stream[:cut], func() { n++ })
				f.scan(tc.stream[cut:], func() { n++ })
				if n != tc.want {
					t.Fatalf("cut at %d: got %d SYNs, want %d", cut, n, tc.want)
				}
			}
			var f frameScanner
			n := 0
			for i := range tc.stream {
				f.scan(tc.stream[i:i+1], func() { n++ })
			}
			if n != tc.want {
				t.Fatalf("byte by byte: got %d SYNs, want %d", n, tc.want)
			}
		})
	}
}

// watchedPair is a client session and a server session with a Watch,
// over a pipe.
func watchedPair(t *testing.T) (cli, srv *yamux.Session, w *Watch) {
	t.Helper()
	a, b := net.Pipe()
	cli, err := NewSession(a, SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w = new(Watch)
	srv, err = NewSession(b, SessionOptions{Server: true, Watch: w})
	if err != nil {
		cli.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.Close()
		srv.Close()
	})
	return cli, srv, w
}

// echo opens a stream, writes msg and reads it back.
func echo(s *yamux.Session, msg string) error {
	st, err := s.OpenStream()
	if err != nil {
		return err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := st.Write([]byte(msg)); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(st, got); err != nil {
		return fmt.Errorf("echo of %q: %w", msg, err)
	}
	if string(got) != msg {
		return fmt.Errorf("echo: got %q, want %q", got, msg)
	}
	return nil
}

func echoHandler(st *yamux.Stream) {
	go func() {
		defer st.Close()
		buf := make([]byte, 64)
		n, _ := st.Read(buf)
		st.Write(buf[:n])
	}()
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatchAcceptsStreamsWithoutAGoroutineWaiting(t *testing.T) {
	cli, srv, w := watchedPair(t)
	// The first stream, accepted by the session's start (a Hello).
	hello := make(chan error, 1)
	go func() {
		st, err := srv.AcceptStream()
		if err == nil {
			echoHandler(st)
		}
		hello <- err
	}()
	if err := echo(cli, "hello"); err != nil {
		t.Fatal(err)
	}
	if err := <-hello; err != nil {
		t.Fatal(err)
	}
	var closed atomic.Int32
	w.Serve(srv, 1, echoHandler, func() { closed.Add(1) })
	running := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.running
	}
	waitFor(t, "no accepting goroutine once no stream is pending", func() bool { return !running() })
	for i := range 5 {
		if err := echo(cli, "request"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the accepting goroutine ended after a request", func() bool { return !running() })
		if got := closed.Load(); got != 0 {
			t.Fatalf("request %d: closed called %d times while the session is open, want 0", i, got)
		}
	}
	// Several at once.
	errs := make(chan error)
	for range 8 {
		go func() { errs <- echo(cli, "concurrent") }()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	cli.Close()
	waitFor(t, "closed called once the peer left", func() bool { return closed.Load() == 1 })
	w.Wait()
	srv.Close()
	if got := closed.Load(); got != 1 {
		t.Fatalf("closed called %d times, want 1", got)
	}
}

func TestWatchServeAfterClose(t *testing.T) {
	cli, srv, w := watchedPair(t)
	cli.Close()
	waitFor(t, "the server session saw the close", srv.IsClosed)
	called := make(chan struct{})
	w.Serve(srv, 0, echoHandler, func() { close(called) })
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("closed not called for a session closed before Serve")
	}
	w.Wait()
}

func TestWatchStreamOpenedBeforeServe(t *testing.T) {
	cli, srv, w := watchedPair(t)
	// A stream opened before Serve (the agent asked right after Welcome)
	// is accepted once Serve is called.
	res := make(chan error, 1)
	go func() { res <- echo(cli, "early") }()
	waitFor(t, "the SYN was read", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.pending == 1
	})
	w.Serve(srv, 0, echoHandler, func() {})
	select {
	case err := <-res:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the early stream was not served")
	}
	cli.Close()
	srv.Close()
	w.Wait()
}

func TestWatchIgnoresKeepalivePings(t *testing.T) {
	cli, srv, w := watchedPair(t)
	w.Serve(srv, 0, echoHandler, func() {})
	// yamux's keepalive sends pings with the SYN flag: none may count as
	// a stream, or an accepting goroutine would wait for it all session.
	for range 5 {
		if _, err := cli.Ping(); err != nil {
			t.Fatal(err)
		}
	}
	w.mu.Lock()
	pending, running := w.pending, w.running
	w.mu.Unlock()
	if pending != 0 || running {
		t.Fatalf("after 5 pings: got %d pending streams, accepting goroutine running %v; want 0, false", pending, running)
	}
	if err := echo(cli, "after pings"); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	srv.Close()
	w.Wait()
}
