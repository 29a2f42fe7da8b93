package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func rawFrame(payload string) []byte {
	b := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)))
	copy(b[4:], payload)
	return b
}

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	want := Hello{Version: "1.2.3", ProtocolMin: 1, ProtocolMax: 2, OS: "linux", Arch: "amd64", Calamari: []string{"1.0.0"}}
	if err := WriteFrame(&buf, TypeHello, want); err != nil {
		t.Fatal(err)
	}
	// One byte at a time, as a TLS 1.0 peer that splits records might
	// deliver it.
	f, err := ReadFrame(iotest.OneByteReader(&buf), 0)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != TypeHello {
		t.Fatalf("type: got %q, want %q", f.Type, TypeHello)
	}
	var got Hello
	if err := f.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Version != want.Version || got.ProtocolMax != 2 || len(got.Calamari) != 1 {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestReadFrameBadInput(t *testing.T) {
	huge := make([]byte, 4)
	binary.BigEndian.PutUint32(huge, 0xffffffff)
	tests := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"over maximum, checked before allocation", huge, 0, ErrFrameTooLarge},
		{"over a custom maximum", rawFrame(`{"type":"hello"}`), 8, ErrFrameTooLarge},
		{"empty frame", rawFrame(""), 0, ErrEmptyFrame},
		{"truncated header", []byte{0, 0}, 0, io.ErrUnexpectedEOF},
		{"nothing at all", nil, 0, io.EOF},
		{"truncated body", rawFrame(`{"type":"hello"}`)[:10], 0, io.ErrUnexpectedEOF},
		{"garbage JSON", rawFrame(`{"type":`), 0, ErrMalformedFrame},
		{"not an object", rawFrame(`[1,2,3]`), 0, ErrMalformedFrame},
		{"no type", rawFrame(`{"body":{}}`), 0, ErrMalformedFrame},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0, ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(tt.in), tt.max)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestWriteFrameTooLarge(t *testing.T) {
	var buf bytes.Buffer
	err := WriteFrame(&buf, TypeHello, Hello{Version: strings.Repeat("x", MaxFrameSize)})
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v, want ErrFrameTooLarge", err)
	}
	if buf.Len() != 0 {
		t.Errorf("wrote %d bytes, want 0", buf.Len())
	}
}

// TestRefusalRetryAfter checks a refusal's retry-after both ways: this
// release reads it, and a release that predates it (its ErrorBody has no
// such field, and Frame.Decode is json.Unmarshal, which skips unknown
// fields) still reads the code and message.
func TestRefusalRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(w io.Writer) error
		want  time.Duration
	}{
		{"refusal", func(w io.Writer) error {
			return WriteRefusal(w, CodeUnavailable, "no database", 2500*time.Millisecond)
		}, 2500 * time.Millisecond},
		{"plain error", func(w io.Writer) error { return WriteError(w, CodeUnavailable, "no database") }, 0},
		{"negative", func(w io.Writer) error {
			return WriteFrame(w, TypeError, ErrorBody{Code: CodeUnavailable, Message: "no database", RetryAfterMillis: -5})
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tc.write(&buf); err != nil {
				t.Fatal(err)
			}
			f, err := ReadFrame(&buf, 0)
			if err != nil {
				t.Fatal(err)
			}
			var re *RemoteError
			if err := DecodeReply(f, TypeWelcome, nil); !errors.As(err, &re) || re.Code != CodeUnavailable || re.Message != "no database" || re.RetryAfter != tc.want {
				t.Fatalf("got %#v, want %s %q retry after %s", err, CodeUnavailable, "no database", tc.want)
			}
			var old struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			}
			if err := f.Decode(&old); err != nil || old.Code != CodeUnavailable || old.Message != "no database" {
				t.Fatalf("an older agent's ErrorBody: got %+v, %v", old, err)
			}
		})
	}
}

func TestDecodeReply(t *testing.T) {
	var buf bytes.Buffer
	WriteError(&buf, CodeUnauthorized, "not registered")
	f, err := ReadFrame(&buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = DecodeReply(f, TypeAck, nil)
	if !IsCode(err, CodeUnauthorized) {
		t.Errorf("got %v, want a RemoteError with code %s", err, CodeUnauthorized)
	}
	if err := DecodeReply(Frame{Type: TypeHealth}, TypeAck, nil); !errors.Is(err, ErrMalformedFrame) {
		t.Errorf("wrong reply type: got %v, want ErrMalformedFrame", err)
	}
}

// FuzzReadFrame checks that no input makes the decoder panic, allocate past
// the limit, or accept a frame that does not re-encode.
func FuzzReadFrame(f *testing.F) {
	var ok bytes.Buffer
	WriteFrame(&ok, TypeHealth, Health{Version: "1.0.0", DiskFree: 10})
	f.Add(ok.Bytes())
	f.Add(rawFrame(`{"type":"hello","body":null}`))
	f.Add(rawFrame(`{"type":"","body":{}}`))
	f.Add(rawFrame(`{"type":"error","body":{"code":"x","message":"y"}}`))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		fr, err := ReadFrame(bytes.NewReader(in), 4096)
		if err != nil {
			return
		}
		if fr.Type == "" {
			t.Fatal("accepted a frame with no type")
		}
		var out bytes.Buffer
		if err := WriteFrame(&out, fr.Type, fr.Body); err != nil {
			t.Fatalf("re-encode accepted frame: %v", err)
		}
		again, err := ReadFrame(&out, 0)
		if err != nil || again.Type != fr.Type {
			t.Fatalf("round trip: got %q, %v; want %q", again.Type, err, fr.Type)
		}
	})
}

func TestNegotiate(t *testing.T) {
	tests := []struct {
		name                       string
		aMin, aMax, oMin, oMax     int
		want                       int
		wantUpgradeOnly, wantError bool
	}{
		{"same", 1, 1, 1, 1, 1, false, false},
		{"highest common", 1, 3, 1, 2, 2, false, false},
		{"agent newer, overlaps", 2, 4, 1, 3, 3, false, false},
		{"agent below minimum", 1, 1, 2, 3, 1, true, false},
		{"agent entirely newer", 4, 5, 1, 3, 0, false, true},
		{"invalid range", 2, 1, 1, 1, 0, false, true},
		{"zero", 0, 0, 1, 1, 0, false, true},
	}
	for _, tt := range tests {
		got, up, err := Negotiate(tt.aMin, tt.aMax, tt.oMin, tt.oMax)
		if got != tt.want || up != tt.wantUpgradeOnly || (err != nil) != tt.wantError {
			t.Errorf("%s: got %d, %v, %v; want %d, %v, error %v", tt.name, got, up, err, tt.want, tt.wantUpgradeOnly, tt.wantError)
		}
	}
}

func TestParseTLSVersion(t *testing.T) {
	for _, s := range []string{"1.0", "1.1", "1.2", "1.3"} {
		v, err := ParseTLSVersion(s)
		if err != nil || TLSVersionName(v) != s {
			t.Errorf("ParseTLSVersion(%q): got %v, %v; want round trip", s, TLSVersionName(v), err)
		}
	}
	for _, s := range []string{"", "1.4", "tls1.2", "2"} {
		if _, err := ParseTLSVersion(s); err == nil {
			t.Errorf("ParseTLSVersion(%q): got nil error, want one", s)
		}
	}
}
