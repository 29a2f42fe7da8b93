package protocol

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// ErrTransfer means bulk bytes did not arrive as their header declared.
var ErrTransfer = errors.New("transfer does not match its header")

const (
	// sendChunk is the size of each write of a bulk send: one yamux frame
	// that, with its header, fills one TLS record (see frameConn). yamux's
	// send loop keeps a buffer as large as the largest frame it sent, for
	// the life of the session; at io.Copy's 32 KiB that was 32 KiB kept per
	// agent ever pushed to, on a coordinator holding thousands.
	sendChunk = maxJoined - yamuxHeaderSize
	// sendRead is the size of each read of the source of a bulk send,
	// written on in sendChunk pieces: a read syscall per frame was a
	// tenth of the coordinator's CPU in a push (figure 5's profile).
	sendRead = 16 * sendChunk
	// receiveChunk is the size of each read of a bulk receive: fewer,
	// larger file writes and hash updates on the agent.
	receiveChunk = 128 << 10
)

var (
	sendBuffers    = sync.Pool{New: func() any { return new([sendRead]byte) }}
	receiveBuffers = sync.Pool{New: func() any { return new([receiveChunk]byte) }}
)

// SendBulk writes bytes [offset, size) of src to w. It is the sender's
// half of a Transfer after the receiver answered PushReady.
func SendBulk(w io.Writer, src io.ReaderAt, offset, size int64) error {
	if offset < 0 || offset > size {
		return fmt.Errorf("%w: resume offset %d outside 0..%d", ErrTransfer, offset, size)
	}
	buf := sendBuffers.Get().(*[sendRead]byte)
	defer sendBuffers.Put(buf)
	r := io.NewSectionReader(src, offset, size-offset)
	var n int64
	for n < size-offset {
		k, rerr := r.Read(buf[:])
		for p := buf[:k]; len(p) > 0; {
			c := min(len(p), sendChunk)
			wn, err := w.Write(p[:c])
			if err == nil && wn != c {
				err = io.ErrShortWrite
			}
			if err != nil {
				return fmt.Errorf("send bulk bytes: %w", err)
			}
			p = p[c:]
		}
		n += int64(k)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("send bulk bytes: %w", rerr)
		}
	}
	if n != size-offset {
		return fmt.Errorf("%w: source ended after %d of %d bytes", ErrTransfer, offset+n, size)
	}
	return nil
}

// ReceiveBulk is the receiver's half: it appends the bytes of a Transfer
// to the partial file at path, starting where that file ends (so a cut
// transfer resumes), and returns once the file is complete and its SHA-256
// matches. A file that turns out corrupt is removed so the next attempt
// starts over. The caller sends PushReady{Offset: PartialSize(path)} first,
// names path after t.SHA256 so that bytes of one transfer never resume
// another, and runs one receive per path at a time.
func ReceiveBulk(r io.Reader, path string, t Transfer) error {
	return ReceiveBulkTee(r, path, t, nil)
}

// ReceiveBulkTee is ReceiveBulk that also writes every byte of the
// transfer, in order from the first, to tee (if not nil): first the bytes
// the partial file already held, then each chunk as it arrives, after it
// is in the file and the hash. A consumer of tee (an extractor) thus works
// while the bytes arrive rather than after. The first error from tee ends
// the tee, not the receive: a consumer that stops early (it refused the
// bytes, or needs no more) leaves the partial file whole for its caller.
// Whether the transfer as a whole matched its header is only known when
// ReceiveBulkTee returns: what tee consumed must not be trusted before.
func ReceiveBulkTee(r io.Reader, path string, t Transfer, tee io.Writer) error {
	return receiveBulk(r, path, t, tee, true)
}

