package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"time"

	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/yamux"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

func TestRegisterListening(t *testing.T) {
	coord, err := certs.NewIdentity("coordinator")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     ListenConfig
		wantErr string
	}{
		{"every interface", ListenConfig{Listen: ":10933", ServerThumbprints: []string{coord.Thumbprint}}, ""},
		{"one address", ListenConfig{Listen: "127.0.0.1:10933", ServerThumbprints: []string{strings.ToUpper(coord.Thumbprint)}}, ""},
		{"no port", ListenConfig{Listen: "127.0.0.1", ServerThumbprints: []string{coord.Thumbprint}}, "missing port"},
		{"port 0", ListenConfig{Listen: ":0", ServerThumbprints: []string{coord.Thumbprint}}, "port must be 1-65535"},
		{"port too big", ListenConfig{Listen: ":70000", ServerThumbprints: []string{coord.Thumbprint}}, "port must be 1-65535"},
		{"no thumbprint", ListenConfig{Listen: ":10933"}, "would accept no coordinator"},
		{"bad thumbprint", ListenConfig{Listen: ":10933", ServerThumbprints: []string{"abc"}}, "thumbprint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Home = filepath.Join(t.TempDir(), "home")
			st, err := RegisterListening(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				if _, err := LoadState(tt.cfg.Home); err == nil {
					t.Fatal("a registration was saved despite the error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.Listen != tt.cfg.Listen || st.ServerThumbprints[0] != coord.Thumbprint || len(st.Servers) != 0 {
				t.Fatalf("got listen %q trust %v servers %v, want %q, [%s] and none", st.Listen, st.ServerThumbprints, st.Servers, tt.cfg.Listen, coord.Thumbprint)
			}
			if m := mode(t, filepath.Join(tt.cfg.Home, stateFile)); m != 0o600 {
				t.Fatalf("state file mode: got %o, want 600", m)
			}
			// Registering again needs --force, and keeps the certificate
			// the coordinator knows.
			before, err := Thumbprint(tt.cfg.Home)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := RegisterListening(tt.cfg); err == nil || !strings.Contains(err.Error(), "--force") {
				t.Fatalf("second registration: got %v, want a refusal naming --force", err)
			}
			tt.cfg.Force = true
			if _, err := RegisterListening(tt.cfg); err != nil {
				t.Fatal(err)
			}
			if after, _ := Thumbprint(tt.cfg.Home); after != before {
				t.Fatalf("thumbprint: got %s after --force, want %s kept", after, before)
			}
		})
	}
}

// TestListeningAgentKeepsFirstSigningKey: the signing key a listening
// agent learns at its first Welcome is pinned; a later Welcome cannot
// change it.
func TestListeningAgentKeepsFirstSigningKey(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	coord, _ := certs.NewIdentity("coordinator")
	if _, err := RegisterListening(ListenConfig{Home: home, Listen: ":10933", ServerThumbprints: []string{coord.Thumbprint}}); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Home: home, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	first := strings.Repeat("a", 64)
	steps := []struct {
		welcome protocol.Welcome
		wantKey string
	}{
		{protocol.Welcome{AgentID: "id-1", Name: "dmz-1", Environment: "Prod", SigningKey: first}, first},
		{protocol.Welcome{AgentID: "id-1", Name: "dmz-1", Environment: "Prod", SigningKey: strings.Repeat("b", 64)}, first},
		{protocol.Welcome{AgentID: "id-1", Name: "dmz-1", Environment: "Prod"}, first},
	}
	for i, s := range steps {
		if err := a.adoptWelcome(s.welcome); err != nil {
			t.Fatal(err)
		}
		st, err := LoadState(home)
		if err != nil {
			t.Fatal(err)
		}
		if st.SigningKey != s.wantKey || a.calamari.SigningKey() != s.wantKey || st.Name != "dmz-1" || st.AgentID != "id-1" {
			t.Fatalf("step %d: got key %q (in use %q) name %q id %q, want key %q, dmz-1, id-1", i, st.SigningKey, a.calamari.SigningKey(), st.Name, st.AgentID, s.wantKey)
		}
	}
}

