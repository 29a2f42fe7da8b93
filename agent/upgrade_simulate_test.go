//go:build !windows

package agent

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/agent/upgrade"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

// simulatedPackage is an agent package that is not a program: a
// simulated upgrade must accept it (no smoke test), where a real agent
// refuses it.
func simulatedPackage(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 64<<10)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSimulatedUpgradeSwapRefusesTampered(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	exe, _ := standInExe(t)
	orig, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, home, func(cfg *Config) { cfg.exe = exe; cfg.SimulateUpgradeSwap = true })
	a.waitConnected(t, 1)
	s := c.live()
	other, err := certs.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	data := simulatedPackage(t)
	tampered := append([]byte(nil), data...)
	tampered[len(tampered)/2] ^= 0xff

	tests := []struct {
		name string
		mod  func(*protocol.AgentUpgrade)
		send []byte // the bytes sent; the offer describes data
		want string
		// failed is true when the failure is recorded for the next Hello.
		failed bool
	}{
		{name: "signed by another key", mod: func(r *protocol.AgentUpgrade) { r.Signature = other.Sign(r.Package.SigningBytes()) },
			send: data, want: "package signature does not verify"},
		{name: "header changed after signing", mod: func(r *protocol.AgentUpgrade) { r.Package.SHA256 = transferOf(tampered).SHA256 },
			send: tampered, want: "package signature does not verify"},
		{name: "bytes changed in transit", send: tampered, want: "SHA-256 is", failed: true},
		{name: "other platform", mod: func(r *protocol.AgentUpgrade) {
			r.Package.OS, r.Package.Arch = "plan9", "mips"
			r.Signature = c.signer.Sign(r.Package.SigningBytes())
		}, send: data, want: "package is for plan9/mips, this agent is " + runtime.GOOS + "/" + runtime.GOARCH},
		{name: "same version", mod: func(r *protocol.AgentUpgrade) {
			r.Package.Version = "1.2.3"
			r.Signature = c.signer.Sign(r.Package.SigningBytes())
		}, send: data, want: "agent is already at version 1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.RemoveAll(upgrade.Dir(home))
			req := c.upgradeOffer(data, "2.0.0")
			if tt.mod != nil {
				tt.mod(&req)
			}
			_, err := c.pushUpgrade(s, req, tt.send, -1)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if !protocol.IsCode(err, protocol.CodeBadRequest) {
				t.Errorf("got %v, want code %s", err, protocol.CodeBadRequest)
			}
			st, ok := loadUpgrade(t, home)
			switch {
			case tt.failed && (!ok || st.Phase != upgrade.PhaseFailed || !strings.Contains(st.Reason, tt.want)):
				t.Errorf("upgrade state: got %+v (ok %v), want failed with the reason", st, ok)
			case !tt.failed && ok:
				t.Errorf("upgrade state: got %+v after a refusal, want none", st)
			}
			if got, _ := os.ReadFile(exe); string(got) != string(orig) {
				t.Errorf("agent binary: got %q, want it untouched", got)
			}
			if !a.Status().Connected {
				t.Error("agent disconnected by a refused upgrade")
			}
		})
	}
}

func TestSimulatedUpgradeSwapCommitsAfterRestart(t *testing.T) {
	c := newTestCoordinator(t)
	c.mu.Lock()
	c.ackUpgrades = true
	c.mu.Unlock()
	home := registered(t, c)
	exe, _ := standInExe(t)
	orig, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	run := runAgent(t, Config{Home: home, Version: "1.2.3", exe: exe, SimulateUpgradeSwap: true})
	s := c.live()
	data := simulatedPackage(t)
	req := c.upgradeOffer(data, "2.0.0")

	// A cut transfer keeps its bytes and the next offer resumes after
	// them, as for a real agent.
	const cut = 1000
	if _, err := c.pushUpgrade(s, req, data, cut); !errors.Is(err, errCut) {
		t.Fatalf("cut push: got %v, want the cut", err)
	}
	partial := upgrade.PartialPath(home, req.Package.SHA256)
	eventually(t, "the partial package to be kept", func() bool { return protocol.PartialSize(partial) == cut })
	var ready protocol.UpgradeReady
	pr, err := c.push(s, protocol.TypeAgentUpgrade, req, data, -1, protocol.TypeUpgradeReady, &ready)
	if err != nil {
		t.Fatalf("resumed push: %v", err)
	}
	if pr.Offset != cut {
		t.Errorf("resumed push: got offset %d, want %d", pr.Offset, cut)
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

	if got, _ := os.ReadFile(exe); string(got) != string(orig) {
		t.Errorf("agent binary: got %q, want it untouched", got)
	}
	if _, err := os.Stat(upgrade.PreviousPath(home)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("previous binary: got %v, want none kept (and so no watchdog)", err)
	}
	staged := upgrade.StagedPath(home, "2.0.0")
	if got, err := os.ReadFile(staged); err != nil || string(got) != string(data) {
		t.Errorf("staged package: got %d bytes (%v), want the %d received", len(got), err, len(data))
	}
	st, _ := loadUpgrade(t, home)
	if st.Phase != upgrade.PhaseSwapped || !st.Simulated || st.From != "1.2.3" || st.To != "2.0.0" || st.RolloutID != "rollout-1" ||
		st.Exe != "" || st.Previous != "" || st.GraceSeconds != 30 || time.Until(st.Deadline) <= 0 {
		t.Errorf("upgrade state: got %+v, want a simulated swap 1.2.3 -> 2.0.0 with a future deadline", st)
	}

	// The restart: a new Agent at the version the state names.
	a := startAgent(t, home, func(cfg *Config) { cfg.Version = st.To; cfg.exe = exe; cfg.SimulateUpgradeSwap = true })
	a.waitConnected(t, 1)
	ns := c.waitSession(func(ns *coordSession) bool { return ns != s })
	ns.mu.Lock()
	h := *ns.hello
	ns.mu.Unlock()
	want := protocol.UpgradeReport{RolloutID: "rollout-1", From: "1.2.3", To: "2.0.0", Result: protocol.UpgradeCommitted}
	if h.Version != "2.0.0" || h.Upgrade == nil || *h.Upgrade != want {
		t.Errorf("hello after the restart: got version %q report %+v, want 2.0.0 and %+v", h.Version, h.Upgrade, want)
	}
	eventually(t, "the upgrade to be committed and acknowledged", func() bool {
		st, _ := loadUpgrade(t, home)
		return st.Phase == upgrade.PhaseCommitted && st.Reported
	})
	if _, err := os.Stat(filepath.Dir(staged)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staged package after the commit: got %v, want it removed", err)
	}
}
