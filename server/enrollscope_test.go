package server

// Enrollment scope (issue 19, part 3): what --force may replace, and what
// an agent whose certificate was revoked is told and can do about it. The
// real agent package against the real coordinator, over TLS on loopback.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/enroll"
	"github.com/tendrildeploy/tendril/server/store"
)

const deletedMessage = "this agent was deleted on the coordinator: register again with --force"

// registerIn enrolls a real agent into env, from home, and returns the
// registration's error.
func registerIn(t *testing.T, ts *testServer, home, name, env string, force bool) error {
	t.Helper()
	_, err := agent.Register(context.Background(), agent.RegisterConfig{
		Home: home, Servers: []string{ts.AgentAddr()}, ServerThumbprint: ts.Thumbprint(),
		Token: ts.token(t, env), Name: name, Force: force, Version: "1.2.3", Logger: zaptest.NewLogger(t),
	})
	return err
}

// TestForceAcrossEnvironmentsRefused: a token for Dev with --force must
// not evict the Prod agent p1, whether it asks for p1's name from another
// machine or p1's own machine asks to move into Dev. The Prod agent keeps
// its session, its certificate and its environment, and the refusal says
// why and what to do.
func TestForceAcrossEnvironmentsRefused(t *testing.T) {
	ts := startServer(t, nil)
	prodHome := t.TempDir()
	if err := registerIn(t, ts, prodHome, "p1", "Prod", false); err != nil {
		t.Fatal(err)
	}
	p1 := startAgent(t, prodHome, nil)
	before := ts.waitConnected(t, "p1")
	// The coordinator lists the session before the agent reads Welcome.
	eventually(t, "p1 says it is connected", func() bool { return p1.Status().Connected })
	sessions := p1.Status().Sessions

	tests := []struct {
		name string
		home string // whose certificate registers
		as   string // the name asked for
		want string
	}{
		{"another machine takes the name", t.TempDir(), "p1",
			`an agent named "p1" is registered in environment "Prod", and this token enrols into "Dev": --force replaces only an agent of the token's environment`},
		{"p1 moves itself into Dev", prodHome, "p1-dev",
			`this agent's certificate is registered as "p1" in environment "Prod", and this token enrols into "Dev": --force replaces only an agent of the token's environment`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := registerIn(t, ts, tt.home, tt.as, "Dev", true)
			if !protocol.IsCode(err, protocol.CodeConflict) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("register --force with a Dev token: got %v, want a conflict saying %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "tendril-server agents delete p1") {
				t.Errorf("refusal %q: want it to name the command that removes p1", err)
			}
		})
	}

	after := ts.agentView(t, "p1")
	if after.Environment != "Prod" || after.Thumbprint != before.Thumbprint || after.ID != before.ID || !after.Connected {
		t.Fatalf("p1 after the refusals: got %+v, want it untouched (%+v) and connected", after, before)
	}
	if revoked, err := ts.store.IsRevoked(context.Background(), before.Thumbprint); err != nil || revoked {
		t.Fatalf("p1's certificate revoked: %v (%v), want it valid", revoked, err)
	}
	if st := p1.Status(); !st.Connected || st.Sessions != sessions {
		t.Fatalf("p1's agent: got connected=%v sessions=%d, want still its first session (%d)", st.Connected, st.Sessions, sessions)
	}
	if _, err := ts.Agent(context.Background(), "p1-dev"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("p1-dev: got %v, want no such agent", err)
	}
	// Within Prod, --force still replaces, as before.
	if err := registerIn(t, ts, t.TempDir(), "p1", "Prod", true); err != nil {
		t.Fatalf("register --force with a Prod token: %v", err)
	}
	if v := ts.agentView(t, "p1"); v.Thumbprint == before.Thumbprint {
		t.Fatal("a Prod token with --force did not replace p1")
	}
}

