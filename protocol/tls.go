// Package protocol is the wire contract between tendril-agent and
// tendril-server: the TLS policy, the yamux session on top of it, the
// length-prefixed JSON frames carried on its streams, the typed messages,
// and protocol version negotiation.
//
// The package starts no goroutines beyond those of the yamux session and
// does no logging; agent/ and server/ own both.
package protocol

import (
	"crypto/tls"
	"fmt"
	"strings"

	"github.com/tendrildeploy/tendril/certs"
)

// DefaultPort is the coordinator's agent port.
const DefaultPort = 10943

// ALPN is the application protocol both sides offer, so that a TLS
// endpoint that is not Tendril fails the handshake instead of receiving
// yamux frames.
const ALPN = "tendril/1"

// ParseTLSVersion turns "1.0" .. "1.3" into a crypto/tls version.
func ParseTLSVersion(s string) (uint16, error) {
	switch strings.TrimSpace(s) {
	case "1.0":
		return tls.VersionTLS10, nil
	case "1.1":
		return tls.VersionTLS11, nil
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("TLS version %q: want one of 1.0, 1.1, 1.2, 1.3", s)
}

// TLSVersionName turns a crypto/tls version into "1.0" .. "1.3".
func TLSVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "1.0"
	case tls.VersionTLS11:
		return "1.1"
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS13:
		return "1.3"
	}
	return fmt.Sprintf("unknown(0x%04x)", v)
}

// LegacyTLS reports whether a negotiated version is below TLS 1.2, which
// the coordinator shows as a health warning.
func LegacyTLS(v uint16) bool { return v < tls.VersionTLS12 }

// ServerTLS describes the coordinator's side of the handshake.
type ServerTLS struct {
	// Certificate picks the coordinator certificate for a client. During a
	// certificate rotation it serves the previous certificate to agents
	// whose ServerHint names it (see ServerHint).
	Certificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// MinVersion is the lowest TLS version accepted. Zero means TLS 1.2.
	MinVersion uint16
	// VerifyClient is called with the client's certificate thumbprint
	// during the handshake; an error refuses the connection (e.g. the
	// certificate of a deleted agent). Unknown certificates are accepted
	// here so they can call Register.
	VerifyClient func(thumbprint string) error
}

// Config builds the server tls.Config.
func (s ServerTLS) Config() *tls.Config {
	min := minVersion(s.MinVersion)
	return &tls.Config{
		// Set explicitly: Go's default server minimum is TLS 1.2, and TLS
		// 1.0 peers are only served when the operator asked for them.
		MinVersion:     min,
		MaxVersion:     tls.VersionTLS13,
		GetCertificate: s.Certificate,
		// Any certificate is requested and then checked by thumbprint:
		// there is no CA, trust is pinning.
		ClientAuth: tls.RequireAnyClientCert,
		// Full handshakes only: every connection re-proves the client key
		// and is checked against the current revocation list, and no ticket
		// keys need to be shared between coordinator nodes.
		SessionTicketsDisabled: true,
		NextProtos:             []string{ALPN},
		VerifyConnection: func(cs tls.ConnectionState) error {
			t, err := certs.PeerThumbprint(cs)
			if err != nil {
				return err
			}
			if s.VerifyClient == nil {
				return nil
			}
			return s.VerifyClient(t)
		},
	}
}

// ClientTLS describes the agent's side of the handshake.
type ClientTLS struct {
	// Identity is the agent's certificate and key.
	Identity *certs.Identity
	// Pins holds the coordinator thumbprints the agent trusts.
	Pins *certs.Pins
	// Hint is the coordinator thumbprint the agent prefers; it is sent as
	// the server name so a coordinator in the middle of a certificate
	// rotation serves a certificate this agent already trusts.
	Hint string
	// MinVersion is the lowest TLS version offered. Zero means TLS 1.2.
	MinVersion uint16
	// MaxVersion is the highest TLS version offered. Zero means TLS 1.3.
	// Lowering it is only useful to behave like an old peer in tests.
	MaxVersion uint16
	// Endorsed, when set, also accepts a coordinator certificate not in
	// Pins whose key the pinned signing key endorsed (one made by
	// rotations the agent missed).
	Endorsed *Endorsement
}

// Endorsement is how an agent accepts a coordinator certificate it has
// not pinned: see certs.VerifyPinnedOrEndorsed.
type Endorsement struct {
	// SigningKey returns the coordinator signing key the agent pinned.
	SigningKey func() string
	// Learned is called with the thumbprint of an endorsed certificate
	// the handshake accepted, for the agent to pin it.
	Learned func(thumbprint string)
}

