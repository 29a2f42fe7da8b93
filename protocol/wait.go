package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// The wait line is what the coordinator writes, in plain text before its
// side of the TLS handshake, to a connection it queues for a handshake
// slot for longer than an agent's handshake timeout would allow:
//
//	TENDRIL-WAIT 30000\n
//
// The agent then gives the handshake that much longer. Where the busy
// answer (busy.go) sends an agent away to come back later, the wait line
// keeps it: a fleet starting at once connects once each, in the order it
// arrived, instead of once to be told when and again then. It costs the
// coordinator a socket and a small goroutine per queued agent, and the
// agent nothing: its ClientHello is already sent.
//
// Only an agent that offered WaitALPN in its ClientHello is sent the line,
// since an older one would take it for a broken handshake. Like the busy
// answer it proves nothing and needs none: a forged one delays the agent
// by at most MaxWait, as holding its packets would.
const waitPrefix = "TENDRIL-WAIT "

// WaitALPN is the application protocol an agent offers, after ALPN, to
// say that it reads the wait line. It is never negotiated: the
// coordinator reads it from the ClientHello (HelloOffersWait) and keeps
// choosing ALPN, and a coordinator of an earlier release ignores it.
const WaitALPN = "tendril-wait"

// maxWaitLine bounds the wait line, newline included.
const maxWaitLine = len(waitPrefix) + 9 + 1

// MaxWait is the longest wait a wait line can announce; a longer one is
// read as this.
const MaxWait = 2 * time.Minute

// AppendWait appends the wait line announcing a wait of up to d (at least
// a millisecond, at most MaxWait) to b.
func AppendWait(b []byte, d time.Duration) []byte {
	ms := min(max(d, time.Millisecond), MaxWait).Milliseconds()
	b = append(b, waitPrefix...)
	b = strconv.AppendInt(b, ms, 10)
	return append(b, '\n')
}

// ParseWait reads a wait line (see AppendWait) at the start of b, and
// returns the wait it announces and the line's length.
func ParseWait(b []byte) (time.Duration, int, error) {
	if !bytes.HasPrefix(b, []byte(waitPrefix)) {
		return 0, 0, errors.New("parse wait line: no wait prefix")
	}
	d, err := parseMillis(b[len(waitPrefix):])
	if err != nil {
		return 0, 0, fmt.Errorf("parse wait line: %w", err)
	}
	return min(d, MaxWait), bytes.IndexByte(b, '\n') + 1, nil
}

// parseMillis reads 1 to 9 decimal digits ending in a newline.
func parseMillis(b []byte) (time.Duration, error) {
	end := bytes.IndexByte(b, '\n')
	if end < 0 {
		return 0, errors.New("no end of line")
	}
	digits := b[:end]
	if len(digits) == 0 || len(digits) > 9 {
		return 0, fmt.Errorf("%d digits, want 1 to 9", len(digits))
	}
	var ms int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a number", digits)
		}
		ms = ms*10 + int64(c-'0')
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// WriteWait writes the wait line announcing a wait of up to d to conn,
// within timeout.
func WriteWait(conn net.Conn, d time.Duration, timeout time.Duration) error {
	conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(AppendWait(make([]byte, 0, maxWaitLine), d)); err != nil {
		return fmt.Errorf("write wait line: %w", err)
	}
	return nil
}

// maxRecord is the longest TLS record body a ClientHello arrives in.
const maxRecord = 16 << 10

