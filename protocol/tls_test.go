package protocol

import (
	"crypto/tls"
	"slices"
	"sync"
	"testing"

	"github.com/tendrildeploy/tendril/certs"
)

// cbcSuites are every CBC-SHA1 suite with ECDHE Go implements: none may be
// negotiated at TLS 1.2.
var cbcSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
}

func suiteNames(ids []uint16) []string {
	var out []string
	for _, id := range ids {
		out = append(out, tls.CipherSuiteName(id))
	}
	return out
}

func TestCipherSuites(t *testing.T) {
	ecdsaCBC := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}
	for _, tc := range []struct {
		min     uint16
		wantCBC []uint16
	}{
		{0, nil},
		{tls.VersionTLS10, ecdsaCBC},
		{tls.VersionTLS11, ecdsaCBC},
		{tls.VersionTLS12, nil},
		{tls.VersionTLS13, nil},
	} {
		t.Run(TLSVersionName(minVersion(tc.min)), func(t *testing.T) {
			got := CipherSuites(tc.min)
			var cbc []uint16
			for _, id := range got {
				s := suiteByID(id)
				if s == nil {
					t.Fatalf("got unknown or insecure suite 0x%04x", id)
				}
				if slices.Contains(s.SupportedVersions, tls.VersionTLS10) {
					cbc = append(cbc, id)
				}
			}
			if !slices.Equal(cbc, tc.wantCBC) {
				t.Errorf("suites usable below TLS 1.2: got %v, want %v", suiteNames(cbc), suiteNames(tc.wantCBC))
			}
			if n := len(got) - len(cbc); n != 6 {
				t.Errorf("AEAD suites: got %d of %v, want the 6 ECDHE AES-GCM and ChaCha20-Poly1305 suites", n, suiteNames(got))
			}
		})
	}
}

// suiteByID returns Go's description of a secure suite, nil for an
// insecure or unknown one.
func suiteByID(id uint16) *tls.CipherSuite {
	for _, s := range tls.CipherSuites() {
		if s.ID == id {
			return s
		}
	}
	return nil
}

// TestTLSProfileServers offers the server configs (the coordinator's
// agent port and a listening agent's port) what a TLS 1.2 client that
// only speaks CBC offers, in each mode: refused even when TLS 1.0 is
// allowed, while a TLS 1.0 client still gets the CBC suites it needs.
func TestTLSProfileServers(t *testing.T) {
	p := newPair(t)
	servers := map[string]func(min uint16) *tls.Config{
		"agent port": func(min uint16) *tls.Config {
			return ServerTLS{
				Certificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &p.server.Certificate, nil },
				MinVersion:  min,
			}.Config()
		},
		// Roles reversed: the agent serves, the coordinator's certificate
		// is the pinned client.
		"listening agent": func(min uint16) *tls.Config {
			return ListenerTLS{
				Certificate: func() *tls.Certificate { return &p.server.Certificate },
				Pins:        certs.NewPins(p.client.Thumbprint),
				MinVersion:  min,
			}.Config()
		},
	}
	client := func(version uint16, suites ...uint16) *tls.Config {
		return &tls.Config{
			MinVersion: version, MaxVersion: version, CipherSuites: suites,
			Certificates:       []tls.Certificate{p.client.Certificate},
			NextProtos:         []string{ALPN},
			InsecureSkipVerify: true,
		}
	}
	gcm := tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
	tests := []struct {
		name      string
		min       uint16
		client    *tls.Config
		wantSuite uint16 // 0: refused
	}{
		{"TLS 1.2 CBC only refused by default", 0, client(tls.VersionTLS12, cbcSuites...), 0},
		{"TLS 1.2 CBC only refused under 1.0", tls.VersionTLS10, client(tls.VersionTLS12, cbcSuites...), 0},
		{"TLS 1.2 CBC first gets GCM under 1.0", tls.VersionTLS10, client(tls.VersionTLS12, append(slices.Clone(cbcSuites), gcm)...), gcm},
		{"TLS 1.2 ChaCha20 by default", 0, client(tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256), tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256},
		{"TLS 1.2 AES-256-GCM under 1.0", tls.VersionTLS10, client(tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384), tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
		{"TLS 1.0 CBC accepted under 1.0", tls.VersionTLS10, client(tls.VersionTLS10, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA), tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA},
		{"TLS 1.1 CBC accepted under 1.0", tls.VersionTLS10, client(tls.VersionTLS11, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA), tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA},
		{"TLS 1.0 refused by default", 0, client(tls.VersionTLS10, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA), 0},
	}
	for name, serve := range servers {
		for _, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				s, _, serr, cerr := handshake(t, serve(tt.min), tt.client)
				if tt.wantSuite == 0 {
					if serr == nil && cerr == nil {
						t.Fatalf("got a handshake with %s, want it refused", tls.CipherSuiteName(s.ConnectionState().CipherSuite))
					}
					return
				}
				if serr != nil || cerr != nil {
					t.Fatalf("got server %v, client %v; want a handshake", serr, cerr)
				}
				if got := s.ConnectionState().CipherSuite; got != tt.wantSuite {
					t.Errorf("suite: got %s, want %s", tls.CipherSuiteName(got), tls.CipherSuiteName(tt.wantSuite))
				}
			})
		}
	}
}

