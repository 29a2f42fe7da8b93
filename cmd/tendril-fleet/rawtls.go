package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

// rawTLS is one measurement of a plain TLS connection on loopback.
type rawTLS struct {
	took    time.Duration // first byte written to last byte read
	version uint16
	cipher  uint16
}

// measureRawTLS is the ceiling of figure 5: a TLS connection on loopback
// with the agent session's settings (protocol.ServerTLS and ClientTLS,
// fresh ECDSA P-256 identities pinned by thumbprint both ways), where the
// server side writes data, as the coordinator does in a push, and the
// client side reads and discards it. No yamux, no framing, no disk: what
// the session's transport can do at best on this machine. The handshake
// is not timed.
func measureRawTLS(ctx context.Context, data []byte) (rawTLS, error) {
	srvID, err := certs.NewIdentity("bench-coordinator")
	if err != nil {
		return rawTLS{}, fmt.Errorf("raw TLS: %w", err)
	}
	cliID, err := certs.NewIdentity("bench-agent")
	if err != nil {
		return rawTLS{}, fmt.Errorf("raw TLS: %w", err)
	}
	srvCfg := protocol.ServerTLS{
		Certificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &srvID.Certificate, nil },
		VerifyClient: func(t string) error {
			if t != cliID.Thumbprint {
				return certs.ErrUntrusted
			}
			return nil
		},
	}.Config()
	cliCfg := protocol.ClientTLS{Identity: cliID, Pins: certs.NewPins(srvID.Thumbprint), Hint: srvID.Thumbprint}.Config()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return rawTLS{}, fmt.Errorf("raw TLS: %w", err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	type sent struct {
		start time.Time
		err   error
	}
	sentc := make(chan sent, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sentc <- sent{err: err}
			return
		}
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
		defer stop()
		tc := tls.Server(c, srvCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			sentc <- sent{err: err}
			return
		}
		start := time.Now()
		_, err = tc.Write(data)
		if err == nil {
			// Close only once the reader has closed, so a close can never
			// cut bytes in flight.
			io.Copy(io.Discard, tc)
		}
		sentc <- sent{start: start, err: err}
	}()
	var s sent
	received := false
	// The goroutine ends once both connections are closed: wait for it
	// on every return.
	defer func() {
		if !received {
			ln.Close()
			cancel()
			<-sentc
		}
	}()

	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return rawTLS{}, fmt.Errorf("raw TLS: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	tc := tls.Client(c, cliCfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return rawTLS{}, fmt.Errorf("raw TLS: handshake: %w", err)
	}
	n, err := io.CopyN(io.Discard, tc, int64(len(data)))
	end := time.Now()
	tc.Close()
	s, received = <-sentc, true
	if err != nil {
		return rawTLS{}, fmt.Errorf("raw TLS: read %d of %d bytes: %w", n, len(data), errors.Join(err, s.err))
	}
	if s.err != nil {
		return rawTLS{}, fmt.Errorf("raw TLS: write: %w", s.err)
	}
	st := tc.ConnectionState()
	return rawTLS{took: end.Sub(s.start), version: st.Version, cipher: st.CipherSuite}, nil
}
