package protocol

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func transferOf(b []byte) Transfer {
	sum := sha256.Sum256(b)
	return Transfer{Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}
}

// cutReader fails after n bytes, like a connection cut mid-transfer.
type cutReader struct {
	r io.Reader
	n int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errors.New("connection reset")
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

func TestBulkResumesAfterCut(t *testing.T) {
	data := make([]byte, 300<<10)
	rand.Read(data)
	tr := transferOf(data)
	path := filepath.Join(t.TempDir(), tr.SHA256+".part")
	src := bytes.NewReader(data)

	// The first attempt is cut after 100 KiB.
	var wire bytes.Buffer
	if err := SendBulk(&wire, src, PartialSize(path), tr.Size); err != nil {
		t.Fatal(err)
	}
	if err := ReceiveBulk(&cutReader{r: &wire, n: 100 << 10}, path, tr); err == nil {
		t.Fatal("got nil error from a cut transfer")
	}
	off := PartialSize(path)
	if off != 100<<10 {
		t.Fatalf("partial size: got %d, want %d", off, 100<<10)
	}
	// The second attempt sends only the rest.
	wire.Reset()
	if err := SendBulk(&wire, src, off, tr.Size); err != nil {
		t.Fatal(err)
	}
	if got, want := int64(wire.Len()), tr.Size-off; got != want {
		t.Fatalf("resumed transfer sent %d bytes, want %d", got, want)
	}
	if err := ReceiveBulk(&wire, path, tr); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, data) {
		t.Fatal("received file differs from the source")
	}
}

func TestBulkRejectsCorruption(t *testing.T) {
	data := []byte("the real bundle")
	tr := transferOf(data)
	tests := []struct {
		name    string
		partial []byte
		wire    []byte
	}{
		{"wrong bytes", nil, []byte("the fake bundle")},
		{"corrupt partial", []byte("XXX"), data[3:]},
		{"partial larger than the transfer", bytes.Repeat([]byte("x"), 100), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "part")
			if tt.partial != nil {
				os.WriteFile(path, tt.partial, 0o600)
			}
			err := ReceiveBulk(bytes.NewReader(tt.wire), path, tr)
			if !errors.Is(err, ErrTransfer) {
				t.Fatalf("got %v, want ErrTransfer", err)
			}
			if PartialSize(path) != 0 {
				t.Fatal("corrupt partial file kept, want it removed so the next attempt starts over")
			}
		})
	}
	if err := SendBulk(io.Discard, bytes.NewReader(data), 99, tr.Size); !errors.Is(err, ErrTransfer) {
		t.Fatalf("offset past the end: got %v, want ErrTransfer", err)
	}
}

// failAfter is a tee consumer that takes n bytes, then fails.
type failAfter struct {
	got bytes.Buffer
	n   int
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.got.Len()+len(p) > f.n {
		return 0, errors.New("consumer gave up")
	}
	return f.got.Write(p)
}

func TestReceiveBulkTee(t *testing.T) {
	data := make([]byte, 700<<10)
	rand.Read(data)
	tr := transferOf(data)
	tests := []struct {
		name     string
		held     int  // bytes the partial file holds already
		teeTakes int  // bytes the tee consumer takes before failing
		wantAll  bool // it must have got every byte (else a prefix)
	}{
		{"fresh", 0, len(data), true},
		{"resumed: the held bytes first", 300 << 10, len(data), true},
		{"consumer stops early: the receive goes on", 0, 200 << 10, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "part")
			if tt.held > 0 {
				if err := os.WriteFile(path, data[:tt.held], 0o600); err != nil {
					t.Fatal(err)
				}
			}
			tee := &failAfter{n: tt.teeTakes}
			if err := ReceiveBulkTee(bytes.NewReader(data[tt.held:]), path, tr, tee); err != nil {
				t.Fatalf("ReceiveBulkTee: got %v, want nil", err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
				t.Error("partial file differs from the source")
			}
			got := tee.got.Bytes()
			if !bytes.Equal(got, data[:len(got)]) || (tt.wantAll && len(got) != len(data)) || len(got) > tt.teeTakes {
				t.Errorf("tee got %d bytes (a prefix of the data: %v), want every byte %v, at most %d", len(got), bytes.Equal(got, data[:len(got)]), tt.wantAll, tt.teeTakes)
			}
		})
	}
}

