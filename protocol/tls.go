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
	"errors"
	"fmt"
	"slices"
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
	return serverProfile(&tls.Config{
		// Set explicitly: Go's default server minimum is TLS 1.2, and TLS
		// 1.0 peers are only served when the operator asked for them.
		MinVersion:     min,
		MaxVersion:     tls.VersionTLS13,
		CipherSuites:   CipherSuites(min),
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
	})
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
		CipherSuites: CipherSuites(min),
		Certificates: []tls.Certificate{c.Identity.Certificate},
		// WaitALPN is offered, never chosen: it tells the coordinator
		// that this agent reads the wait line (wait.go).
		NextProtos: []string{ALPN, WaitALPN},
		// Chain verification is replaced, not skipped: VerifyConnection
		// pins the coordinator's thumbprint on every handshake.
		InsecureSkipVerify: true,
		VerifyConnection:   refuseLegacySuite(c.Endorsed.verify(c.Pins)),
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
	return serverProfile(&tls.Config{
		MinVersion:   min,
		MaxVersion:   tls.VersionTLS13,
		CipherSuites: CipherSuites(min),
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return l.Certificate(), nil
		},
		ClientAuth:             tls.RequireAnyClientCert,
		SessionTicketsDisabled: true,
		NextProtos:             []string{ALPN},
		VerifyConnection:       l.Endorsed.verify(l.Pins),
	})
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
		CipherSuites: CipherSuites(min),
		Certificates: []tls.Certificate{*d.Certificate},
		NextProtos:   []string{ALPN},
		// Chain verification is replaced by pinning, as for agents.
		InsecureSkipVerify: true,
		VerifyConnection:   refuseLegacySuite(certs.VerifyPinned(d.Agent)),
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

// The TLS profile: Mozilla's "intermediate" configuration, as far as the
// peers Tendril serves allow. TLS 1.3 suites are fixed by Go and all
// acceptable; these lists only govern TLS 1.0 to 1.2.
var (
	// modernSuites are the only suites used at TLS 1.2: ECDHE key
	// exchange with an AEAD cipher. Both signature kinds are listed
	// because the HTTPS console may be given an RSA certificate; Tendril's
	// own certificates are ECDSA.
	modernSuites = []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
	// legacySuites are added under a TLS 1.0 or 1.1 minimum, for old
	// hosts that know no AEAD suite: those versions cannot negotiate
	// anything else. ECDSA only, because that is what Tendril's
	// certificates are; never used at TLS 1.2 (see serverProfile).
	legacySuites = []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	}
)

// CipherSuites returns the TLS 1.0–1.2 cipher suites of Tendril's profile
// for a minimum TLS version (zero meaning TLS 1.2): ECDHE with AES-GCM or
// ChaCha20-Poly1305, plus the ECDHE-ECDSA CBC-SHA suites when TLS 1.0 or
// 1.1 is allowed. A config built with the legacy suites must also keep
// them away from TLS 1.2 peers, as the configs of this package do.
func CipherSuites(min uint16) []uint16 {
	if minVersion(min) >= tls.VersionTLS12 {
		return slices.Clone(modernSuites)
	}
	return slices.Concat(modernSuites, legacySuites)
}

// legacySuite reports whether a negotiated cipher suite is one of the CBC
// suites allowed only below TLS 1.2.
func legacySuite(id uint16) bool { return slices.Contains(legacySuites, id) }

// serverProfile keeps the CBC suites of a legacy minimum away from TLS 1.2
// clients. Go's crypto/tls chooses a suite from one list whatever the
// version (it only keeps TLS 1.2-only suites from older versions, never
// the reverse), so a TLS 1.2 client that offers only CBC suites would get
// one. The negotiated version is known from the ClientHello before the
// suite is chosen: a client that can speak TLS 1.2 or 1.3 gets a config
// without the legacy suites, and only TLS 1.0/1.1 clients see them.
func serverProfile(cfg *tls.Config) *tls.Config {
	// The check after the handshake backs the choice up: whatever chose
	// the suite, a CBC suite above TLS 1.1 fails the handshake.
	cfg.VerifyConnection = refuseLegacySuite(cfg.VerifyConnection)
	if cfg.MinVersion >= tls.VersionTLS12 {
		return cfg // no legacy suite in the list
	}
	modern := cfg.Clone()
	modern.CipherSuites = CipherSuites(tls.VersionTLS12)
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		// Exact versions rather than ">= 1.2": the list may hold GREASE
		// values, which are numerically above TLS 1.3.
		if slices.ContainsFunc(hello.SupportedVersions, func(v uint16) bool {
			return v == tls.VersionTLS12 || v == tls.VersionTLS13
		}) {
			return modern, nil
		}
		return nil, nil // a TLS 1.0/1.1 client: the legacy suites apply
	}
	return cfg
}

// errLegacySuite is the refusal of a CBC suite negotiated at TLS 1.2.
var errLegacySuite = errors.New("tls: a CBC cipher suite was negotiated at TLS 1.2; the profile allows it only for TLS 1.0 and 1.1")

// refuseLegacySuite wraps a VerifyConnection callback (nil allowed) so
// that a connection that negotiated a legacy suite at TLS 1.2 fails. A
// client needs it because it offers the legacy suites whenever its minimum
// is below TLS 1.2, and the server, not the client, picks the suite.
func refuseLegacySuite(next func(tls.ConnectionState) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if cs.Version >= tls.VersionTLS12 && legacySuite(cs.CipherSuite) {
			return errLegacySuite
		}
		if next == nil {
			return nil
		}
		return next(cs)
	}
}
