package protocol

import (
	"encoding/binary"
	"sync"

	"github.com/hashicorp/yamux"
)

const (
	// yamuxTypeWindowUpdate is the frame type that, like data, can open
	// a stream.
	yamuxTypeWindowUpdate = 1
	// yamuxFlagSYN on a data or window update frame opens a stream.
	yamuxFlagSYN = 1
)

// Watch learns a session's events without a goroutine waiting for each:
// that the peer opened a stream, and that the connection closed. A yamux
// server otherwise keeps one goroutine per session blocked in
// AcceptStream for the whole session, about 4 KiB of stack and a few
// hundred bytes of runtime state, although a coordinator's agents open
// streams only for rare requests (a certificate rotation, a
// re-registration). With a Watch, the connection's reads are scanned for
// yamux frame headers as they pass, and a goroutine accepting streams is
// started when a SYN arrives and ends when no opened stream is left
// unaccepted.
//
// Pass a Watch in SessionOptions, and call Serve once the streams the
// session's start accepts itself (a Hello) were accepted.
type Watch struct {
	mu sync.Mutex
	// pending counts the streams the peer opened that were not accepted
	// yet. It can count a stream yamux refused (its accept backlog was
	// full): the accepting goroutine then waits in AcceptStream for the
	// next stream or the end of the session, as a permanent accept loop
	// would.
	pending int
	closed  bool // the connection closed: no goroutine starts any more
	served  bool
	running bool // an accepting goroutine runs
	sess    *yamux.Session
	handle  func(*yamux.Stream)
	onClose func()
	wg      sync.WaitGroup // the accepting goroutine
}

// Serve starts handing the streams the peer opens to handle, each on the
// goroutine that accepted it (handle starts its own goroutine for work
// that takes long), and calls closed, once, when the connection closes:
// from whoever closed it, so closed must not block. accepted is how many
// streams were already taken from s with AcceptStream. Call it once.
func (w *Watch) Serve(s *yamux.Session, accepted int, handle func(*yamux.Stream), closed func()) {
	w.mu.Lock()
	if w.served {
		w.mu.Unlock()
		panic("protocol: Watch.Serve called twice")
	}
	w.served = true
	w.sess, w.handle, w.onClose = s, handle, closed
	w.pending -= accepted
	start := w.startLocked()
	wasClosed := w.closed
	w.mu.Unlock()
	if start {
		go w.accept()
	}
	if wasClosed {
		closed()
	}
}

// Wait waits until the goroutine accepting streams, if one runs, has
// ended. Call it only once the connection closed (in or after closed),
// when no new one can start.
func (w *Watch) Wait() { w.wg.Wait() }

// startLocked reports whether an accepting goroutine is to be started,
// and counts it as running. w.mu is held.
func (w *Watch) startLocked() bool {
	if !w.served || w.closed || w.running || w.pending <= 0 {
		return false
	}
	w.running = true
	w.wg.Add(1)
	return true
}

// opened notes a SYN read from the connection.
func (w *Watch) opened() {
	w.mu.Lock()
	w.pending++
	start := w.startLocked()
	w.mu.Unlock()
	if start {
		go w.accept()
	}
}

// connClosed notes that the connection closed.
func (w *Watch) connClosed() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	f := w.onClose
	w.mu.Unlock()
	if f != nil {
		f()
	}
}

// accept accepts streams until none the peer opened is left, or the
// session ends.
func (w *Watch) accept() {
	defer w.wg.Done()
	for {
		st, err := w.sess.AcceptStream()
		if err != nil {
			w.mu.Lock()
			w.running = false
			w.mu.Unlock()
			return
		}
		w.handle(st)
		w.mu.Lock()
		w.pending--
		if w.pending <= 0 || w.closed {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}

// frameScanner follows the yamux frames in the bytes read from a
// connection, to see each SYN as it arrives. Only yamux's receive loop
// reads the connection, so it needs no lock.
type frameScanner struct {
	hdr  [yamuxHeaderSize]byte
	n    int    // bytes of hdr read so far
	skip uint32 // bytes of a data frame's body still to pass
}

// scan passes b, calling syn for each frame header with the SYN flag.
func (f *frameScanner) scan(b []byte, syn func()) {
	for len(b) > 0 {
		if f.skip > 0 {
			k := uint32(min(len(b), int(min(f.skip, 1<<30))))
			b = b[k:]
			f.skip -= k
			continue
		}
		k := copy(f.hdr[f.n:], b)
		f.n += k
		b = b[k:]
		if f.n < yamuxHeaderSize {
			return
		}
		f.n = 0
		if f.hdr[1] == yamuxTypeData {
			// Other frame types carry no body: their length field is a
			// window delta, a ping's value or a go-away code.
			f.skip = binary.BigEndian.Uint32(f.hdr[8:])
		}
		// A SYN opens a stream only on a data or window update frame: on
		// a ping it asks for a reply (yamux's keepalive), and the
		// agents' keepalives must not start accepting goroutines that
		// wait for streams that never come.
		if f.hdr[1] <= yamuxTypeWindowUpdate && binary.BigEndian.Uint16(f.hdr[2:])&yamuxFlagSYN != 0 {
			syn()
		}
	}
}