// TestTLSProfileClients checks the two dialers (an agent dialing the
// coordinator, the coordinator dialing a listening agent) against a Go
// test server that records what they offer: no CBC suite unless TLS 1.0
// is allowed, and even then none accepted at TLS 1.2.
func TestTLSProfileClients(t *testing.T) {
	p := newPair(t)
	clients := map[string]func(min uint16) *tls.Config{
		"agent dialer": func(min uint16) *tls.Config {
			return ClientTLS{Identity: p.client, Pins: certs.NewPins(p.server.Thumbprint), MinVersion: min}.Config()
		},
		"coordinator dialer": func(min uint16) *tls.Config {
			return DialerTLS{Certificate: &p.client.Certificate, Agent: certs.NewPins(p.server.Thumbprint), MinVersion: min}.Config()
		},
	}
	// server answers at up to maxVersion with only the given suites, and
	// records the suites the client offered.
	server := func(maxVersion uint16, suites []uint16, offered *[]uint16) *tls.Config {
		var mu sync.Mutex
		return &tls.Config{
			MinVersion: tls.VersionTLS10, MaxVersion: maxVersion, CipherSuites: suites,
			Certificates: []tls.Certificate{p.server.Certificate},
			ClientAuth:   tls.RequireAnyClientCert,
			GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				mu.Lock()
				*offered = slices.Clone(hello.CipherSuites)
				mu.Unlock()
				return nil, nil
			},
		}
	}
	tests := []struct {
		name       string
		min        uint16
		serverMax  uint16
		serverOnly []uint16
		wantOffer  bool // CBC suites in the ClientHello
		wantOK     bool
	}{
		{"default offers no CBC", 0, tls.VersionTLS12, nil, false, true},
		{"default against a CBC-only TLS 1.2 server", 0, tls.VersionTLS12, cbcSuites, false, false},
		{"1.0 offers CBC", tls.VersionTLS10, tls.VersionTLS12, nil, true, true},
		{"1.0 refuses CBC chosen at TLS 1.2", tls.VersionTLS10, tls.VersionTLS12, cbcSuites, true, false},
		{"1.0 accepts CBC at TLS 1.0", tls.VersionTLS10, tls.VersionTLS10, cbcSuites, true, true},
	}
	for name, dial := range clients {
		for _, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				var offered []uint16
				_, c, serr, cerr := handshake(t, server(tt.serverMax, tt.serverOnly, &offered), dial(tt.min))
				var gotCBC []uint16
				for _, id := range offered {
					if slices.Contains(cbcSuites, id) {
						gotCBC = append(gotCBC, id)
					}
				}
				if (len(gotCBC) > 0) != tt.wantOffer {
					t.Errorf("CBC suites offered: got %v, want any: %v", suiteNames(gotCBC), tt.wantOffer)
				}
				for _, id := range gotCBC {
					if id == tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA || id == tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA {
						t.Errorf("offered %s: got an RSA CBC suite, want ECDSA ones only", tls.CipherSuiteName(id))
					}
				}
				if !tt.wantOK {
					if cerr == nil {
						t.Fatalf("got a handshake with %s at %s, want the client to refuse it",
							tls.CipherSuiteName(c.ConnectionState().CipherSuite), TLSVersionName(c.ConnectionState().Version))
					}
					return
				}
				if serr != nil || cerr != nil {
					t.Fatalf("got server %v, client %v; want a handshake", serr, cerr)
				}
			})
		}
	}
}
