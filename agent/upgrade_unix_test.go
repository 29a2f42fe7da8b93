//go:build !windows

package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/agent/upgrade"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

// agentScript stands in for an agent binary of version v: it answers
// `version --json` as the real one does.
func agentScript(v string) []byte {
	return []byte("#!/bin/sh\necho '{\"version\":\"" + v + "\"}'\n")
}

// standInExe writes the running agent's stand-in binary (version 1.2.3)
// to a folder of its own. Run as the watchdog (it becomes the previous
// binary), it appends its arguments to the returned marker file.
func standInExe(t *testing.T) (exe, marker string) {
	t.Helper()
	dir := t.TempDir()
	exe = filepath.Join(dir, "bin", "tendril-agent")
	marker = filepath.Join(dir, "watchdog-args")
	if err := os.MkdirAll(filepath.Dir(exe), 0o755); err != nil {
		t.Fatal(err)
	}
	body := "#!/bin/sh\necho \"$@\" >> " + marker + "\necho '{\"version\":\"1.2.3\"}'\n"
	if err := os.WriteFile(exe, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return exe, marker
}

// upgradeOffer is an AgentUpgrade for data as version v, signed by the
// coordinator.
func (c *testCoordinator) upgradeOffer(data []byte, v string) protocol.AgentUpgrade {
	tr := transferOf(data)
	pkg := protocol.AgentPackage{Version: v, OS: runtime.GOOS, Arch: runtime.GOARCH, SHA256: tr.SHA256, Size: tr.Size}
	return protocol.AgentUpgrade{RolloutID: "rollout-1", Package: pkg, Signature: c.signer.Sign(pkg.SigningBytes()), GraceSeconds: 30}
}

func (c *testCoordinator) pushUpgrade(s *coordSession, req protocol.AgentUpgrade, data []byte, cut int64) (protocol.UpgradeReady, error) {
	var ready protocol.UpgradeReady
	_, err := c.push(s, protocol.TypeAgentUpgrade, req, data, cut, protocol.TypeUpgradeReady, &ready)
	return ready, err
}

func loadUpgrade(t *testing.T, home string) (upgrade.State, bool) {
	t.Helper()
	st, ok, err := upgrade.Load(home)
	if err != nil {
		t.Fatal(err)
	}
	return st, ok
}

func TestUpgradeBadInputs(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	exe, _ := standInExe(t)
	orig, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, home, func(cfg *Config) { cfg.exe = exe })
	a.waitConnected(t, 1)
	s := c.live()
	other, err := certs.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	good := agentScript("2.0.0")
	random := []byte{0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7}

	tests := []struct {
		name string
		data []byte
		v    string
		mod  func(*protocol.AgentUpgrade)
		cut  int64
		want string // substring of the error; "" means errCut
		// failed is true when the failure is recorded for the next Hello.
		failed bool
	}{
		{name: "wrong signature", data: good, v: "2.0.0", mod: func(r *protocol.AgentUpgrade) { r.Signature = other.Sign(r.Package.SigningBytes()) },
			want: "package signature does not verify"},
		{name: "no signature", data: good, v: "2.0.0", mod: func(r *protocol.AgentUpgrade) { r.Signature = nil },
			want: "package signature does not verify"},
		{name: "wrong hash", data: good, v: "2.0.0", mod: func(r *protocol.AgentUpgrade) {
			r.Package.SHA256 = transferOf(random).SHA256
			r.Signature = c.signer.Sign(r.Package.SigningBytes())
		}, want: "SHA-256 is", failed: true},
		{name: "different os/arch", data: good, v: "2.0.0", mod: func(r *protocol.AgentUpgrade) {
			r.Package.OS, r.Package.Arch = "plan9", "mips"
			r.Signature = c.signer.Sign(r.Package.SigningBytes())
		}, want: "package is for plan9/mips, this agent is " + runtime.GOOS + "/" + runtime.GOARCH},
		{name: "invalid version", data: agentScript("v2"), v: "v2", want: `package version "v2" is not a valid semantic version`},
		{name: "lower version", data: agentScript("1.0.0"), v: "1.0.0", want: "downgrade from 1.2.3 to 1.0.0 needs --allow-downgrade"},
		{name: "same version", data: agentScript("1.2.3"), v: "1.2.3", want: "agent is already at version 1.2.3"},
		{name: "non-executable file", data: random, v: "2.0.0", want: "smoke test: new binary failed to run: exec format error", failed: true},
		{name: "smoke test prints another version", data: agentScript("9.9.9"), v: "2.0.0", want: "smoke test: new binary printed version 9.9.9, want 2.0.0", failed: true},
		{name: "truncated body", data: good, v: "2.0.0", cut: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.RemoveAll(upgrade.Dir(home))
			req := c.upgradeOffer(tt.data, tt.v)
			if tt.mod != nil {
				tt.mod(&req)
			}
			cut := int64(-1)
			if tt.want == "" {
				cut = tt.cut
			}
			_, err := c.pushUpgrade(s, req, tt.data, cut)
			switch {
			case tt.want == "":
				if !errors.Is(err, errCut) {
					t.Fatalf("got %v, want the cut transfer", err)
				}
				partial := upgrade.PartialPath(home, req.Package.SHA256)
				eventually(t, "the partial package to be kept", func() bool { return protocol.PartialSize(partial) == tt.cut })
			case err == nil || !strings.Contains(err.Error(), tt.want):
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			case !protocol.IsCode(err, protocol.CodeBadRequest):
				t.Errorf("got %v, want code %s", err, protocol.CodeBadRequest)
			}
			if got, _ := os.ReadFile(exe); string(got) != string(orig) {
				t.Errorf("agent binary: got %q, want it untouched", got)
			}
			st, ok := loadUpgrade(t, home)
			if ok && st.Phase == upgrade.PhaseSwapped {
				t.Errorf("upgrade state: got swapped, want no swap")
			}
			if tt.failed {
				if !ok || st.Phase != upgrade.PhaseFailed || !strings.Contains(st.Reason, tt.want) {
					t.Errorf("upgrade state: got %+v, want failed with the reason", st)
				}
				if _, err := os.Stat(filepath.Dir(upgrade.StagedPath(home, "2.0.0"))); err == nil {
					t.Error("the failed package is still staged")
				}
			} else if ok && tt.want != "" {
				t.Errorf("upgrade state: got %+v after a refusal, want none", st)
			}
			if !a.Status().Connected {
				t.Error("agent disconnected by a bad upgrade")
			}
		})
	}

	t.Run("failure reported on the next hello", func(t *testing.T) {
		os.RemoveAll(upgrade.Dir(home))
		req := c.upgradeOffer(agentScript("9.9.9"), "2.0.0")
		if _, err := c.pushUpgrade(s, req, agentScript("9.9.9"), -1); err == nil {
			t.Fatal("got success, want the smoke test to fail")
		}
		c.mu.Lock()
		c.ackUpgrades = true
		c.mu.Unlock()
		c.dropAll()
		ns := c.waitSession(func(ns *coordSession) bool { return ns != s })
		ns.mu.Lock()
		h := *ns.hello
		ns.mu.Unlock()
		if h.Upgrade == nil || h.Upgrade.Result != protocol.UpgradeFailed || h.Upgrade.RolloutID != "rollout-1" || !strings.Contains(h.Upgrade.Reason, "smoke test") {
			t.Fatalf("hello upgrade report: got %+v, want failed with the smoke test's reason", h.Upgrade)
		}
		eventually(t, "the report to be marked acknowledged", func() bool {
			st, _ := loadUpgrade(t, home)
			return st.Reported
		})
	})
}

