package protocol

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/certs"
)

// BenchmarkBulkThroughput pushes 32 MiB from the coordinator's side to the
// agent's on loopback: over the bare TLS connection (the ceiling), over a
// yamux stream read and discarded (the session layer's cost), and over a
// yamux stream received as an agent receives a push (appended to a file
// while hashed, then synced and checked).
//
//	go test -run '^$' -bench BulkThroughput -count 5 ./protocol/
func BenchmarkBulkThroughput(b *testing.B) {
	const size = 32 << 20
	payload := make([]byte, size)
	rand.Read(payload)
	p := newPair(b)
	sc := ServerTLS{Certificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &p.server.Certificate, nil }}.Config()
	cc := ClientTLS{Identity: p.client, Pins: certs.NewPins(p.server.Thumbprint)}.Config()
	connect := func(b *testing.B) (s, c *tls.Conn) {
		s, c, serr, cerr := handshake(b, sc, cc)
		if serr != nil || cerr != nil {
			b.Fatal(serr, cerr)
		}
		s.SetDeadline(time.Time{})
		c.SetDeadline(time.Time{})
		return s, c
	}

	b.Run("raw-tls", func(b *testing.B) {
		s, c := connect(b)
		b.SetBytes(size)
		for b.Loop() {
			done := make(chan error, 1)
			go func() {
				_, err := io.CopyN(io.Discard, c, size)
				done <- err
			}()
			if _, err := s.Write(payload); err != nil {
				b.Fatal(err)
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
	})

	receivers := []struct {
		name    string
		receive func(b *testing.B, st io.Reader) error
	}{
		{"yamux", func(b *testing.B, st io.Reader) error {
			_, err := io.CopyN(io.Discard, st, size)
			return err
		}},
		{"yamux+file+sha256", func(b *testing.B, st io.Reader) error {
			return ReceiveBulk(st, filepath.Join(b.TempDir(), "partial"), transferOf(payload))
		}},
	}
	for _, rc := range receivers {
		b.Run(rc.name, func(b *testing.B) {
			s, c := connect(b)
			srv, err := NewSession(s, SessionOptions{Server: true})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			cli, err := NewSession(c, SessionOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer cli.Close()
			b.SetBytes(size)
			for b.Loop() {
				done := make(chan error, 1)
				go func() {
					st, err := cli.AcceptStream()
					if err != nil {
						done <- err
						return
					}
					defer st.Close()
					done <- rc.receive(b, st)
				}()
				st, err := srv.OpenStream()
				if err != nil {
					b.Fatal(err)
				}
				if err := SendBulk(st, bytes.NewReader(payload), 0, size); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				st.Close()
			}
		})
	}
}
