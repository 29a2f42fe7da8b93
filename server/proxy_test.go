package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/proxytest"
	"github.com/tendrildeploy/tendril/proxy"
)

// TestAgentThroughAuthenticatingProxy: an agent whose way out is
// tinyproxy asking for a password enrolls, connects, gets Calamari and
// runs a task, every session tunnelled through the proxy; the proxy's
// password is kept 0600 in the agent's home and never logged.
func TestAgentThroughAuthenticatingProxy(t *testing.T) {
	ts := startServer(t, nil)
	p := proxytest.Tinyproxy(t, proxytest.Options{User: "alice", Password: "s3cret"})
	via := "http://alice:s3cret@" + p.Addr
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	home := registerAgent(t, ts, ts.AgentAddr(), "behind-proxy", func(rc *agent.RegisterConfig) { rc.Proxy, rc.Logger = via, log })
	if n := p.Tunnels(ts.AgentAddr()); n != 1 {
		t.Fatalf("registration: got %d tunnels through the proxy, want 1", n)
	}
	st, err := agent.LoadState(home)
	if err != nil || st.Proxy != via {
		t.Fatalf("registration kept proxy %q (%v), want %q", st.Proxy, err, via)
	}
	if fi, err := os.Stat(filepath.Join(home, "agent.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent.json holding the proxy password: %v, %v; want mode 0600", fi, err)
	}
	a := startAgent(t, home, func(c *agent.Config) { c.Logger = log })
	ts.waitConnected(t, "behind-proxy")
	if got := a.Proxy(); got != "http://xxxxx@"+p.Addr {
		t.Errorf("the agent describes its proxy as %q, want it without the password", got)
	}
	ts.upload(t, packBundle(t, "1.0.0", 0))
	task, lines := ts.runTaskOn(t, "behind-proxy", "run-script", "--inline", "echo through the proxy")
	if task.State != api.TaskSucceeded {
		t.Fatalf("task: got %s (%s), want succeeded", task.State, task.Error)
	}
	found := false
	for _, l := range lines {
		found = found || l.Text == "through the proxy"
	}
	if !found {
		t.Fatal("the task's output did not come back")
	}
	if n := p.Tunnels(ts.AgentAddr()); n < 2 {
		t.Fatalf("got %d tunnels through the proxy, want the registration's and the session's", n)
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + fmt.Sprint(v)
		}
		if strings.Contains(line, "s3cret") {
			t.Fatalf("the password was logged: %s", line)
		}
	}
}

// TestAgentProxyRefusals: a proxy that wants another password, or a
// proxy URL that does not parse, fails registration with a message that
// says what to do, never the password, and changes nothing.
func TestAgentProxyRefusals(t *testing.T) {
	ts := startServer(t, nil)
	p := proxytest.Tinyproxy(t, proxytest.Options{User: "alice", Password: "s3cret"})
	tests := []struct {
		name  string
		proxy string
		want  string
	}{
		{"wrong password", "http://alice:hunter2@" + p.Addr, "the proxy wants credentials"},
		{"no password", "http://" + p.Addr, "the proxy wants credentials"},
		{"not a URL", "http//alice:hunter2@" + p.Addr, "want http://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			_, err := agent.Register(context.Background(), agent.RegisterConfig{
				Home: home, Servers: []string{ts.AgentAddr()}, ServerThumbprint: ts.Thumbprint(),
				Token: ts.token(t, "Test"), Name: "refused", Proxy: tt.proxy,
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error shows the password: %v", err)
			}
			if _, err := agent.LoadState(home); !errors.Is(err, agent.ErrNotRegistered) {
				t.Fatalf("after a refused registration: got %v, want not registered", err)
			}
		})
	}
	var pe *proxy.Error
	_, err := agent.Register(context.Background(), agent.RegisterConfig{
		Home: t.TempDir(), Servers: []string{ts.AgentAddr()}, ServerThumbprint: ts.Thumbprint(),
		Token: ts.token(t, "Test"), Name: "refused", Proxy: "http://" + p.Addr,
	})
	if !errors.As(err, &pe) {
		t.Fatalf("got %v, want a *proxy.Error callers can branch on", err)
	}
}