func TestUpgradeWaitsForIdle(t *testing.T) {
	exe, _ := standInExe(t)
	ta := newTaskAgent(t, func(cfg *Config) { cfg.exe = exe })
	ta.start(t, "ticket-1", "await", "go")
	var h protocol.Health
	if err := ta.c.call(ta.s, protocol.TypeHealthRequest, protocol.HealthRequest{}, protocol.TypeHealth, &h); err != nil {
		t.Fatal(err)
	}
	if h.RunningTasks != 1 {
		t.Errorf("health running tasks: got %d, want 1", h.RunningTasks)
	}
	data := agentScript("2.0.0")
	_, err := ta.c.pushUpgrade(ta.s, ta.c.upgradeOffer(data, "2.0.0"), data, -1)
	if want := "agent is busy with 1 tasks; the upgrade waits for idle"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
	// Unavailable, not bad request: the coordinator retries once idle
	// rather than failing the agent.
	if !protocol.IsCode(err, protocol.CodeUnavailable) {
		t.Errorf("busy refusal: got %v, want code %s", err, protocol.CodeUnavailable)
	}
	if _, ok := loadUpgrade(t, ta.home); ok {
		t.Error("a refused upgrade left state behind")
	}
	ta.release(t, "ticket-1")
	ta.follow(t, "ticket-1", 0)
}

