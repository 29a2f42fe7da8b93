package protocol

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// The busy answer is what the coordinator writes, in plain text instead
// of a TLS handshake, to a connection it sheds: a line naming when to come
// back, in milliseconds,
//
//	TENDRIL-BUSY 1234\n
//
// A handshake costs the CPU that a coordinator shedding connections is
// short of, so the answer is cheaper than any refusal inside TLS; and an
// agent told when to come back comes back once, then, instead of finding
// out by backoff. It carries no secret and proves nothing: whoever can
// write to the connection could forge it, as they could reset it, and
// the worst a forged answer does is delay an attempt by MaxBusyRetry.
//
// It needs no negotiation: its first byte is no TLS record type, so an
// agent of an earlier release sees a handshake that failed ("first record
// does not look like a TLS handshake") and backs off as it always did.
const busyPrefix = "TENDRIL-BUSY "

// maxBusyLine bounds the busy answer, newline included: the prefix and
// up to 9 digits. A longer line is not one.
const maxBusyLine = len(busyPrefix) + 9 + 1

// MaxBusyRetry is the longest wait a busy answer can ask for; a longer
// one is read as this.
const MaxBusyRetry = 10 * time.Minute

// busyReadTimeout bounds reading the rest of a busy answer once its first
// bytes arrived: it was written at once, in one piece.
const busyReadTimeout = time.Second

// AppendBusy appends the busy answer asking to come back after d (at
// least a millisecond, at most MaxBusyRetry) to b.
func AppendBusy(b []byte, d time.Duration) []byte {
	ms := min(max(d, time.Millisecond), MaxBusyRetry).Milliseconds()
	b = append(b, busyPrefix...)
	b = strconv.AppendInt(b, ms, 10)
	return append(b, '\n')
}

// ParseBusy reads a busy answer (see AppendBusy) at the start of b, and
// returns the wait it asks for.
func ParseBusy(b []byte) (time.Duration, error) {
	if !bytes.HasPrefix(b, []byte(busyPrefix)) {
		return 0, errors.New("parse busy answer: no busy prefix")
	}
	d, err := parseMillis(b[len(busyPrefix):])
	if err != nil {
		return 0, fmt.Errorf("parse busy answer: %w", err)
	}
	return min(d, MaxBusyRetry), nil
}

// WriteBusy writes the busy answer asking to come back after d to conn,
// within timeout.
func WriteBusy(conn net.Conn, d time.Duration, timeout time.Duration) error {
	conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(AppendBusy(make([]byte, 0, maxBusyLine), d)); err != nil {
		return fmt.Errorf("write busy answer: %w", err)
	}
	return nil
}

// BusyError is the error of a TLS handshake the coordinator answered with
// the busy answer instead: it asks to come back after RetryAfter.
type BusyError struct {
	RetryAfter time.Duration
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("coordinator busy: asked to come back in %s", e.RetryAfter)
}

// BusyAfter returns the wait a busy answer in err's chain asks for.
func BusyAfter(err error) (time.Duration, bool) {
	be, ok := errors.AsType[*BusyError](err)
	if !ok {
		return 0, false
	}
	return be.RetryAfter, true
}

// BusyConn is a client's connection under TLS that keeps the first bytes
// it read, so that a failed handshake can be told apart from a busy
// answer (Busy). The TLS client reads ahead into its own buffer, past the
// record header its error shows, so the bytes must be kept as they pass.
// Its methods are for the one goroutine running the handshake.
//
// It also takes the wait lines (wait.go) the coordinator may send before
// its handshake out of what the TLS client reads, telling OnWait of each.
type BusyConn struct {
	net.Conn
	// OnWait, if set, is called with the wait each wait line announces,
	// from the goroutine running the handshake: the agent moves its
	// handshake deadline by it.
	OnWait func(time.Duration)

	head    []byte
	started bool   // the wait lines were read
	pending []byte // read past the wait lines, not yet passed on
	err     error  // the error that ended reading the wait lines
}

// WatchBusy wraps conn, on which a TLS client handshake is to run.
func WatchBusy(conn net.Conn) *BusyConn {
	return &BusyConn{Conn: conn, head: make([]byte, 0, maxBusyLine)}
}

// Read reads from the connection, past any wait lines, keeping the first
// bytes.
func (c *BusyConn) Read(p []byte) (int, error) {
	if !c.started {
		c.started = true
		c.pending, c.err = readWaitLines(c.Conn, c.OnWait)
	}
	var n int
	var err error
	switch {
	case len(c.pending) > 0:
		n = copy(p, c.pending)
		c.pending = c.pending[n:]
	case c.err != nil:
		err, c.err = c.err, nil
	default:
		n, err = c.Conn.Read(p)
	}
	if room := cap(c.head) - len(c.head); room > 0 && n > 0 {
		c.head = append(c.head, p[:min(n, room)]...)
	}
	return n, err
}

// Busy turns a failed handshake's error into a *BusyError if what the
// peer sent instead of TLS was a busy answer: the TLS client stops at the
// record header, so the rest of the line is read here, briefly. Any
// other error is returned as it is.
func (c *BusyConn) Busy(err error) error {
	rhe, ok := errors.AsType[tls.RecordHeaderError](err)
	if !ok || !bytes.HasPrefix([]byte(busyPrefix), rhe.RecordHeader[:]) {
		return err
	}
	if bytes.IndexByte(c.head, '\n') < 0 && len(c.head) < cap(c.head) {
		c.Conn.SetReadDeadline(time.Now().Add(busyReadTimeout))
		buf := make([]byte, cap(c.head))
		for bytes.IndexByte(c.head, '\n') < 0 && len(c.head) < cap(c.head) {
			if _, rerr := c.Read(buf[:cap(c.head)-len(c.head)]); rerr != nil {
				break
			}
		}
	}
	d, perr := ParseBusy(c.head)
	if perr != nil {
		return err
	}
	return &BusyError{RetryAfter: d}
}
