package service

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDefaultName(t *testing.T) {
	tests := []struct {
		home, wantPrefix string
	}{
		{"/var/lib/tendril-agent", "tendril-agent-tendril-agent-"},
		{"/srv/Web Agent #2", "tendril-agent-webagent2-"},
		{"/opt/a_b.c", "tendril-agent-a-b-c-"},
		{"/", "tendril-agent-"},
		{"/x/" + strings.Repeat("long", 20), "tendril-agent-" + strings.Repeat("long", 6) + "-"},
	}
	for _, tt := range tests {
		t.Run(tt.home, func(t *testing.T) {
			got := DefaultName(tt.home)
			if !strings.HasPrefix(got, tt.wantPrefix) || len(got) != len(tt.wantPrefix)+8 {
				t.Fatalf("DefaultName(%q) = %q, want %q + 8 hex digits", tt.home, got, tt.wantPrefix)
			}
			if err := ValidateName(got); err != nil {
				t.Fatalf("DefaultName(%q) = %q is not a valid name: %v", tt.home, got, err)
			}
			if again := DefaultName(tt.home + "/"); again != got {
				t.Fatalf("DefaultName is not stable: %q then %q", got, again)
			}
		})
	}
	if DefaultName("/a/home") == DefaultName("/b/home") {
		t.Fatal("two homes with the same base name got the same service name")
	}
}

func TestValidateName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"tendril-agent", true}, {"agent_1.x@y", true}, {"", false}, {"-x", false},
		{"../etc/passwd", false}, {"a b", false}, {"a'b", false}, {strings.Repeat("a", 81), false},
	} {
		if err := ValidateName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestStatusWordsAndExitCodes(t *testing.T) {
	for _, tt := range []struct {
		s    Status
		word string
		code int
	}{
		{StatusRunning, "running", 0}, {StatusStopped, "stopped", 3}, {StatusNotInstalled, "not installed", 4},
	} {
		if tt.s.String() != tt.word || tt.s.ExitCode() != tt.code {
			t.Errorf("status %d: got %q exit %d, want %q exit %d", tt.s, tt.s.String(), tt.s.ExitCode(), tt.word, tt.code)
		}
	}
}

// testConfig is a service for a home with awkward characters, running a
// real executable (systemd-analyze checks it exists).
func testConfig(t *testing.T) Config {
	t.Helper()
	home := filepath.Join(t.TempDir(), "my home's 100%")
	os.MkdirAll(home, 0o700)
	exe := filepath.Join(t.TempDir(), "tendril-agent")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	return Config{Home: home, Name: "tendril-agent-test", Executable: exe, StopTimeout: 40 * time.Second}
}

func TestSystemdUnitVerifies(t *testing.T) {
	c := testConfig(t)
	unit, err := SystemdUnit(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"After=network-online.target", "Wants=network-online.target", "Restart=on-failure",
		"KillMode=process", "TimeoutStopSec=45", "Environment=TENDRIL_AGENT_SERVICE=tendril-agent-test",
		` --service --stop-timeout 40s`, "WantedBy=multi-user.target", "100%%"} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze is missing in CI: scripts/deps.sh installs Debian's systemd package")
		}
		t.Skip("systemd-analyze is missing (Debian package systemd; make test installs it): the unit is not verified")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, c.Name+".service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	// verify also reports on other units it loads (network-online.target's
	// dependencies on a machine without systemd running); only lines
	// about this unit count.
	var ours []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, c.Name) {
			ours = append(ours, l)
		}
	}
	t.Logf("systemd-analyze verify: %v\n%s", err, out)
	if len(ours) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s\nunit:\n%s", err, strings.Join(ours, "\n"), unit)
	}
	// A broken unit must fail, or the check above proves nothing.
	bad := filepath.Join(dir, "broken.service")
	os.WriteFile(bad, []byte(strings.Replace(unit, "ExecStart=", "ExecStart=relative/path ", 1)), 0o644)
	if out, err := exec.Command(analyze, "verify", bad).CombinedOutput(); err == nil && !strings.Contains(string(out), "broken") {
		t.Fatalf("systemd-analyze verify accepted a broken unit:\n%s", out)
	}
}

func TestSysVScript(t *testing.T) {
	c := testConfig(t)
	script, err := SysVScript(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"### BEGIN INIT INFO", "# Provides:          tendril-agent-test", "Default-Start:     2 3 4 5",
		"pid_file='/var/run/tendril-agent-test.pid'", "stop_seconds=45", `home='` + strings.ReplaceAll(c.Home, "'", `'\''`) + `'`,
		"TENDRIL_AGENT_SERVICE='tendril-agent-test'", "exit 3", " 'run' '--home' "} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q:\n%s", want, script)
		}
	}
	path := filepath.Join(t.TempDir(), "init")
	os.WriteFile(path, []byte(script), 0o755)
	if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
	// status with no pid file: LSB "not running", 3.
	err = exec.Command("sh", path, "status").Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("status of a stopped service: got %v, want exit 3", err)
	}
}

func TestRenderRefusesTemplateBraces(t *testing.T) {
	c := testConfig(t)
	c.Home = filepath.Join(t.TempDir(), "{{x}}")
	if _, err := SysVScript(c); err == nil {
		t.Fatal("a home with {{ went through; kardianos would expand it")
	}
}

func TestConfigValidate(t *testing.T) {
	c := testConfig(t)
	c.Name = ""
	if err := c.validate(); err != nil || c.Name != DefaultName(c.Home) {
		t.Fatalf("validate: %v, name %q; want the default name", err, c.Name)
	}
	for _, bad := range []Config{{}, {Home: "/x", Name: "a b"}, {Home: "/x", StopTimeout: -1}} {
		if err := bad.validate(); err == nil {
			t.Errorf("validate(%+v): got no error", bad)
		}
	}
}

func TestRunProgramLifecycle(t *testing.T) {
	tests := []struct {
		name    string
		program func(ctx context.Context) error
		cancel  bool // cancel Run's context (a stop request)
		want    string
	}{
		{"ends on its own", func(context.Context) error { return errors.New("restart me") }, false, "restart me"},
		{"stops when asked", func(ctx context.Context) error { <-ctx.Done(); return nil }, true, ""},
		{"stop times out", func(ctx context.Context) error { <-ctx.Done(); time.Sleep(time.Second); return nil }, true, "did not stop within"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				time.AfterFunc(100*time.Millisecond, cancel)
			}
			err := Run(ctx, RunConfig{Name: "tendril-agent-test", StopTimeout: 200 * time.Millisecond}, tt.program)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			time.Sleep(time.Second) // the timed-out program's goroutine ends
		})
	}
}
