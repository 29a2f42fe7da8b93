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
	"time"

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

func TestParseVias(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"tinyproxy,nginx", []string{"tinyproxy", "nginx"}, false},
		{"nginx, tinyproxy", []string{"tinyproxy", "nginx"}, false},
		{"nginx,nginx", []string{"nginx"}, false},
		{"none", nil, false},
		{"", nil, false},
		{"squid", nil, true},
		{"tinyproxy,ngnix", nil, true},
	}
	for _, tt := range tests {
		got, err := parseVias(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("parseVias(%q): got %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// viaTestResults are results of a run with both proxies, of round
// numbers: the direct push takes 1 s for 100 MiB, the one through
// tinyproxy 2 s, the direct task 20 ms and the one through nginx 25 ms.
func viaTestResults() *transferResults {
	s, ms := time.Second, time.Millisecond
	r := &transferResults{
		bundleBytes: 100 << 20, taskCalamari: "1.2.3",
		direct: roadTimes{
			push: []time.Duration{1 * s, 1100 * ms, 900 * ms}, pushLanded: []time.Duration{500 * ms}, pushAPI: []time.Duration{1200 * ms},
			task: []time.Duration{20 * ms, 19 * ms, 22 * ms}, taskFirst: 30 * ms,
			taskToStart: []time.Duration{12 * ms}, taskRun: []time.Duration{4 * ms},
		},
		tls: []time.Duration{100 * ms}, scp: []time.Duration{2 * s}, ssh: []time.Duration{10 * ms}, sshShell: []time.Duration{100 * ms},
	}
	r.vias = []*viaResult{
		{via: "tinyproxy", version: "tinyproxy 1.11.1", sessions: 2, roadTimes: roadTimes{
			push: []time.Duration{2 * s}, pushLanded: []time.Duration{1 * s}, pushAPI: []time.Duration{2200 * ms},
			task: []time.Duration{21 * ms}, taskFirst: 31 * ms, taskToStart: []time.Duration{13 * ms}, taskRun: []time.Duration{4 * ms},
		}},
		{via: "nginx", version: "nginx version: nginx/1.22.1", sessions: 3, roadTimes: roadTimes{
			push: []time.Duration{4 * s}, pushAPI: []time.Duration{4200 * ms},
			task: []time.Duration{25 * ms, 26 * ms, 24 * ms}, taskFirst: 40 * ms,
		}},
	}
	return r
}

func TestRenderViaTable(t *testing.T) {
	if got := renderViaTable(&transferResults{}); got != "" {
		t.Errorf("without proxies: got %q, want nothing", got)
	}
	table := renderViaTable(viaTestResults())
	lines := strings.Split(strings.TrimSpace(table), "\n")
	header := "| figure | direct | through tinyproxy (HTTP CONNECT, Basic auth) | through nginx (WebSocket, wss) |"
	if !slices.Contains(lines, header) {
		t.Fatalf("no header %q in:\n%s", header, table)
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "|") && strings.Count(l, "|") != 5 {
			t.Errorf("row with %d cells, want 4: %s", strings.Count(l, "|")-1, l)
		}
	}
	for _, want := range []string{
		// Direct's median and spread, as in the main table.
		"| 1.00 s = 100 MiB/s (median of 3, 0.90 s–1.10 s) |",
		// Half direct's throughput through tinyproxy, a quarter through nginx.
		"2.00 s = 50 MiB/s = **50% of direct** (median of 1, 2.00 s–2.00 s)",
		"4.00 s = 25 MiB/s = **25% of direct**",
		// No transfer-alone time seen through nginx.
		"1.00 s = 100 MiB/s = **50% of direct** (median of 1, 1.00 s–1.00 s) | - |",
		"2.20 s, **+1.00 s** on direct",
		"21.0 ms, **+1.0 ms** on direct (median of 1, 21.0 ms–21.0 ms)",
		"25.0 ms, **+5.0 ms** on direct (median of 3, 24.0 ms–26.0 ms)",
		"(Calamari 1.2.3)",
		"| 12.0 ms / 4.0 ms | 13.0 ms / 4.0 ms | - |",
		"| 30.0 ms | 31.0 ms | 40.0 ms |",
		"tinyproxy 1.11.1; 2 CONNECT requests",
		"nginx/1.22.1; 3 WebSocket upgrades",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

// TestRenderTransferTableDirect: the main table keeps the direct agent's
// figures, and only those, whether or not proxies were measured.
func TestRenderTransferTableDirect(t *testing.T) {
	r := viaTestResults()
	table := renderTransferTable(&transferBench{}, r)
	for _, want := range []string{
		"| 1.00 s = 100 MiB/s = **10% of raw TLS** (median of 3, 0.90 s–1.10 s) |",
		"0.50 s = 200 MiB/s = **20% of raw TLS**",
		"| **20.0 ms** (median of 3, 19.0 ms–22.0 ms) |",
		"first of each, not counted: task 30.0 ms",
		"| 12.0 ms / 4.0 ms (medians) |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	r.vias = nil
	if again := renderTransferTable(&transferBench{}, r); again != table {
		t.Errorf("the main table changed with the proxies' results:\nwith:\n%s\nwithout:\n%s", table, again)
	}
	if strings.Contains(table, "tinyproxy") || strings.Contains(table, "nginx") {
		t.Errorf("the main table mentions a proxy:\n%s", table)
	}
}

func TestSigned(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{1500 * time.Microsecond, "+1.5 ms"}, {-400 * time.Microsecond, "-0.4 ms"},
		{0, "±0.0 ms"}, {-20 * time.Microsecond, "±0.0 ms"}, {40 * time.Microsecond, "±0.0 ms"},
	} {
		if got := signed(tt.d, ms); got != tt.want {
			t.Errorf("signed(%s): got %q, want %q", tt.d, got, tt.want)
		}
	}
}
