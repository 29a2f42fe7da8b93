package faultproxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLong bounds waits for things that must happen. It is only a guard
// against hanging; no test asserts that anything happens faster than this.
const waitLong = 20 * time.Second

// quiet is how long a test watches for bytes that must not arrive. A slow
// machine can only make such a check pass, never fail.
const quiet = 150 * time.Millisecond

// echoServer is a loopback TCP server that echoes everything back and
// half-closes when its client does.
type echoServer struct {
	t        testing.TB
	ln       net.Listener
	wg       sync.WaitGroup
	accepted atomic.Int64
	ends     chan error // how each connection ended: nil on clean EOF

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func startEcho(t testing.TB) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &echoServer{t: t, ln: ln, ends: make(chan error, 128), conns: make(map[net.Conn]struct{})}
	s.wg.Go(s.acceptLoop)
	t.Cleanup(s.Close)
	return s
}

func (s *echoServer) Addr() string { return s.ln.Addr().String() }

func (s *echoServer) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.accepted.Add(1)
		s.conns[c] = struct{}{}
		s.wg.Go(func() { s.handle(c) })
		s.mu.Unlock()
	}
}

func (s *echoServer) handle(c net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = c.Close()
	}()
	buf := make([]byte, 32*1024)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				s.report(werr)
				return
			}
		}
		if errors.Is(err, io.EOF) {
			_ = c.(*net.TCPConn).CloseWrite()
			s.report(nil)
			return
		}
		if err != nil {
			s.report(err)
			return
		}
	}
}

func (s *echoServer) report(err error) {
	select {
	case s.ends <- err:
	default:
	}
}

// Close stops the server, closes its connections and waits for its
// goroutines. It is idempotent.
func (s *echoServer) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	_ = s.ln.Close()
	s.wg.Wait()
}

func newProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitLong)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("rand: %v", err)
	}
	return b
}

// roundTrip writes msg and reads back exactly as many bytes through the
// echo server, failing the test if they differ.
func roundTrip(t testing.TB, c net.Conn, msg []byte) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(waitLong)); err != nil {
		t.Fatalf("set deadline: %v", err)
	}
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo mismatch: got %q, want %q", got, msg)
	}
}

// expectSilence asserts that nothing can be read from c for a while.
func expectSilence(t testing.TB, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(quiet)); err != nil {
		t.Fatalf("set deadline: %v", err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if n > 0 || !isTimeout(err) {
		t.Fatalf("read while paused: n=%d err=%v, want a timeout with no data", n, err)
	}
	_ = c.SetReadDeadline(time.Time{})
}

// expectEnd reads from c until it fails and asserts that it failed with an
// error or end of file (not a timeout). It returns what was read and the error.
func expectEnd(t testing.TB, c net.Conn) ([]byte, error) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(waitLong)); err != nil {
		t.Fatalf("set deadline: %v", err)
	}
	var got bytes.Buffer
	buf := make([]byte, 32*1024)
	for {
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			if isTimeout(err) {
				t.Fatalf("connection still open after %v (read %d bytes)", waitLong, got.Len())
			}
			return got.Bytes(), err
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// eventually polls cond until it holds, failing the test after waitLong.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPassThrough(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.Addr())

	c := dial(t, p.Addr())
	data := randBytes(t, 1<<20)
	want := sha256.Sum256(data)

	writeErr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		writeErr <- err
	}()

	if err := c.SetReadDeadline(time.Now().Add(waitLong)); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("read: %v after %d bytes", err, n)
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if n != int64(len(data)) {
		t.Fatalf("got %d bytes, want %d", n, len(data))
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("hash mismatch")
	}
	// The half-close travelled both ways: the server saw a clean end.
	select {
	case err := <-srv.ends:
		if err != nil {
			t.Fatalf("server connection ended with %v, want clean EOF", err)
		}
	case <-time.After(waitLong):
		t.Fatal("server connection did not end")
	}
	if got := p.Accepted(); got != 1 {
		t.Fatalf("Accepted = %d, want 1", got)
	}
	if got := p.BytesForwarded(); got != 2*int64(len(data)) {
		t.Fatalf("BytesForwarded = %d, want %d", got, 2*len(data))
	}
	eventually(t, "Active() == 0", func() bool { return p.Active() == 0 })
}

