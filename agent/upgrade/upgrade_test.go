//go:build !windows

package upgrade

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// script writes an executable shell script to path.
func script(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStateRoundTrip(t *testing.T) {
	home := t.TempDir()
	if _, ok, err := Load(home); ok || err != nil {
		t.Fatalf("Load of an empty home: got ok=%v err=%v, want false, nil", ok, err)
	}
	want := State{RolloutID: "r1", From: "1.0.0", To: "2.0.0", Phase: PhaseSwapped, Exe: "/opt/tendril-agent",
		Previous: PreviousPath(home), Deadline: time.Now().Add(time.Minute).UTC().Truncate(time.Second),
		GraceSeconds: 60, PID: 42, Supervised: true, Args: []string{"tendril-agent", "run", "--home", home}}
	if err := Save(home, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := Load(home)
	if err != nil || !ok {
		t.Fatalf("Load: got ok=%v err=%v, want true, nil", ok, err)
	}
	if got.Phase != want.Phase || !got.Deadline.Equal(want.Deadline) || got.PID != want.PID || !got.Supervised || strings.Join(got.Args, " ") != strings.Join(want.Args, " ") {
		t.Errorf("Load: got %+v, want %+v", got, want)
	}
	if fi, err := os.Stat(StatePath(home)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: got %v %v, want mode 0600", fi.Mode().Perm(), err)
	}
	os.WriteFile(StatePath(home), []byte("{"), 0o600)
	if _, _, err := Load(home); err == nil {
		t.Error("Load of a corrupt state: got no error")
	}
}

func TestSmokeTest(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, body string
		raw        []byte // instead of a script
		want       string // error substring, "" for success
	}{
		{name: "good", body: `[ "$1 $2" = "version --json" ] || exit 3; echo '{"version":"2.0.0"}'`},
		{name: "empty environment", body: `[ -z "$HOME$TENDRIL_AGENT_HOME" ] || exit 4; echo '{"version":"2.0.0"}'`},
		{name: "other version", body: `echo '{"version":"9.9.9"}'`, want: "smoke test: new binary printed version 9.9.9, want 2.0.0"},
		{name: "not json", body: `echo hello`, want: `smoke test: new binary printed "hello", want {"version": "2.0.0"}`},
		{name: "exits", body: `echo broken >&2; exit 2`, want: "smoke test: new binary exited with exit status 2: broken"},
		{name: "random bytes", raw: []byte{0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3}, want: "smoke test: new binary failed to run: exec format error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if tt.raw != nil {
				os.WriteFile(path, tt.raw, 0o755)
			} else {
				script(t, path, tt.body)
			}
			t.Setenv("TENDRIL_AGENT_HOME", "/should/not/leak")
			err := SmokeTest(context.Background(), path, "2.0.0")
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want success", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			case tt.want != "" && !IsRefused(err):
				t.Fatalf("got %T, want a RefusedError", err)
			}
		})
	}
}

func TestSwapKeepsPrevious(t *testing.T) {
	home := t.TempDir()
	exe := filepath.Join(t.TempDir(), "bin", "tendril-agent")
	script(t, exe, "echo old")
	staged := StagedPath(home, "2.0.0")
	script(t, staged, "echo new")
	st, err := swap(home, State{From: "1.0.0", To: "2.0.0", Exe: exe, Previous: PreviousPath(home)}, staged, 5*time.Second, noWatchdog)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, exe); !strings.Contains(got, "echo new") {
		t.Errorf("exe after swap: got %q, want the new binary", got)
	}
	if got := read(t, PreviousPath(home)); !strings.Contains(got, "echo old") {
		t.Errorf("previous after swap: got %q, want the old binary", got)
	}
	saved, _, _ := Load(home)
	if saved.Phase != PhaseSwapped || st.GraceSeconds != 5 || saved.Deadline.IsZero() {
		t.Errorf("state after swap: got %+v, want swapped with a deadline", saved)
	}
	if _, err := os.Stat(exe + ".new"); err == nil {
		t.Errorf("%s.new left behind", exe)
	}
}

func TestSwapReadOnlyFolder(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root can write anywhere")
	}
	home := t.TempDir()
	bin := filepath.Join(t.TempDir(), "bin")
	exe := filepath.Join(bin, "tendril-agent")
	script(t, exe, "echo old")
	os.Chmod(bin, 0o555)
	t.Cleanup(func() { os.Chmod(bin, 0o755) })
	staged := StagedPath(home, "2.0.0")
	script(t, staged, "echo new")
	_, err := swap(home, State{From: "1.0.0", To: "2.0.0", Exe: exe, Previous: PreviousPath(home)}, staged, time.Second, noWatchdog)
	want := "cannot replace " + exe + ": permission denied; run the agent as a user that owns its binary"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if got := read(t, exe); !strings.Contains(got, "echo old") {
		t.Errorf("exe: got %q, want it untouched", got)
	}
	if st, ok, _ := Load(home); ok && st.Phase == PhaseSwapped {
		t.Errorf("state: got phase swapped after a failed swap")
	}
}