// TestReRegisterAfterDelete: a running agent deleted on the coordinator
// shows the coordinator's reason, register --force on its home makes a new
// key and certificate, and the running agent takes them and connects.
func TestReRegisterAfterDelete(t *testing.T) {
	ts := startServer(t, nil)
	home := registerAgent(t, ts, ts.AgentAddr(), "a1", nil)
	a := startAgent(t, home, nil)
	old := ts.waitConnected(t, "a1").Thumbprint

	if err := ts.DeleteAgent(context.Background(), "a1"); err != nil {
		t.Fatal(err)
	}
	// Told to go away in its session, it knocks again later and is
	// answered with why.
	eventually(t, "the agent to show why it is refused", func() bool {
		return strings.Contains(a.Status().LastError, deletedMessage)
	})

	if err := registerIn(t, ts, home, "a1", "Test", true); err != nil {
		t.Fatalf("register --force after delete: %v", err)
	}
	renewed, err := agent.Thumbprint(home)
	if err != nil {
		t.Fatal(err)
	}
	if renewed == old {
		t.Fatal("register --force kept the deleted certificate, want a new one")
	}
	v := ts.waitConnected(t, "a1")
	if v.Thumbprint != renewed {
		t.Fatalf("a1's thumbprint: got %s, want the new %s", v.Thumbprint, renewed)
	}
	eventually(t, "the running agent connected with its new certificate", func() bool {
		st := a.Status()
		return st.Connected && st.Thumbprint == renewed
	})
	if revoked, err := ts.store.IsRevoked(context.Background(), old); err != nil || !revoked {
		t.Fatalf("the deleted certificate: revoked %v (%v), want it to stay revoked", revoked, err)
	}
}

// TestRevokedCertificateToldWhy: a session made with a deleted agent's
// certificate gets through TLS and is answered, whatever it asks first,
// with CodeRevoked and the reason, which is what an agent of the previous
// release prints too; the refusal is logged once a minute per certificate,
// however often the agent knocks.
func TestRevokedCertificateToldWhy(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	ts := startServer(t, func(c *Config) { c.Logger = zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core)) })
	victim := deletedBeside(t, ts, "bystander", "victim")

	tests := []struct {
		name string
		call func(p *peer) error
		want string
	}{
		{"hello", func(p *peer) error { _, err := p.hello(); return err }, deletedMessage},
		{"register", func(p *peer) error { _, err := p.register(ts.token(t, "Test"), "victim", true); return err }, enroll.RevokedRegisterMessage},
		{"anything else", func(p *peer) error { return p.call(protocol.TypeHealth, map[string]any{}, protocol.TypeAck, nil) }, deletedMessage},
		{"hello again", func(p *peer) error { _, err := p.hello(); return err }, deletedMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := dialPeer(t, ts, victim.id)
			if err != nil {
				t.Fatalf("TLS with a revoked certificate: got %v, want the handshake to pass", err)
			}
			err = tt.call(p)
			var re *protocol.RemoteError
			if !errors.As(err, &re) || re.Code != protocol.CodeRevoked || re.Message != tt.want {
				t.Fatalf("got %v, want %s: %q", err, protocol.CodeRevoked, tt.want)
			}
			select {
			case <-p.sess.CloseChan():
			case <-time.After(10 * time.Second):
				t.Fatal("session still open after the refusal")
			}
		})
	}
	if _, err := ts.Agent(context.Background(), "victim"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("victim after a register with its revoked certificate: got %v, want it still deleted", err)
	}
	lines := logs.FilterMessage("refused a revoked agent certificate").FilterField(zap.String("thumbprint", victim.id.Thumbprint))
	if n := lines.Len(); n != 1 {
		t.Fatalf("refusals logged: got %d lines, want 1 for %d refusals within a minute", n, len(tests))
	}
	if got := lines.All()[0].ContextMap()["reason"]; got != store.RevokedDeleted {
		t.Errorf("logged reason: got %v, want %s", got, store.RevokedDeleted)
	}
	stillServing(t, ts, "bystander")
}
