package agent

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"slices"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/internal/openssltest"
)

// TestListeningAgentCipherSuites enumerates with openssl s_client, playing
// the pinned coordinator, the suites a listening agent's port negotiates:
// at TLS 1.2 no CBC-SHA suite, even when the agent allows TLS 1.0, where
// the ECDHE-ECDSA CBC suites stay for old coordinators' hosts (issue 19).
func TestListeningAgentCipherSuites(t *testing.T) {
	coord, err := certs.NewIdentity("coordinator")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := coord.Save(cert, key); err != nil {
		t.Fatal(err)
	}
	type probe struct {
		version, ciphers string
		want             string // the suite negotiated, "" for a refusal
	}
	common := []probe{
		{"-tls1_2", "ECDHE-ECDSA-AES128-SHA", ""},
		{"-tls1_2", "ECDHE-ECDSA-AES256-SHA", ""},
		{"-tls1_2", "ALL:!AESGCM:!CHACHA20:!AESCCM:!ARIAGCM", ""}, // every suite without an AEAD cipher
		{"-tls1_2", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"},
		{"-tls1_2", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-CHACHA20-POLY1305"},
		{"-tls1_2", "ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"},
	}
	for _, mode := range []struct {
		name   string
		min    uint16
		probes []probe
	}{
		{"default", 0, slices.Concat(common, []probe{
			{"-tls1", "ECDHE-ECDSA-AES128-SHA", ""},
		})},
		{"TLS 1.0 allowed", tls.VersionTLS10, slices.Concat(common, []probe{
			{"-tls1", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA"},
			{"-tls1_1", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES256-SHA"},
		})},
	} {
		t.Run(mode.name, func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "home")
			addr, err := newClosedAddr()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := RegisterListening(ListenConfig{Home: home, Listen: addr, ServerThumbprints: []string{coord.Thumbprint}}); err != nil {
				t.Fatal(err)
			}
			a, err := New(Config{Home: home, Version: "1.2.3", TLSMinVersion: mode.min, Logger: zaptest.NewLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			eventually(t, "the agent listening", func() bool { return a.Status().Listening != "" })
			for _, p := range mode.probes {
				t.Run(p.version+" "+p.ciphers, func(t *testing.T) {
					// SECLEVEL=0: openssl's own policy must not be what
					// keeps a suite out; the refusal has to be the agent's.
					out := openssltest.SClient(t, addr, p.version, "-cipher", p.ciphers+":@SECLEVEL=0", "-cert", cert, "-key", key)
					if got := openssltest.Cipher(out); got != p.want {
						t.Fatalf("negotiated %q, want %q:\n%s", got, p.want, out)
					}
				})
			}
		})
	}
}
