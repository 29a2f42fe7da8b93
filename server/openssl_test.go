package server

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/internal/openssltest"
)

// sClient runs the real openssl s_client against the coordinator's agent
// port, naming the server as agents do.
func sClient(t *testing.T, addr string, args ...string) string {
	t.Helper()
	return openssltest.SClient(t, addr, append([]string{"-servername", "tendril"}, args...)...)
}

// opensslCert writes the test peer's certificate and key as PEM files for
// openssl.
func opensslCert(t *testing.T) (certPath, keyPath string) {
	t.Helper()
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := newIdentity(t).Save(certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// rsaCertificate is a self-signed RSA certificate, as an operator may give
// the HTTPS console: the ECDHE-RSA suites are only negotiable with one.
func rsaCertificate(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "console"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"tendril"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// goDefaultServer serves TLS with Go's default suites, which is what every
// endpoint did before the profile: the control that shows openssl really
// offers a suite the profile then refuses.
func goDefaultServer(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.(*tls.Conn).Handshake()
				c.Read(make([]byte, 1)) // until s_client hangs up
			}(c)
		}
	}()
	return ln.Addr().String()
}

// TestOpenSSLCipherSuites enumerates with openssl s_client the suites each
// TLS endpoint of the coordinator negotiates at TLS 1.2, in each mode: no
// CBC-SHA suite, even when --tls-min 1.0 lets old agents use them at TLS
// 1.0 and 1.1 (issue 19). The agent's own listener is tested the same way
// in package agent.
func TestOpenSSLCipherSuites(t *testing.T) {
	cert, key := opensslCert(t)
	withCert := []string{"-cert", cert, "-key", key}
	ecdsa := newIdentity(t).Certificate
	rsaCert := rsaCertificate(t)
	console := func(c tls.Certificate) func(t *testing.T) string {
		return func(t *testing.T) string {
			return startServer(t, func(cfg *Config) { cfg.HTTPTLS = &tls.Config{Certificates: []tls.Certificate{c}} }).HTTPAddr()
		}
	}
	type probe struct {
		version, ciphers string
		want             string // the suite negotiated, "" for a refusal
	}
	// Every suite openssl knows without an AEAD cipher: CBC with SHA1,
	// SHA256 and SHA384, ECDHE or not.
	const noAEAD = "ALL:!AESGCM:!CHACHA20:!AESCCM:!ARIAGCM"
	agentProbes := []probe{
		{"-tls1_2", "ECDHE-ECDSA-AES128-SHA", ""},
		{"-tls1_2", "ECDHE-ECDSA-AES256-SHA", ""},
		{"-tls1_2", noAEAD, ""},
		{"-tls1_2", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"},
		{"-tls1_2", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"},
		{"-tls1_2", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-CHACHA20-POLY1305"},
		// Offered CBC first, the server still picks the AEAD suite.
		{"-tls1_2", "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"},
	}
	legacyProbes := append(slices.Clone(agentProbes),
		probe{"-tls1", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA"},
		probe{"-tls1_1", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES256-SHA"},
	)
	defaultProbes := append(slices.Clone(agentProbes),
		probe{"-tls1", "ECDHE-ECDSA-AES128-SHA", ""},
		probe{"-tls1_1", "ECDHE-ECDSA-AES256-SHA", ""},
	)
	consoleProbes := func(kind string) []probe {
		return []probe{
			{"-tls1_2", "ECDHE-" + kind + "-AES128-SHA", ""},
			{"-tls1_2", "ECDHE-" + kind + "-AES256-SHA", ""},
			{"-tls1_2", noAEAD, ""},
			{"-tls1_1", "ECDHE-" + kind + "-AES128-SHA", ""},
			{"-tls1_2", "ECDHE-" + kind + "-AES128-GCM-SHA256", "ECDHE-" + kind + "-AES128-GCM-SHA256"},
			{"-tls1_2", "ECDHE-" + kind + "-CHACHA20-POLY1305", "ECDHE-" + kind + "-CHACHA20-POLY1305"},
		}
	}
	for _, ep := range []struct {
		name   string
		start  func(t *testing.T) string
		args   []string
		probes []probe
	}{
		{"agent port", func(t *testing.T) string { return startServer(t, nil).AgentAddr() }, withCert, defaultProbes},
		{"agent port --tls-min 1.0", func(t *testing.T) string {
			return startServer(t, func(c *Config) { c.TLSMin = tls.VersionTLS10 }).AgentAddr()
		}, withCert, legacyProbes},
		{"HTTPS console ECDSA", console(ecdsa), nil, consoleProbes("ECDSA")},
		{"HTTPS console RSA", console(rsaCert), nil, consoleProbes("RSA")},
		// Controls: what Go's defaults negotiated before the profile.
		{"Go defaults ECDSA (control)", func(t *testing.T) string { return goDefaultServer(t, ecdsa) }, nil, []probe{
			{"-tls1_2", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA"},
			{"-tls1_2", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES256-SHA"},
		}},
		{"Go defaults RSA (control)", func(t *testing.T) string { return goDefaultServer(t, rsaCert) }, nil, []probe{
			{"-tls1_2", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES128-SHA"},
			{"-tls1_2", "ECDHE-RSA-AES256-SHA", "ECDHE-RSA-AES256-SHA"},
		}},
	} {
		t.Run(ep.name, func(t *testing.T) {
			addr := ep.start(t)
			for _, p := range ep.probes {
				t.Run(p.version+" "+p.ciphers, func(t *testing.T) {
					// SECLEVEL=0: openssl's own policy must not be what
					// keeps a suite out; the refusal has to be ours.
					out := sClient(t, addr, append([]string{p.version, "-cipher", p.ciphers + ":@SECLEVEL=0"}, ep.args...)...)
					if got := openssltest.Cipher(out); got != p.want {
						t.Fatalf("negotiated %q, want %q:\n%s", got, p.want, out)
					}
				})
			}
		})
	}
}

func TestOpenSSLPeers(t *testing.T) {
	cert, key := opensslCert(t)
	legacy := []string{"-tls1", "-cipher", "DEFAULT:@SECLEVEL=0", "-cert", cert, "-key", key}

	t.Run("TLS 1.0 refused by default", func(t *testing.T) {
		ts := startServer(t, nil)
		out := sClient(t, ts.AgentAddr(), legacy...)
		if got := openssltest.Negotiated(out); got != "" {
			t.Fatalf("negotiated %s, want no session:\n%s", got, out)
		}
	})
	t.Run("TLS 1.0 accepted with --tls-min 1.0", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.TLSMin = tls.VersionTLS10 })
		out := sClient(t, ts.AgentAddr(), legacy...)
		if got := openssltest.Negotiated(out); got != "TLSv1" {
			t.Fatalf("negotiated %q, want TLSv1:\n%s", got, out)
		}
	})
	t.Run("TLS 1.2 accepted by default", func(t *testing.T) {
		ts := startServer(t, nil)
		out := sClient(t, ts.AgentAddr(), "-tls1_2", "-cert", cert, "-key", key)
		if got := openssltest.Negotiated(out); got != "TLSv1.2" {
			t.Fatalf("negotiated %q, want TLSv1.2:\n%s", got, out)
		}
	})
	t.Run("client without certificate refused", func(t *testing.T) {
		ts := startServer(t, nil)
		// TLS 1.2, so the refusal happens inside the handshake.
		out := sClient(t, ts.AgentAddr(), "-tls1_2")
		if got := openssltest.Negotiated(out); got != "" {
			t.Fatalf("negotiated %s without a client certificate, want refusal:\n%s", got, out)
		}
		// TLS 1.3: the server's alert arrives after the client's Finished.
		out = sClient(t, ts.AgentAddr(), "-tls1_3", "-ign_eof") // wait for the alert
		if !strings.Contains(out, "alert certificate required") && !strings.Contains(out, "alert bad certificate") {
			t.Fatalf("TLS 1.3 without a client certificate: want a certificate alert:\n%s", out)
		}
	})
}