// TestListeningPortTaken: an agent whose port is taken says so and keeps
// trying, and listens once the port is free.
func TestListeningPortTaken(t *testing.T) {
	blocker, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := blocker.Addr().String()
	home := filepath.Join(t.TempDir(), "home")
	coord, _ := certs.NewIdentity("coordinator")
	if _, err := RegisterListening(ListenConfig{Home: home, Listen: addr, ServerThumbprints: []string{coord.Thumbprint}}); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, home, nil)
	eventually(t, "the bind error in the status", func() bool {
		return strings.Contains(a.Status().LastError, "address already in use")
	})
	if a.Status().Listening != "" {
		t.Fatal("the agent says it listens on a port it could not bind")
	}
	blocker.Close()
	eventually(t, "the agent listening", func() bool { return a.Status().Listening == addr })
}

// TestKnockGate: strangers share a few handshake slots, two at most per
// address, while an address a pinned coordinator used gets in even when
// they are all taken.
func TestKnockGate(t *testing.T) {
	g := newKnockGate()
	var releases []func()
	admit := func(host string) bool {
		release, ok := g.admit(host)
		if ok {
			releases = append(releases, release)
		}
		return ok
	}
	steps := []struct {
		host string
		want bool
	}{
		{"198.51.100.1", true},
		{"198.51.100.1", true},
		{"198.51.100.1", false}, // two per address
		{"198.51.100.2", true},
		{"198.51.100.3", true},
		{"198.51.100.4", false}, // every slot taken
		{"10.0.0.1", false},     // not known yet
	}
	for i, s := range steps {
		if got := admit(s.host); got != s.want {
			t.Fatalf("step %d (%s): got admitted %v, want %v", i, s.host, got, s.want)
		}
	}
	g.know("10.0.0.1")
	for i := range reservedHandshakes {
		if !admit("10.0.0.1") {
			t.Fatalf("known coordinator, handshake %d: refused, want a reserved slot", i)
		}
	}
	if admit("10.0.0.1") {
		t.Fatal("known coordinator: admitted beyond every slot")
	}
	for _, r := range releases {
		r()
	}
	if !admit("198.51.100.1") || !admit("198.51.100.1") {
		t.Fatal("after the releases: refused, want the slots back")
	}
}

// dialListening plays a coordinator dialing a listening agent at addr: it
// pins the agent, presents coord, and answers the agent's Hello.
func dialListening(t *testing.T, addr string, coord *certs.Identity, agentThumb string) *yamux.Session {
	t.Helper()
	return dialListeningSigned(t, addr, coord, agentThumb, "")
}