// agentRun is an agent whose Run may end on its own: done is closed
// when it returns err.
type agentRun struct {
	done chan struct{}
	err  error
}

// runAgent runs an agent until it returns or the test ends.
func runAgent(t *testing.T, cfg Config) *agentRun {
	t.Helper()
	cfg.Logger = zaptest.NewLogger(t)
	cfg.MinBackoff, cfg.MaxBackoff = 5*time.Millisecond, 50*time.Millisecond
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &agentRun{done: make(chan struct{})}
	go func() {
		r.err = a.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of cancel")
		}
	})
	return r
}

func TestUpgradeSwapAndRestart(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	exe, marker := standInExe(t)
	orig, _ := os.ReadFile(exe)
	args := []string{"/usr/bin/tendril-agent", "run", "--home", home}
	run := runAgent(t, Config{Home: home, Version: "1.2.3", exe: exe, args: args})
	s := c.live()
	data := agentScript("2.0.0")
	ready, err := c.pushUpgrade(s, c.upgradeOffer(data, "2.0.0"), data, -1)
	if err != nil {
		t.Fatal(err)
	}
	if ready.From != "1.2.3" || ready.To != "2.0.0" {
		t.Errorf("upgrade ready: got %+v, want 1.2.3 -> 2.0.0", ready)
	}
	select {
	case <-run.done:
		if !errors.Is(run.err, ErrRestart) {
			t.Fatalf("Run: got %v, want ErrRestart", run.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return ErrRestart after the upgrade")
	}
	if got, _ := os.ReadFile(exe); string(got) != string(data) {
		t.Errorf("agent binary: got %q, want the new one", got)
	}
	if got, _ := os.ReadFile(upgrade.PreviousPath(home)); string(got) != string(orig) {
		t.Errorf("previous binary: got %q, want the old one", got)
	}
	st, _ := loadUpgrade(t, home)
	if st.Phase != upgrade.PhaseSwapped || st.From != "1.2.3" || st.To != "2.0.0" || st.PID != os.Getpid() || st.Exe != exe ||
		st.Supervised || strings.Join(st.Args, " ") != strings.Join(args, " ") || time.Until(st.Deadline) <= 0 {
		t.Errorf("upgrade state: got %+v, want swapped with a future deadline", st)
	}
	eventually(t, "the watchdog to start from the previous binary", func() bool {
		b, _ := os.ReadFile(marker)
		return strings.TrimSpace(string(b)) == "upgrade-watchdog --home "+home
	})
	if _, err := os.Stat(upgrade.StagedPath(home, "2.0.0")); err != nil {
		t.Errorf("staged package: %v, want it kept until the commit", err)
	}
}

func TestUpgradeRecovery(t *testing.T) {
	tests := []struct {
		name       string
		phase      upgrade.Phase
		running    string
		wantPhase  upgrade.Phase
		wantResult string
		wantReason string
	}{
		{name: "new version commits", phase: upgrade.PhaseSwapped, running: "2.0.0", wantPhase: upgrade.PhaseCommitted, wantResult: protocol.UpgradeCommitted},
		{name: "old version running after swap", phase: upgrade.PhaseSwapped, running: "1.2.3", wantPhase: upgrade.PhaseRolledBack, wantResult: protocol.UpgradeRolledBack, wantReason: "the new version did not start"},
		{name: "stopped before swap", phase: upgrade.PhaseReceived, running: "1.2.3", wantPhase: upgrade.PhaseFailed, wantResult: protocol.UpgradeFailed, wantReason: "the agent stopped before the upgrade was applied"},
		{name: "rolled back by the watchdog", phase: upgrade.PhaseRolledBack, running: "1.2.3", wantPhase: upgrade.PhaseRolledBack, wantResult: protocol.UpgradeRolledBack, wantReason: "the new version exited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCoordinator(t)
			c.ackUpgrades = true
			home := registered(t, c)
			staged := upgrade.StagedPath(home, "2.0.0")
			os.MkdirAll(filepath.Dir(staged), 0o700)
			os.WriteFile(staged, agentScript("2.0.0"), 0o755)
			reason := ""
			if tt.phase == upgrade.PhaseRolledBack {
				reason = tt.wantReason
			}
			if err := upgrade.Save(home, upgrade.State{RolloutID: "rollout-1", From: "1.2.3", To: "2.0.0", Phase: tt.phase, Reason: reason,
				Deadline: time.Now().Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			a := startAgent(t, home, func(cfg *Config) { cfg.Version = tt.running })
			a.waitConnected(t, 1)
			s := c.live()
			s.mu.Lock()
			h := *s.hello
			s.mu.Unlock()
			want := protocol.UpgradeReport{RolloutID: "rollout-1", From: "1.2.3", To: "2.0.0", Result: tt.wantResult, Reason: tt.wantReason}
			if h.Upgrade == nil || *h.Upgrade != want {
				t.Errorf("hello upgrade report: got %+v, want %+v", h.Upgrade, want)
			}
			eventually(t, "the outcome to be acknowledged", func() bool {
				st, _ := loadUpgrade(t, home)
				return st.Reported
			})
			st, _ := loadUpgrade(t, home)
			if st.Phase != tt.wantPhase || st.Reason != tt.wantReason {
				t.Errorf("upgrade state: got %q %q, want %q %q", st.Phase, st.Reason, tt.wantPhase, tt.wantReason)
			}
			if _, err := os.Stat(staged); err == nil {
				t.Error("staged package kept after the acknowledged outcome, want it removed")
			}
			// Acknowledged: the next Hello says nothing.
			c.dropAll()
			ns := c.waitSession(func(ns *coordSession) bool { return ns != s })
			ns.mu.Lock()
			defer ns.mu.Unlock()
			if ns.hello.Upgrade != nil {
				t.Errorf("hello after the acknowledgement: got %+v, want no report", ns.hello.Upgrade)
			}
		})
	}
}

func TestHomeLock(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1)
	b, err := New(Config{Home: home, Version: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = b.Run(ctx)
	want := "another tendril-agent is running with home " + home + " (pid " + strconv.Itoa(os.Getpid()) + ")"
	if err == nil || err.Error() != want {
		t.Fatalf("second Run: got %v, want %q", err, want)
	}
	// The refused second agent must not have touched the first one's
	// unfinished work (an operator starting "run" while the service runs).
	live := filepath.Join(home, workDir, "live-task")
	if err := os.MkdirAll(live, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(live, "task.json"), []byte(`{"ticket": "live-task", "calamari": "1.0.0", "args": ["x"], "started_at": "2024-01-01T00:00:00Z", "pid": 1}`), 0o600)
	c2, err := New(Config{Home: home, Version: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Run(ctx); err == nil {
		t.Fatal("third Run: got nil, want the lock refusal")
	}
	if exists(filepath.Join(live, "result.json")) {
		t.Fatal("a refused second agent marked the running agent's task finished")
	}
}