func TestKillAll(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.Addr())

	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("hello"))
	if got := p.Active(); got != 1 {
		t.Fatalf("Active = %d, want 1", got)
	}

	p.KillAll()

	if _, err := expectEnd(t, c); errors.Is(err, io.EOF) {
		t.Fatalf("client read: got clean EOF, want a reset")
	}
	select {
	case err := <-srv.ends:
		if err == nil {
			t.Fatal("server connection ended cleanly, want an error")
		}
	case <-time.After(waitLong):
		t.Fatal("server connection did not end")
	}
	eventually(t, "Active() == 0", func() bool { return p.Active() == 0 })

	// The proxy still accepts and forwards new connections.
	c2 := dial(t, p.Addr())
	roundTrip(t, c2, []byte("still here"))
	if got := p.Accepted(); got != 2 {
		t.Fatalf("Accepted = %d, want 2", got)
	}
	if got := p.Active(); got != 1 {
		t.Fatalf("Active = %d, want 1", got)
	}
}

func TestPauseResume(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.Addr())

	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("warm up"))

	p.Pause()
	p.Pause() // idempotent
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("write: %v", err)
	}
	expectSilence(t, c)

	// New connections are accepted while paused, but paused too.
	c2 := dial(t, p.Addr())
	if _, err := c2.Write([]byte("pong")); err != nil {
		t.Fatalf("write: %v", err)
	}
	eventually(t, "second connection accepted", func() bool { return p.Accepted() == 2 })
	expectSilence(t, c2)

	p.Resume()
	p.Resume() // idempotent
	for _, tc := range []struct {
		c    net.Conn
		want string
	}{{c, "ping"}, {c2, "pong"}} {
		if err := tc.c.SetReadDeadline(time.Now().Add(waitLong)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(tc.want))
		if _, err := io.ReadFull(tc.c, got); err != nil {
			t.Fatalf("read after resume: %v", err)
		}
		if string(got) != tc.want {
			t.Fatalf("got %q, want %q", got, tc.want)
		}
	}
	roundTrip(t, c, []byte("after"))
}

func TestPauseDoesNotBlockKillAllOrClose(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.Addr())

	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("warm up"))
	p.Pause()
	if _, err := c.Write([]byte("stuck")); err != nil {
		t.Fatalf("write: %v", err)
	}
	expectSilence(t, c)
	p.KillAll()
	if got, _ := expectEnd(t, c); len(got) != 0 {
		t.Fatalf("got %q from a paused connection", got)
	}

	c2 := dial(t, p.Addr())
	if _, err := c2.Write([]byte("stuck too")); err != nil {
		t.Fatalf("write: %v", err)
	}
	eventually(t, "second connection active", func() bool { return p.Active() == 1 })
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, _ := expectEnd(t, c2); len(got) != 0 {
		t.Fatalf("got %q from a paused connection", got)
	}
}

func TestLatency(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.Addr())

	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("warm up"))

	// The setting applies to an existing connection.
	const latency = 100 * time.Millisecond
	p.SetLatency(latency)
	start := time.Now()
	roundTrip(t, c, []byte("slow"))
	if elapsed := time.Since(start); elapsed < latency {
		t.Fatalf("round trip took %v, want at least %v", elapsed, latency)
	}

	p.SetLatency(0)
	roundTrip(t, c, []byte("fast again"))
}

func TestDrip(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.Addr())

	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("warm up"))

	const (
		chunk = 64
		every = time.Millisecond
		size  = 4096
	)
	p.SetDrip(chunk, every)
	data := randBytes(t, size)
	start := time.Now()
	roundTrip(t, c, data)
	// One direction alone needs size/chunk pieces with a pause after each.
	if min := (size/chunk - 1) * every; time.Since(start) < min {
		t.Fatalf("drip took %v, want at least %v", time.Since(start), min)
	}

	p.SetDrip(0, 0)
	roundTrip(t, c, randBytes(t, 64*1024))
}

func TestCutAfter(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.Addr())

	// A connection opened before CutAfter keeps working without a limit.
	old := dial(t, p.Addr())
	roundTrip(t, old, []byte("before"))

	const n = 1000
	p.CutAfter(n)
	// The echo can reach the client just before the proxy counts it.
	const base = 2 * int64(len("before"))
	eventually(t, "warm-up bytes counted", func() bool { return p.BytesForwarded() == base })

	c := dial(t, p.Addr())
	payload := randBytes(t, 5*n)
	writeDone := make(chan struct{})
	go func() {
		defer close(writeDone)
		_, _ = c.Write(payload) // may fail once the connection is cut
	}()
	got, err := expectEnd(t, c)
	<-writeDone
	t.Logf("received %d bytes, then %v", len(got), err)
	if len(got) > n {
		t.Fatalf("received %d bytes, want at most %d", len(got), n)
	}
	if !bytes.Equal(got, payload[:len(got)]) {
		t.Fatal("received bytes are not a prefix of the payload")
	}
	if fwd := p.BytesForwarded() - base; fwd != n {
		t.Fatalf("forwarded %d bytes on the cut connection, want exactly %d", fwd, n)
	}
	select {
	case err := <-srv.ends:
		if err == nil {
			t.Fatal("server connection ended cleanly, want an error")
		}
	case <-time.After(waitLong):
		t.Fatal("server connection did not end")
	}

	roundTrip(t, old, randBytes(t, 3*n))
	eventually(t, "Active() == 1", func() bool { return p.Active() == 1 })

	p.CutAfter(0)
	c2 := dial(t, p.Addr())
	roundTrip(t, c2, randBytes(t, 3*n))
}

