package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/tendrildeploy/tendril/protocol"
)

const deletedReason = "this agent was deleted on the coordinator: register again with --force"

// TestRunRevokedSaysWhyAndWaits checks an agent whose certificate the
// coordinator refuses in the session: it shows the coordinator's reason
// in its status and, once, in its log at error level, and then waits the
// longest backoff rather than knocking again and again.
func TestRunRevokedSaysWhyAndWaits(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	thumb, _ := Thumbprint(home)
	c.mu.Lock()
	c.revoked[thumb] = deletedReason
	c.mu.Unlock()
	a := startAgent(t, home, func(cfg *Config) { cfg.MaxBackoff = time.Hour })

	eventually(t, "the reason in the agent's status", func() bool {
		return strings.Contains(a.Status().LastError, deletedReason)
	})
	eventually(t, "the reason in the agent's log", func() bool {
		return a.logs.FilterMessage(deletedReason).FilterLevelExact(zapcore.ErrorLevel).Len() == 1
	})
	// Deleted means the longest wait (an hour here): no new attempt
	// comes, however long this test looks.
	before := c.count(func() int { return c.handshakes })
	time.Sleep(200 * time.Millisecond)
	if n := c.count(func() int { return c.handshakes }); n != before {
		t.Errorf("handshakes after the refusal: got %d more, want none until the backoff's maximum", n-before)
	}
	if st := a.Status(); st.Connected {
		t.Errorf("status: got connected, want refused")
	}
}

// TestReRegisterAfterRevocation is register --force on the home of an
// agent the coordinator deleted while the agent runs: register makes a
// new key and certificate (the revoked one is never accepted again), and
// the running agent takes the new registration and connects with it.
func TestReRegisterAfterRevocation(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	old, _ := Thumbprint(home)
	a := startAgent(t, home, func(cfg *Config) { cfg.MaxBackoff = time.Hour })
	a.waitConnected(t, 1)

	c.mu.Lock()
	c.revoked[old] = deletedReason
	c.mu.Unlock()
	c.dropAll()
	eventually(t, "the agent refused", func() bool { return strings.Contains(a.Status().LastError, deletedReason) })

	st, err := register(t, c, home, func(rc *RegisterConfig) { rc.Force = true })
	if err != nil {
		t.Fatalf("register --force: %v", err)
	}
	renewed, _ := Thumbprint(home)
	if renewed == old {
		t.Fatalf("thumbprint after register --force: got the revoked %s, want a new one", old)
	}
	c.mu.Lock()
	regs := c.registers
	c.mu.Unlock()
	// The attempt with the revoked certificate was refused before it
	// reached registration.
	if n := len(regs); n != 2 || !regs[1].Force {
		t.Errorf("registrations: got %+v, want the first and the forced one with a new certificate", regs)
	}
	if st.Name != "web-01" {
		t.Errorf("registered as %q, want web-01", st.Name)
	}
	eventually(t, "the running agent connected with the new certificate", func() bool {
		s := a.Status()
		return s.Connected && s.Thumbprint == renewed && s.Sessions == 2
	})
	if n := a.logs.FilterMessageSnippet("registered again").Len(); n != 1 {
		t.Errorf("re-registration logged %d times, want once", n)
	}
}

// TestRegisterRevokedNeedsNoForce checks that a revoked certificate left
// in a home whose registration was removed is replaced too: it can never
// be used again, whatever the flags.
func TestRegisterRevokedNeedsNoForce(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	old, _ := Thumbprint(home)
	c.mu.Lock()
	c.revoked[old] = "revoked"
	c.mu.Unlock()
	if err := os.Remove(filepath.Join(home, stateFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := register(t, c, home, nil); err != nil {
		t.Fatalf("register: %v", err)
	}
	if renewed, _ := Thumbprint(home); renewed == old {
		t.Fatal("register kept the revoked certificate")
	}
	// A coordinator that refuses the new certificate too is not asked
	// a third time.
	c.mu.Lock()
	c.registerErr = &protocol.RemoteError{Code: protocol.CodeRevoked, Message: "revoked"}
	c.mu.Unlock()
	_, err := register(t, c, home, func(rc *RegisterConfig) { rc.Force = true })
	if !protocol.IsCode(err, protocol.CodeRevoked) {
		t.Fatalf("register with every certificate refused: got %v, want the revocation", err)
	}
}
