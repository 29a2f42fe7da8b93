package protocol

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
)

// recordingConn keeps a copy of every Write that reaches the connection.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// loneHeaders counts writes that are a data frame's header whose body
// fits the same write.
func (c *recordingConn) loneHeaders() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, w := range c.writes {
		if len(w) == yamuxHeaderSize && w[1] == yamuxTypeData {
			if l := binary.BigEndian.Uint32(w[8:]); l > 0 && l <= maxJoined-yamuxHeaderSize {
				n++
			}
		}
	}
	return n
}

func TestFrameConnJoinsHeaderAndBody(t *testing.T) {
	sizes := []struct {
		name string
		n    int
	}{
		{"one byte", 1},
		{"small message", 300},
		{"exactly one record", maxJoined - yamuxHeaderSize},
		{"one byte over", maxJoined - yamuxHeaderSize + 1},
		{"bulk", 200 << 10},
	}
	for _, tc := range sizes {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			rec := &recordingConn{Conn: a}
			cli, err := NewSession(rec, SessionOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			srv, err := NewSession(b, SessionOptions{Server: true})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // echo one stream
				defer wg.Done()
				st, err := srv.AcceptStream()
				if err != nil {
					return
				}
				defer st.Close()
				io.Copy(st, st)
			}()
			want := make([]byte, tc.n)
			for i := range want {
				want[i] = byte(i * 7)
			}
			st, err := cli.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				st.Write(want)
				st.Close() // half-close: the echo still comes back
			}()
			got, err := io.ReadAll(st)
			if err != nil {
				t.Fatalf("read echo: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("echo of %d bytes: got %d bytes back, not the same", len(want), len(got))
			}
			cli.Close()
			srv.Close()
			wg.Wait()
			if n := rec.loneHeaders(); n != 0 {
				t.Errorf("got %d data headers written apart from a body that fits with them, want 0", n)
			}
		})
	}
}
