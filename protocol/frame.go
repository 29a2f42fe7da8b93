package protocol

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxFrameSize is the largest frame accepted by default. Bulk bytes do not
// travel in frames (they follow a header that declares their size and
// hash), so frames stay small.
const MaxFrameSize = 1 << 20

// Errors callers branch on.
var (
	// ErrFrameTooLarge means the declared length exceeds the limit. It is
	// detected from the 4-byte header, before anything is allocated.
	ErrFrameTooLarge = errors.New("frame exceeds maximum size")
	// ErrEmptyFrame means a zero-length frame.
	ErrEmptyFrame = errors.New("empty frame")
	// ErrMalformedFrame means the frame is not a JSON message envelope.
	ErrMalformedFrame = errors.New("malformed frame")
)

// Frame is one message on a stream: a type and its JSON body, and for a
// signed request the coordinator's Intent over them.
type Frame struct {
	Type   string          `json:"type"`
	Body   json.RawMessage `json:"body,omitempty"`
	Intent *Intent         `json:"intent,omitempty"`
}

// Decode unmarshals the body into v. Unknown fields are ignored so newer
// peers can add fields without breaking older ones.
func (f Frame) Decode(v any) error {
	if len(f.Body) == 0 {
		return nil
	}
	if err := json.Unmarshal(f.Body, v); err != nil {
		return fmt.Errorf("%w: %s body: %v", ErrMalformedFrame, f.Type, err)
	}
	return nil
}

// WriteFrame writes one message of the given type. It fails before writing
// anything if the encoded frame would exceed MaxFrameSize.
func WriteFrame(w io.Writer, typ string, body any) error {
	return WriteRequest(w, nil, typ, body)
}

// WriteRequest writes one message, signed by sign when it is not nil and
// typ is one of SignedTypes.
func WriteRequest(w io.Writer, sign Signer, typ string, body any) error {
	var raw json.RawMessage
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s: %w", typ, err)
		}
		raw = b
	}
	f := Frame{Type: typ, Body: raw}
	if sign != nil && IsSignedType(typ) {
		in, err := sign.SignRequest(typ, raw)
		if err != nil {
			return fmt.Errorf("sign %s: %w", typ, err)
		}
		f.Intent = in
	}
	payload, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode %s: %w", typ, err)
	}
	if len(payload) > MaxFrameSize {
		return fmt.Errorf("encode %s: %w (%d > %d bytes)", typ, ErrFrameTooLarge, len(payload), MaxFrameSize)
	}
	// One write, so a frame is never interleaved or split across writes by
	// this side.
	buf := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(len(payload)))
	copy(buf[4:], payload)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write %s: %w", typ, err)
	}
	return nil
}

// ReadFrame reads one frame of at most max bytes (MaxFrameSize if max <=
// 0). It uses io.ReadFull throughout: TLS 1.0 peers split records, and a
// stream may deliver a frame in many pieces.
func ReadFrame(r io.Reader, max int) (Frame, error) {
	if max <= 0 {
		max = MaxFrameSize
	}
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, fmt.Errorf("read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return Frame{}, ErrEmptyFrame
	}
	if uint64(n) > uint64(max) {
		return Frame{}, fmt.Errorf("%w: %d > %d bytes", ErrFrameTooLarge, n, max)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("read frame body: %w", err)
	}
	var f Frame
	if err := json.Unmarshal(buf, &f); err != nil {
		return Frame{}, fmt.Errorf("%w: %v", ErrMalformedFrame, err)
	}
	if f.Type == "" {
		return Frame{}, fmt.Errorf("%w: no type", ErrMalformedFrame)
	}
	return f, nil
}