// ReadHello reads the first TLS record of conn, whose first byte was
// already read into the returned conn by Peek, within timeout, and reports
// whether it is a ClientHello offering WaitALPN. The returned conn replays
// what was read before the rest, so the TLS server reads the connection
// as it was sent; if the read fails or times out, what arrived is replayed
// all the same and the handshake finds the fault.
func ReadHello(peeked net.Conn, timeout time.Duration) (net.Conn, bool) {
	rc, ok := peeked.(*replayConn)
	if !ok {
		return peeked, false
	}
	rc.Conn.SetReadDeadline(time.Now().Add(timeout))
	defer rc.Conn.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 512)
	buf = append(buf, rc.first...)
	need := 5 // the record header
	for len(buf) < need {
		if cap(buf)-len(buf) < need-len(buf) {
			buf = slices.Grow(buf, need-len(buf))
		}
		n, err := rc.Conn.Read(buf[len(buf):need])
		buf = buf[:len(buf)+n]
		if err != nil {
			break
		}
		if len(buf) == 5 {
			if buf[0] != recordTypeHandshake {
				break
			}
			need = 5 + min(int(buf[3])<<8|int(buf[4]), maxRecord)
		}
	}
	rc.first = buf
	if len(buf) < need || len(buf) < 5 {
		return rc, false
	}
	return rc, HelloOffersWait(buf)
}

// recordTypeHandshake is the TLS record type of a ClientHello.
const recordTypeHandshake = 22

// HelloOffersWait reports whether record, a TLS record holding a
// ClientHello (header included), offers WaitALPN among its application
// protocols. A record it cannot read offers nothing.
func HelloOffersWait(record []byte) bool {
	s := cryptobyte.String(record)
	var typ uint8
	var body, msg cryptobyte.String
	if !s.ReadUint8(&typ) || typ != recordTypeHandshake || !s.Skip(2) || !s.ReadUint16LengthPrefixed(&body) {
		return false
	}
	var msgType uint8
	if !body.ReadUint8(&msgType) || msgType != 1 || !body.ReadUint24LengthPrefixed(&msg) {
		return false // not a ClientHello, or one longer than its record
	}
	var sessionID, suites, methods, exts cryptobyte.String
	if !msg.Skip(2+32) || // version, random
		!msg.ReadUint8LengthPrefixed(&sessionID) ||
		!msg.ReadUint16LengthPrefixed(&suites) ||
		!msg.ReadUint8LengthPrefixed(&methods) ||
		!msg.ReadUint16LengthPrefixed(&exts) {
		return false
	}
	for !exts.Empty() {
		var ext uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&ext) || !exts.ReadUint16LengthPrefixed(&data) {
			return false
		}
		if ext != extensionALPN {
			continue
		}
		var list cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&list) {
			return false
		}
		for !list.Empty() {
			var proto cryptobyte.String
			if !list.ReadUint8LengthPrefixed(&proto) {
				return false
			}
			if string(proto) == WaitALPN {
				return true
			}
		}
		return false
	}
	return false
}

// extensionALPN is the TLS extension number of application protocols.
const extensionALPN = 16

// readWaitLines takes the wait lines at the start of what r sends, calling
// onWait with each, and returns the bytes read past them: the first bytes
// of the TLS handshake, or of a busy answer, or of whatever else the peer
// sent, for the caller to pass on. It stops at the first byte that cannot
// begin a wait line.
func readWaitLines(r io.Reader, onWait func(time.Duration)) ([]byte, error) {
	var buf []byte
	tmp := make([]byte, maxWaitLine)
	for {
		// As long as what arrived may still be a wait line, read on.
		for mayBeWait(buf) && bytes.IndexByte(buf, '\n') < 0 && len(buf) < maxWaitLine {
			n, err := r.Read(tmp[:maxWaitLine-len(buf)])
			buf = append(buf, tmp[:n]...)
			if err != nil {
				return buf, err
			}
		}
		if !bytes.HasPrefix(buf, []byte(waitPrefix)) {
			return buf, nil
		}
		d, n, err := ParseWait(buf)
		if err != nil {
			return buf, nil // not a wait line after all: TLS will say what it is
		}
		if onWait != nil {
			onWait(d)
		}
		buf = buf[n:]
		if len(buf) > 0 && !mayBeWait(buf) {
			return buf, nil
		}
	}
}

// mayBeWait reports whether b is empty or could begin a wait line.
func mayBeWait(b []byte) bool {
	n := min(len(b), len(waitPrefix))
	return string(b[:n]) == waitPrefix[:n]
}