// dialListeningSigned is dialListening whose Welcome teaches the agent
// signingKey.
func dialListeningSigned(t *testing.T, addr string, coord *certs.Identity, agentThumb, signingKey string) *yamux.Session {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	conn := tls.Client(raw, protocol.DialerTLS{Certificate: &coord.Certificate, Agent: certs.NewPins(agentThumb)}.Config())
	ys, err := protocol.NewSession(conn, protocol.SessionOptions{Server: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ys.Close() })
	st, err := ys.AcceptStream()
	if err != nil {
		t.Fatalf("wait for hello: %v", err)
	}
	f, err := protocol.ReadFrame(st, 0)
	if err != nil || f.Type != protocol.TypeHello {
		t.Fatalf("hello: got %q, %v", f.Type, err)
	}
	if err := protocol.WriteFrame(st, protocol.TypeWelcome, protocol.Welcome{Protocol: protocol.ProtocolVersion, AgentID: "id-1", Name: "dmz-1", SigningKey: signingKey}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	raw.SetDeadline(time.Time{})
	return ys
}

// runListening registers a listening agent pinning coord and runs it
// until the test ends (or it returns, as after an upgrade). done has Run's
// result; addr is where it listens.
func runListening(t *testing.T, coord *certs.Identity, mod func(*Config)) (a *Agent, addr string, done <-chan error) {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	addr, err := newClosedAddr()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RegisterListening(ListenConfig{Home: home, Listen: addr, ServerThumbprints: []string{coord.Thumbprint}}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Home: home, Version: "1.2.3", Logger: zaptest.NewLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	a, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- a.Run(ctx) }()
	ended := make(chan error, 1)
	t.Cleanup(func() { cancel(); <-ended })
	out := make(chan error, 1)
	go func() {
		err := <-result
		ended <- err
		out <- err
	}()
	eventually(t, "the agent listening", func() bool { return a.Status().Listening != "" })
	return a, addr, out
}

// TestListeningAgentRestartsAfterSwap: once an upgrade swapped the
// binary, Run returns ErrRestart even when a newer session replaced the
// one the upgrade came in.
func TestListeningAgentRestartsAfterSwap(t *testing.T) {
	coord, _ := certs.NewIdentity("coordinator")
	a, addr, done := runListening(t, coord, nil)
	dialListening(t, addr, coord, a.Status().Thumbprint)
	eventually(t, "the first session", func() bool { return a.Status().Sessions == 1 })
	dialListening(t, addr, coord, a.Status().Thumbprint)
	eventually(t, "the second session", func() bool { return a.Status().Sessions == 2 })
	a.requestRestart() // what the upgrade handler does after the swap
	select {
	case err := <-done:
		if !errors.Is(err, ErrRestart) {
			t.Fatalf("Run: got %v, want ErrRestart", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the swap")
	}
}

// TestRequestBeforeWelcomeWaitsForIt: a coordinator may send a request as
// soon as it has written its Welcome, before the agent has read it. A
// listening agent's first Welcome is where it learns the signing key, so
// a signed request that overtakes it must wait for it, not be refused
// for want of a key. Here the request is sent before the Welcome even
// leaves.
func TestRequestBeforeWelcomeWaitsForIt(t *testing.T) {
	coord, _ := certs.NewIdentity("coordinator")
	key, _ := certs.NewSigningKey()
	a, addr, _ := runListening(t, coord, nil)

	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	conn := tls.Client(raw, protocol.DialerTLS{Certificate: &coord.Certificate, Agent: certs.NewPins(a.Status().Thumbprint)}.Config())
	ys, err := protocol.NewSession(conn, protocol.SessionOptions{Server: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ys.Close()
	hello, err := ys.AcceptStream()
	if err != nil {
		t.Fatalf("wait for hello: %v", err)
	}
	if f, err := protocol.ReadFrame(hello, 0); err != nil || f.Type != protocol.TypeHello {
		t.Fatalf("hello: got %q, %v", f.Type, err)
	}
	// The signed request first, then the Welcome that carries its key.
	req, err := ys.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	thumbs := protocol.ServerCertificates{Thumbprints: []string{coord.Thumbprint}}
	if err := protocol.WriteRequest(req, testSigner{key, "id-1", "n1"}, protocol.TypeServerCertificates, thumbs); err != nil {
		t.Fatal(err)
	}
	// No answer may come before the Welcome: an agent that served the
	// request now would refuse it, having no key yet. (An agent that
	// answers later than this wait is not caught here; one that waits is
	// never failed by it.)
	req.SetReadDeadline(time.Now().Add(time.Second))
	if f, err := protocol.ReadFrame(req, 0); err == nil {
		t.Fatalf("the agent answered %s (%s) before it had the Welcome; want it to wait for it", f.Type, f.Body)
	}
	req.SetReadDeadline(time.Now().Add(10 * time.Second))
	welcome := protocol.Welcome{Protocol: protocol.ProtocolVersion, AgentID: "id-1", Name: "dmz-1", SigningKey: key.Public()}
	if err := protocol.WriteFrame(hello, protocol.TypeWelcome, welcome); err != nil {
		t.Fatal(err)
	}
	hello.Close()
	f, err := protocol.ReadFrame(req, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.DecodeReply(f, protocol.TypeAck, nil); err != nil {
		t.Fatalf("signed request sent before the Welcome: got %v, want it served once the Welcome is read", err)
	}
}