// verify is the VerifyConnection of a handshake with the coordinator.
func (e *Endorsement) verify(pins *certs.Pins) func(tls.ConnectionState) error {
	if e == nil {
		return certs.VerifyPinned(pins)
	}
	return certs.VerifyPinnedOrEndorsed(pins, e.SigningKey, e.Learned)
}

// Config builds the client tls.Config.
func (c ClientTLS) Config() *tls.Config {
	min, max := minVersion(c.MinVersion), c.MaxVersion
	if max == 0 {
		max = tls.VersionTLS13
	}
	cfg := &tls.Config{
		MinVersion:   min,
		MaxVersion:   max,
		Certificates: []tls.Certificate{c.Identity.Certificate},
		NextProtos:   []string{ALPN},
		// Chain verification is replaced, not skipped: VerifyConnection
		// pins the coordinator's thumbprint on every handshake.
		InsecureSkipVerify: true,
		VerifyConnection:   c.Endorsed.verify(c.Pins),
	}
	if c.Hint != "" {
		cfg.ServerName = ServerHint(c.Hint)
	}
	return cfg
}

// ServerHint is the TLS server name an agent sends to say which
// coordinator certificate it trusts: a DNS-safe prefix of the thumbprint.
func ServerHint(thumbprint string) string {
	if len(thumbprint) > 32 {
		thumbprint = thumbprint[:32]
	}
	return "t" + thumbprint + ".tendril.invalid"
}

// HintMatches reports whether a server name sent by a client names the
// certificate with the given thumbprint.
func HintMatches(serverName, thumbprint string) bool {
	return serverName != "" && serverName == ServerHint(thumbprint)
}

// ListenerTLS describes a listening agent's side of the handshake. The
// coordinator dials a listening agent, so the TCP roles of a polling
// agent's session are reversed; the TLS roles follow TCP (the agent serves
// the handshake), which keeps the listening port an ordinary TLS endpoint
// that refuses every client but a pinned coordinator. Above TLS nothing
// changes: the agent still opens the session's first stream and says
// Hello.
type ListenerTLS struct {
	// Certificate returns the agent's certificate now: a rotation
	// changes it between handshakes.
	Certificate func() *tls.Certificate
	// Pins holds the coordinator thumbprints the agent trusts; a client
	// presenting any other certificate fails the handshake.
	Pins *certs.Pins
	// MinVersion is the lowest TLS version accepted. Zero means TLS 1.2.
	MinVersion uint16
	// Endorsed is as in ClientTLS.
	Endorsed *Endorsement
}

// Config builds the listening agent's tls.Config.
func (l ListenerTLS) Config() *tls.Config {
	min := minVersion(l.MinVersion)
	return &tls.Config{
		MinVersion: min,
		MaxVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return l.Certificate(), nil
		},
		ClientAuth:             tls.RequireAnyClientCert,
		SessionTicketsDisabled: true,
		NextProtos:             []string{ALPN},
		VerifyConnection:       l.Endorsed.verify(l.Pins),
	}
}

// DialerTLS describes the coordinator's side of the handshake with a
// listening agent it dials.
type DialerTLS struct {
	// Certificate is the coordinator certificate to present: one the
	// agent trusts (during a coordinator rotation, the one it last
	// acknowledged).
	Certificate *tls.Certificate
	// Agent holds the thumbprints the dialed agent may present: the one it
	// was enrolled with, and during its own rotation the next one.
	Agent *certs.Pins
	// MinVersion is the lowest TLS version offered. Zero means TLS 1.2.
	MinVersion uint16
}

// Config builds the coordinator's tls.Config for dialing an agent.
func (d DialerTLS) Config() *tls.Config {
	min := minVersion(d.MinVersion)
	return &tls.Config{
		MinVersion:   min,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*d.Certificate},
		NextProtos:   []string{ALPN},
		// Chain verification is replaced by pinning, as for agents.
		InsecureSkipVerify: true,
		VerifyConnection:   certs.VerifyPinned(d.Agent),
	}
}

// minVersion is the TLS minimum a zero setting means: TLS 1.2. TLS 1.0
// and 1.1 are only ever offered or accepted when asked for.
func minVersion(v uint16) uint16 {
	if v == 0 {
		return tls.VersionTLS12
	}
	return v
}