func TestWatchRollback(t *testing.T) {
	tests := []struct {
		name       string
		supervised bool
		alive      bool // the agent process still runs at the deadline
		reused     bool // the PID runs another program than the agent's
		wantReason string
	}{
		{name: "unsupervised, exited", wantReason: "the new version exited"},
		{name: "unsupervised, hung", alive: true, wantReason: "the new version did not connect within 5s"},
		{name: "supervised, hung", supervised: true, alive: true, wantReason: "the new version did not connect within 5s"},
		// The agent died and its PID now belongs to another program,
		// which must survive the rollback.
		{name: "unsupervised, pid reused", alive: true, reused: true, wantReason: "the new version exited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			exe := filepath.Join(t.TempDir(), "tendril-agent")
			marker := filepath.Join(t.TempDir(), "restarted")
			// A hung new version is the agent's own binary that never
			// connects: a copy of sleep at the agent's path.
			sleepBin, err := exec.LookPath("sleep")
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(sleepBin)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(exe, b, 0o755); err != nil {
				t.Fatal(err)
			}
			// The previous version proves it was started by writing its
			// arguments to the marker.
			script(t, PreviousPath(home), `echo "$@" > `+marker)
			pid := 0
			if tt.alive {
				prog := exe
				if tt.reused {
					prog = sleepBin
				}
				cmd := exec.Command(prog, "1000")
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
				pid = cmd.Process.Pid
			} else {
				cmd := exec.Command("true")
				if err := cmd.Run(); err != nil {
					t.Fatal(err)
				}
				pid = cmd.Process.Pid
			}
			st := State{RolloutID: "r1", From: "1.0.0", To: "2.0.0", Phase: PhaseSwapped, Exe: exe, Previous: PreviousPath(home),
				Deadline: time.Now().Add(-time.Second), GraceSeconds: 5, PID: pid, Supervised: tt.supervised,
				Args: []string{exe, "run", "--home", home}}
			if err := Save(home, st); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := Watch(ctx, home, zaptest.NewLogger(t)); err != nil {
				t.Fatalf("Watch: %v", err)
			}
			if got, want := read(t, exe), read(t, PreviousPath(home)); got != want {
				t.Errorf("exe after rollback: got %q, want the previous binary %q", got, want)
			}
			got, _, _ := Load(home)
			if got.Phase != PhaseRolledBack || got.Reason != tt.wantReason || got.Reported {
				t.Errorf("state: got phase %q reason %q reported %v, want rolled_back, %q, false", got.Phase, got.Reason, got.Reported, tt.wantReason)
			}
			switch {
			case tt.reused && !processAlive(pid):
				t.Errorf("pid %d, running another program, was killed", pid)
			case tt.alive && !tt.reused && processAlive(pid):
				t.Errorf("pid %d still alive after the rollback", pid)
			}
			if tt.supervised {
				if _, err := os.Stat(marker); err == nil {
					t.Error("supervised: the watchdog started the agent itself, want the service manager to")
				}
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				if b, err := os.ReadFile(marker); err == nil && len(b) > 0 {
					if got, want := strings.TrimSpace(string(b)), "run --home "+home; got != want {
						t.Errorf("restarted agent's arguments: got %q, want %q", got, want)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("timed out waiting for the restored agent to start")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if log := read(t, filepath.Join(home, "Logs", "agent.log")); log != "" {
				t.Logf("agent.log: %s", log)
			}
		})
	}
}

func TestWatchCommitted(t *testing.T) {
	home := t.TempDir()
	exe := filepath.Join(t.TempDir(), "tendril-agent")
	script(t, exe, "echo new")
	st := State{From: "1.0.0", To: "2.0.0", Phase: PhaseSwapped, Exe: exe, Previous: PreviousPath(home),
		Deadline: time.Now().Add(time.Hour), PID: os.Getpid()}
	if err := Save(home, st); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, home, zaptest.NewLogger(t)) }()
	st.Phase = PhaseCommitted
	if err := Save(home, st); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Watch: got %v, want nil after the commit", err)
	}
	if got := read(t, exe); !strings.Contains(got, "echo new") {
		t.Errorf("exe: got %q, want the new binary kept", got)
	}
}

func TestCheckInProgress(t *testing.T) {
	home := t.TempDir()
	if err := Save(home, State{From: "1.0.0", To: "2.0.0", Phase: PhaseSwapped}); err != nil {
		t.Fatal(err)
	}
	req := protocol.AgentUpgrade{Package: protocol.AgentPackage{Version: "3.0.0", OS: runtime.GOOS, Arch: runtime.GOARCH,
		SHA256: strings.Repeat("a", 64), Size: 10}}
	err := Check(Params{Home: home, Running: "2.0.0"}, req, 0)
	if want := "an upgrade from 1.0.0 to 2.0.0 is already in progress"; err == nil || err.Error() != want || !IsRefused(err) {
		t.Fatalf("got %v, want %q", err, want)
	}
}

func noWatchdog(string) error { return nil }

func TestRunsProgram(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	self, _ = filepath.EvalSymlinks(self)
	if !runsProgram(os.Getpid(), self) {
		t.Errorf("runsProgram(self, %s): got false, want true", self)
	}
	if runsProgram(os.Getpid(), "/usr/bin/some-other-program") {
		t.Error("runsProgram(self, another program): got true, want false: a reused PID would be killed")
	}
}