// ReceiveBulkTeeUnhashed is ReceiveBulkTee without the SHA-256 of the
// transfer: it returns once t.Size bytes are in the partial file and
// passed to tee, and t.SHA256 only names the transfer. It is for a
// receiver whose tee's consumer checks every byte it keeps against
// something signed (a Calamari bundle's manifest, see
// CalamariPush.ManifestOnly), for which hashing the whole transfer again
// is a second pass over every byte that proves nothing more. Bytes that
// do not make what that consumer expects are its to refuse, and the
// caller's to remove from the partial file.
func ReceiveBulkTeeUnhashed(r io.Reader, path string, t Transfer, tee io.Writer) error {
	return receiveBulk(r, path, t, tee, false)
}

func receiveBulk(r io.Reader, path string, t Transfer, tee io.Writer, hashed bool) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("receive %s: %w", path, err)
	}
	defer f.Close()
	var h hash.Hash
	var tw *teeWriter
	var to []io.Writer // where the bytes the file held go: none discards them
	if hashed {
		h = sha256.New()
		to = append(to, h)
	}
	if tee != nil {
		tw = &teeWriter{w: tee}
		to = append(to, tw)
	}
	held := io.MultiWriter(to...)
	if st, err := f.Stat(); err != nil {
		return fmt.Errorf("receive %s: %w", path, err)
	} else if st.Size() > t.Size {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%w: partial file is larger (%d) than the transfer (%d)", ErrTransfer, st.Size(), t.Size)
	}
	buf := receiveBuffers.Get().(*[receiveChunk]byte)
	defer receiveBuffers.Put(buf)
	// Hash (and tee) what arrived before; leaves f at its end.
	have, err := io.CopyBuffer(held, f, buf[:])
	if err != nil {
		return fmt.Errorf("receive %s: %w", path, err)
	}
	if have > t.Size { // it grew since the Stat: not ours to resume
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%w: partial file is larger (%d) than the transfer (%d)", ErrTransfer, have, t.Size)
	}
	want := t.Size - have
	var n int64
	for n < want {
		// A full buffer per round, not whatever one read returns (a
		// frame or two): a file write, a hash update and a hand-over to
		// tee's consumer per 128 KiB rather than per 16 KiB.
		k, rerr := io.ReadFull(r, buf[:min(int64(len(buf)), want-n)])
		if rerr == io.ErrUnexpectedEOF {
			rerr = io.EOF
		}
		if k > 0 {
			if _, err := f.Write(buf[:k]); err != nil {
				// Keep what arrived: the next attempt resumes after it.
				return fmt.Errorf("receive %s: %w", path, err)
			}
			if h != nil {
				h.Write(buf[:k])
			}
			if tw != nil {
				tw.Write(buf[:k])
			}
			n += int64(k)
		}
		if rerr == io.EOF && n == want {
			break
		}
		// An early io.EOF is passed on as io.CopyN reports it.
		if rerr != nil {
			// Keep what arrived: the next attempt resumes after it.
			return fmt.Errorf("receive %s: %w", path, rerr)
		}
	}
	// No fsync: the partial file is only ever an input. What is installed
	// from it is written and synced again (Calamari's files before
	// Success.txt, an agent binary before the swap), and a partial file
	// whose tail a power cut lost fails the SHA-256 at the end (unhashed:
	// its consumer's check) and is received again. Syncing it doubled the
	// disk writes a push waits for: on this machine's disk a push was
	// bound by them.
	if h == nil {
		return nil
	}
	if got := hexSum(h); got != t.SHA256 {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%w: SHA-256 is %s, header said %s", ErrTransfer, got, t.SHA256)
	}
	return nil
}

// teeWriter passes writes on to w until w fails once, then drops them; it
// never fails itself, so that the tee's consumer cannot end a receive.
type teeWriter struct {
	w   io.Writer
	err error
}

func (t *teeWriter) Write(p []byte) (int, error) {
	if t.err == nil {
		_, t.err = t.w.Write(p)
	}
	return len(p), nil
}

// PartialSize is how many bytes of a transfer already sit at path: the
// offset to resume from. A missing file is 0.
func PartialSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// PushIdle is how long a Push may go without progress before it is
// abandoned (and later resumed from what the receiver holds).
const PushIdle = time.Minute

