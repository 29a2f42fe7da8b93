package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tendrildeploy/tendril/bundle"
)

func TestWriteSSHDConfig(t *testing.T) {
	dir := t.TempDir()
	good := sshdConfig{Port: 2222, HostKey: filepath.Join(dir, "host"), AuthorizedKeys: filepath.Join(dir, "keys"), PidFile: filepath.Join(dir, "pid")}
	tests := []struct {
		name    string
		mutate  func(*sshdConfig)
		wantErr string
	}{
		{"valid", func(*sshdConfig) {}, ""},
		{"relative host key", func(c *sshdConfig) { c.HostKey = "host" }, "not an absolute path"},
		{"space in a path", func(c *sshdConfig) { c.AuthorizedKeys = "/tmp/a b" }, "characters"},
		{"token in a path", func(c *sshdConfig) { c.AuthorizedKeys = "/tmp/%u" }, "characters"},
		{"port zero", func(c *sshdConfig) { c.Port = 0 }, "out of range"},
		{"port too big", func(c *sshdConfig) { c.Port = 70000 }, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			var buf bytes.Buffer
			err := writeSSHDConfig(&buf, c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			lines := strings.Split(buf.String(), "\n")
			for _, want := range []string{
				"Port 2222", "ListenAddress 127.0.0.1", "HostKey " + c.HostKey, "AuthorizedKeysFile " + c.AuthorizedKeys,
				"PidFile " + c.PidFile, "StrictModes no", "PermitRootLogin prohibit-password", "UsePAM no",
				"PasswordAuthentication no", "PermitUserEnvironment SHLVL", "Subsystem sftp internal-sftp",
			} {
				if !slices.Contains(lines, want) {
					t.Errorf("config lacks the line %q; got:\n%s", want, buf.String())
				}
			}
		})
	}
}

// TestSSHDAcceptsConfig has sshd itself check the configuration written
// (sshd -t), where sshd is installed.
func TestSSHDAcceptsConfig(t *testing.T) {
	if _, err := os.Stat(sshdPath); err != nil {
		t.Skipf("no %s (scripts/bench-deps.sh installs it)", sshdPath)
	}
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "host_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	var buf bytes.Buffer
	if err := writeSSHDConfig(&buf, sshdConfig{Port: 2222, HostKey: hostKey, AuthorizedKeys: filepath.Join(dir, "keys"), PidFile: filepath.Join(dir, "pid")}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfg, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Skipf("cannot make sshd's privilege separation folder: %v", err)
	}
	if out, err := exec.Command(sshdPath, "-t", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("sshd -t refused the config: %v: %s\n%s", err, out, buf.String())
	}
}

func TestMeasureRawTLS(t *testing.T) {
	defer goleak.VerifyNone(t)
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 31)
	}
	r, err := measureRawTLS(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	if r.took <= 0 {
		t.Errorf("got time %s, want above 0", r.took)
	}
	if r.version != tls.VersionTLS13 {
		t.Errorf("got TLS version %#x, want TLS 1.3 (%#x)", r.version, tls.VersionTLS13)
	}
}

func TestMeasureRawTLSCancelled(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := measureRawTLS(ctx, make([]byte, 1<<20)); err == nil {
		t.Fatal("got no error with a cancelled context, want one")
	}
}

func TestParseSizes(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"100,500", []int{100, 500}, false},
		{" 500 ", []int{500}, false},
		{"0", nil, false},
		{"100,x", nil, true},
		{"-1", nil, true},
	}
	for _, tt := range tests {
		got, err := parseSizes(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("parseSizes(%q): got %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestPackBundle checks that the bandwidth bundle is a valid Calamari
// bundle and that its random payload does not compress: the figure is
// honest only if the bytes on the wire are as many as the payload.
func TestPackBundle(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	const payload = 1 << 20
	if err := writePayload(src, payload); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "b.tar.gz")
	size, err := packBundle(context.Background(), src, "1000.0.1", file)
	if err != nil {
		t.Fatal(err)
	}
	if size < payload {
		t.Errorf("got a %d-byte bundle, want at least the %d-byte payload", size, payload)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, _, err := bundle.Check(context.Background(), f, bundle.Limits{})
	if err != nil {
		t.Fatalf("bundle.Check: %v", err)
	}
	if m.Version != "1000.0.1" {
		t.Errorf("got version %q, want 1000.0.1", m.Version)
	}
	if _, err := m.Entrypoint(runtime.GOOS, runtime.GOARCH); err != nil {
		t.Errorf("no entry point for this platform: %v", err)
	}
}

func TestProcStatusBytes(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	pid := os.Getpid()
	if err := resetPeakRSS(pid); err != nil {
		t.Fatalf("reset peak RSS: %v", err)
	}
	hwm, err := procStatusBytes(pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	if hwm <= 0 {
		t.Errorf("got VmHWM %d, want above 0", hwm)
	}
	if _, err := procStatusBytes(pid, "NoSuchField"); err == nil {
		t.Error("got no error for a missing field, want one")
	}
}
