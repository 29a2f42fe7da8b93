package calamari

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"time"
)

func TestBufPipe(t *testing.T) {
	errCut := errors.New("cut")
	data := make([]byte, 3*pipeRoom+12345)
	rand.Read(data)
	tests := []struct {
		name     string
		closeErr error
		wantErr  error
	}{
		{"ends", nil, nil},
		{"cut", errCut, errCut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newBufPipe()
			go func() {
				// Writes of every size, more than the pipe holds.
				for rest, n := data, 1; len(rest) > 0; n = n*3 + 1 {
					k := min(n%(pipeChunk*2)+1, len(rest))
					if _, err := p.Write(rest[:k]); err != nil {
						t.Errorf("Write: got %v, want nil", err)
						return
					}
					rest = rest[k:]
				}
				p.CloseWrite(tt.closeErr)
			}()
			got, err := io.ReadAll(p)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("ReadAll: got error %v, want %v", err, tt.wantErr)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("read %d bytes, not the %d written in order", len(got), len(data))
			}
		})
	}
}

func TestBufPipeReaderCloses(t *testing.T) {
	p := newBufPipe()
	errGone := errors.New("reader gone")
	wrote := make(chan error, 1)
	go func() {
		// More than the pipe holds: the writer waits, then fails.
		for {
			if _, err := p.Write(make([]byte, pipeChunk)); err != nil {
				wrote <- err
				return
			}
		}
	}()
	// Let the writer fill the pipe and wait; the close must wake it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		full := p.queued >= pipeRoom
		p.mu.Unlock()
		if full || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	p.CloseRead(errGone)
	if err := <-wrote; !errors.Is(err, errGone) {
		t.Errorf("Write after CloseRead: got %v, want %v", err, errGone)
	}
	if n, err := p.Read(make([]byte, 10)); n != 0 || err == nil {
		t.Errorf("Read after CloseRead: got %d, %v; want 0 and an error", n, err)
	}
}