// TestReceiveBulkTeeHashedOrNot runs the same transfers through the
// hashed receive and the unhashed one: they keep and tee the same bytes
// and resume alike; only the hashed one refuses bytes that are not the
// header's SHA-256, and both refuse a partial file longer than the
// transfer.
func TestReceiveBulkTeeHashedOrNot(t *testing.T) {
	data := make([]byte, 700<<10)
	rand.Read(data)
	tr := transferOf(data)
	other := bytes.Clone(data)
	other[500<<10] ^= 1
	receivers := []struct {
		name    string
		receive func(io.Reader, string, Transfer, io.Writer) error
		hashed  bool
	}{
		{"hashed", ReceiveBulkTee, true},
		{"unhashed", ReceiveBulkTeeUnhashed, false},
	}
	tests := []struct {
		name    string
		partial []byte // what the partial file holds before
		wire    []byte // what arrives
		cutAt   int64  // the connection breaks after that many bytes of wire (0: never)
		// what the receive must return: nil, ErrTransfer, or any other error
		// (a cut), and what the partial file must hold after
		wantErr     error
		wantCut     bool
		wantPartial []byte
	}{
		{name: "fresh", wire: data, wantPartial: data},
		{name: "resumed", partial: data[:300<<10], wire: data[300<<10:], wantPartial: data},
		{name: "cut: keeps what arrived", wire: data, cutAt: 200 << 10, wantCut: true, wantPartial: data[:200<<10]},
		{name: "other bytes under the header", wire: other, wantErr: ErrTransfer},
		{name: "partial larger than the transfer", partial: append(bytes.Clone(data), 'x'), wantErr: ErrTransfer},
	}
	for _, rc := range receivers {
		for _, tt := range tests {
			t.Run(rc.name+"/"+tt.name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "part")
				if tt.partial != nil {
					if err := os.WriteFile(path, tt.partial, 0o600); err != nil {
						t.Fatal(err)
					}
				}
				var r io.Reader = bytes.NewReader(tt.wire)
				if tt.cutAt > 0 {
					r = &cutReader{r: r, n: tt.cutAt}
				}
				wantErr, wantPartial := tt.wantErr, tt.wantPartial
				if wantErr == ErrTransfer && tt.partial == nil && !rc.hashed {
					// Unhashed, the bytes are kept and passed on: telling
					// them apart is the tee's consumer's job.
					wantErr, wantPartial = nil, tt.wire
				}
				var tee bytes.Buffer
				err := rc.receive(r, path, tr, &tee)
				switch {
				case tt.wantCut:
					if err == nil || errors.Is(err, ErrTransfer) {
						t.Fatalf("got %v, want the cut's error", err)
					}
				case wantErr != nil:
					if !errors.Is(err, wantErr) {
						t.Fatalf("got %v, want %v", err, wantErr)
					}
				case err != nil:
					t.Fatalf("got %v, want nil", err)
				}
				got, _ := os.ReadFile(path)
				if !bytes.Equal(got, wantPartial) {
					t.Errorf("partial file: got %d bytes, want %d (equal: %v)", len(got), len(wantPartial), bytes.Equal(got, wantPartial))
				}
				if wantErr == nil && !bytes.Equal(tee.Bytes(), append(bytes.Clone(tt.partial), tt.wire[:len(got)-len(tt.partial)]...)) {
					t.Errorf("tee got %d bytes, want the %d of the partial file in order", tee.Len(), len(got))
				}
			})
		}
	}
}
