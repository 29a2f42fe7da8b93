package protocol

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/certs"
)

// BenchmarkBulkThroughput pushes 32 MiB from the coordinator's side to the
// agent's over one yamux stream on TLS on loopback, and the same bytes
// over the bare TLS connection as the ceiling: what the session layer
// costs a push, apart from reading, hashing and writing files.
//
//	go test -run '^$' -bench BulkThroughput -count 5 ./protocol/
func BenchmarkBulkThroughput(b *testing.B) {
	const size = 32 << 20
	payload := make([]byte, size)
	rand.Read(payload)
	p := newPair(b)
	sc := ServerTLS{Certificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &p.server.Certificate, nil }}.Config()
	cc := ClientTLS{Identity: p.client, Pins: certs.NewPins(p.server.Thumbprint)}.Config()

	b.Run("raw-tls", func(b *testing.B) {
		s, c, serr, cerr := handshake(b, sc, cc)
		if serr != nil || cerr != nil {
			b.Fatal(serr, cerr)
		}
		s.SetDeadline(time.Time{})
		c.SetDeadline(time.Time{})
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
	b.Run("yamux", func(b *testing.B) {
		s, c, serr, cerr := handshake(b, sc, cc)
		if serr != nil || cerr != nil {
			b.Fatal(serr, cerr)
		}
		s.SetDeadline(time.Time{})
		c.SetDeadline(time.Time{})
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
				_, err = io.CopyN(io.Discard, st, size)
				done <- err
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