// Push sends a header of reqType on a new stream of s, then the bytes of
// src the receiver asks for in its PushReady (those it does not hold
// yet), then reads the receiver's final reply of respType into resp. It
// calls sent (if not nil) once every byte is sent and before the final
// reply is awaited: the receiver is then verifying and installing. done
// reports that the receiver already held everything and nothing was sent.
func Push(ctx context.Context, s *yamux.Session, reqType string, hdr any, src io.ReaderAt, size int64, respType string, resp any, sent func()) (done bool, err error) {
	return PushSigned(ctx, s, nil, reqType, hdr, src, size, respType, resp, sent)
}

// PushSigned is Push with the header signed by sign (see WriteRequest).
func PushSigned(ctx context.Context, s *yamux.Session, sign Signer, reqType string, hdr any, src io.ReaderAt, size int64, respType string, resp any, sent func()) (done bool, err error) {
	st, err := s.OpenStream()
	if err != nil {
		return false, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	defer stop()
	st.SetDeadline(time.Now().Add(PushIdle))
	if err := WriteRequest(st, sign, reqType, hdr); err != nil {
		return false, err
	}
	f, err := ReadFrame(st, 0)
	if err != nil {
		return false, err
	}
	var ready PushReady
	if err := DecodeReply(f, TypePushReady, &ready); err != nil {
		return false, err
	}
	if ready.Done {
		return true, nil
	}
	// The receiver may answer before the last byte: it refuses what it
	// cannot take (its disk is full) and stops reading. Its answer is
	// read while the bytes go, so that the send stops and the refusal,
	// with its reason, is returned, rather than a send that stalls on a
	// stream no one reads until it times out.
	st.SetReadDeadline(time.Time{})
	w := &idleWriter{st: st}
	reply := make(chan frameResult, 1)
	go func() {
		f, err := ReadFrame(st, 0)
		if err == nil {
			w.stop()
		}
		reply <- frameResult{f, err}
	}()
	defer func() {
		// Whoever returns first, the reader ends: no goroutine outlives
		// the push.
		st.SetReadDeadline(time.Now())
		<-reply
	}()
	sendErr := SendBulk(w, src, ready.Offset, size)
	if sendErr != nil && !w.stopped.Load() {
		return false, sendErr
	}
	if sendErr == nil && sent != nil {
		sent()
	}
	// The receiver verifies and installs before it answers.
	st.SetReadDeadline(time.Now().Add(5 * time.Minute))
	r := <-reply
	reply <- r // for the deferred wait
	if r.err != nil {
		return false, r.err
	}
	if err := DecodeReply(r.f, respType, resp); err != nil || sendErr == nil {
		return false, err
	}
	// An answer that is not a refusal before the last byte: the
	// receiver broke the protocol.
	return false, fmt.Errorf("%w: the receiver answered %s before the transfer ended", ErrTransfer, r.f.Type)
}

// frameResult is a frame read, or why none was.
type frameResult struct {
	f   Frame
	err error
}

// idleWriter extends the stream's write deadline before every write, so a
// slow link that keeps moving is never cut and a stalled one is.
type idleWriter struct {
	st interface {
		Write([]byte) (int, error)
		SetWriteDeadline(time.Time) error
	}
	stopped atomic.Bool
}

func (w *idleWriter) Write(p []byte) (int, error) {
	if w.stopped.Load() {
		return 0, errReceiverAnswered
	}
	w.st.SetWriteDeadline(time.Now().Add(PushIdle))
	return w.st.Write(p)
}

// stop ends the writes: the one under way at once, the next ones before
// they start.
func (w *idleWriter) stop() {
	w.stopped.Store(true)
	w.st.SetWriteDeadline(time.Now())
}

// errReceiverAnswered ends a send the receiver answered before its end.
var errReceiverAnswered = errors.New("the receiver answered before the transfer ended")
