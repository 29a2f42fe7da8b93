// Package openssltest runs the real openssl s_client against a TLS
// endpoint, for tests: a peer that shares no code with Go's crypto/tls.
// Imported by tests only.
package openssltest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// SClient runs openssl s_client -connect addr with args and returns its
// combined output. Without openssl the test fails in CI (make test
// installs it) and is skipped elsewhere.
func SClient(t testing.TB, addr string, args ...string) string {
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
	cmd := exec.CommandContext(ctx, bin, append([]string{"s_client", "-connect", addr}, args...)...)
	cmd.Stdin = strings.NewReader("") // end the session right after the handshake
	out, _ := cmd.CombinedOutput()    // s_client's exit code varies by version; the transcript is what counts
	return string(out)
}

// Negotiated returns the protocol of the session s_client established
// ("TLSv1", "TLSv1.2", ...), or "" if there was none. s_client prints its
// session summary even when the server then refused it with an alert, so
// an alert anywhere means no session.
func Negotiated(out string) string {
	if strings.Contains(out, " alert ") || strings.Contains(out, "Cipher is (NONE)") {
		return ""
	}
	return field(out, "Protocol  : ")
}

// Cipher returns the suite of the session s_client established, in
// OpenSSL's names, or "" if there was none.
func Cipher(out string) string {
	if Negotiated(out) == "" {
		return ""
	}
	return field(out, "Cipher    : ")
}

// field is the value of the first summary line starting with prefix.
func field(out, prefix string) string {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}
