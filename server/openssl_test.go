package server

import (
	"context"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sClient runs the real openssl s_client against the coordinator's agent
// port: a TLS peer that shares no code with Go's crypto/tls. It returns
// the combined output.
func sClient(t *testing.T, addr string, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is not installed; make test installs it")
		}
		t.Skip("openssl not installed (make test installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"s_client", "-connect", addr, "-servername", "tendril"}, args...)...)
	cmd.Stdin = strings.NewReader("") // end the session right after the handshake
	out, _ := cmd.CombinedOutput()    // s_client's exit code varies by version; the transcript is what counts
	return string(out)
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

// negotiated returns the protocol of the session s_client established
// ("TLSv1", "TLSv1.2", ...), or "" if there was none. s_client prints its
// session summary even when the server then refused it with an alert, so
// an alert anywhere means no session.
func negotiated(out string) string {
	if strings.Contains(out, " alert ") || strings.Contains(out, "Cipher is (NONE)") {
		return ""
	}
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Protocol  : "); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}

func TestOpenSSLPeers(t *testing.T) {
	cert, key := opensslCert(t)
	legacy := []string{"-tls1", "-cipher", "DEFAULT:@SECLEVEL=0", "-cert", cert, "-key", key}

	t.Run("TLS 1.0 refused by default", func(t *testing.T) {
		ts := startServer(t, nil)
		out := sClient(t, ts.AgentAddr(), legacy...)
		if got := negotiated(out); got != "" {
			t.Fatalf("negotiated %s, want no session:\n%s", got, out)
		}
	})
	t.Run("TLS 1.0 accepted with --tls-min 1.0", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.TLSMin = tls.VersionTLS10 })
		out := sClient(t, ts.AgentAddr(), legacy...)
		if got := negotiated(out); got != "TLSv1" {
			t.Fatalf("negotiated %q, want TLSv1:\n%s", got, out)
		}
	})
	t.Run("TLS 1.2 accepted by default", func(t *testing.T) {
		ts := startServer(t, nil)
		out := sClient(t, ts.AgentAddr(), "-tls1_2", "-cert", cert, "-key", key)
		if got := negotiated(out); got != "TLSv1.2" {
			t.Fatalf("negotiated %q, want TLSv1.2:\n%s", got, out)
		}
	})
	t.Run("client without certificate refused", func(t *testing.T) {
		ts := startServer(t, nil)
		// TLS 1.2, so the refusal happens inside the handshake.
		out := sClient(t, ts.AgentAddr(), "-tls1_2")
		if got := negotiated(out); got != "" {
			t.Fatalf("negotiated %s without a client certificate, want refusal:\n%s", got, out)
		}
		// TLS 1.3: the server's alert arrives after the client's Finished.
		out = sClient(t, ts.AgentAddr(), "-tls1_3", "-ign_eof") // wait for the alert
		if !strings.Contains(out, "alert certificate required") && !strings.Contains(out, "alert bad certificate") {
			t.Fatalf("TLS 1.3 without a client certificate: want a certificate alert:\n%s", out)
		}
	})
}