func TestCutReplies(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.Addr())
	p.CutReplies(1)

	// The request reaches the target whole; its echo never comes back.
	c := dial(t, p.Addr())
	msg := []byte("create it")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got, err := expectEnd(t, c)
	if len(got) != 0 {
		t.Fatalf("got %q back through a cut reply, want nothing", got)
	}
	t.Logf("the client saw %v", err)
	if fwd := p.BytesForwarded(); fwd != int64(len(msg)) {
		t.Fatalf("forwarded %d bytes, want the request's %d", fwd, len(msg))
	}

	// Only the next connection was cut.
	c2 := dial(t, p.Addr())
	roundTrip(t, c2, []byte("again"))
}

func TestRefuse(t *testing.T) {
	srv := startEcho(t)
	p := newProxy(t, srv.Addr())

	p.SetRefuse(true)
	c := dial(t, p.Addr())
	if got, _ := expectEnd(t, c); len(got) != 0 {
		t.Fatalf("got %q from a refused connection", got)
	}
	if got := p.Accepted(); got != 1 {
		t.Fatalf("Accepted = %d, want 1", got)
	}
	if got := p.Active(); got != 0 {
		t.Fatalf("Active = %d, want 0", got)
	}
	if got := srv.accepted.Load(); got != 0 {
		t.Fatalf("target saw %d connections, want 0", got)
	}

	p.SetRefuse(false)
	c2 := dial(t, p.Addr())
	roundTrip(t, c2, []byte("served"))
	if got := srv.accepted.Load(); got != 1 {
		t.Fatalf("target saw %d connections, want 1", got)
	}
}

func TestSetTarget(t *testing.T) {
	a := startEcho(t)
	b := startEcho(t)
	p := newProxy(t, a.Addr())

	ca := dial(t, p.Addr())
	roundTrip(t, ca, []byte("to a"))

	p.SetTarget(b.Addr())
	cb := dial(t, p.Addr())
	roundTrip(t, cb, []byte("to b"))
	// The existing connection keeps its target.
	roundTrip(t, ca, []byte("still a"))

	if got := a.accepted.Load(); got != 1 {
		t.Fatalf("a accepted %d connections, want 1", got)
	}
	if got := b.accepted.Load(); got != 1 {
		t.Fatalf("b accepted %d connections, want 1", got)
	}

	// A target that is down: the client is reset.
	a.Close()
	p.SetTarget(a.Addr())
	// The reset can reach the client before its connect call returns.
	if cd, err := net.DialTimeout("tcp", p.Addr(), waitLong); err == nil {
		if got, _ := expectEnd(t, cd); len(got) != 0 {
			t.Fatalf("got %q from a connection to a dead target", got)
		}
		_ = cd.Close()
	} else if isTimeout(err) {
		t.Fatalf("dial: %v", err)
	}
	if got := p.Accepted(); got != 3 {
		t.Fatalf("Accepted = %d, want 3", got)
	}
	eventually(t, "Active() == 2", func() bool { return p.Active() == 2 })
}

func TestCloseIdempotentNoLeaks(t *testing.T) {
	srv := startEcho(t)
	p, err := New(srv.Addr())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	busy := dial(t, p.Addr())
	roundTrip(t, busy, []byte("busy"))
	paused := dial(t, p.Addr())
	roundTrip(t, paused, []byte("paused"))
	p.SetLatency(time.Hour)
	p.Pause()
	if _, err := paused.Write([]byte("stuck")); err != nil {
		t.Fatal(err)
	}
	addr := p.Addr()

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := p.Active(); got != 0 {
		t.Fatalf("Active after Close = %d, want 0", got)
	}
	for _, c := range []net.Conn{busy, paused} {
		expectEnd(t, c)
		_ = c.Close()
	}
	if c, err := net.DialTimeout("tcp", addr, waitLong); err == nil {
		_ = c.Close()
		t.Fatal("proxy still accepting after Close")
	}

	srv.Close()
	goleak.VerifyNone(t)
}

func TestConcurrentClose(t *testing.T) {
	srv := startEcho(t)
	p, err := New(srv.Addr())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("x"))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { _ = p.Close() })
	}
	wg.Go(p.KillAll)
	wg.Wait()
	expectEnd(t, c)
}
