package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func register(t *testing.T, c *testCoordinator, home string, mod func(*RegisterConfig)) (State, error) {
	t.Helper()
	cfg := RegisterConfig{
		Home:             home,
		Servers:          []string{c.addr()},
		ServerThumbprint: c.id.Thumbprint,
		Token:            "secret-token",
		Name:             "web-01",
		Environment:      "Production",
		Version:          "1.2.3",
		Logger:           zaptest.NewLogger(t),
		DialTimeout:      5 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return Register(ctx, cfg)
}

func registered(t *testing.T, c *testCoordinator) string {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	if _, err := register(t, c, home, nil); err != nil {
		t.Fatal(err)
	}
	return home
}

type runningAgent struct {
	*Agent
	logs *observer.ObservedLogs
}

// startAgent runs an agent on home until the test ends, and checks that it
// stops promptly when asked to.
func startAgent(t *testing.T, home string, mod func(*Config)) runningAgent {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	log := zaptest.NewLogger(t).WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, core)
	}))
	cfg := Config{
		Home:             home,
		Version:          "1.2.3",
		Logger:           log,
		DialTimeout:      2 * time.Second,
		HandshakeTimeout: 2 * time.Second,
		MinBackoff:       5 * time.Millisecond,
		MaxBackoff:       50 * time.Millisecond,
		RotationCheck:    10 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return within 5s of cancel")
		}
	})
	return runningAgent{a, logs}
}

func (a runningAgent) waitConnected(t *testing.T, sessions int64) {
	t.Helper()
	eventually(t, "the agent to connect", func() bool {
		s := a.Status()
		return s.Connected && s.Sessions >= sessions
	})
}

// newClosedAddr returns a loopback address nothing listens on.
func newClosedAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestRegister(t *testing.T) {
	c := newTestCoordinator(t)
	home := filepath.Join(t.TempDir(), "home")
	st, err := register(t, c, home, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.AgentID != "agent-1" || st.Name != "web-01" || st.Environment != "Production" || st.SigningKey != c.signer.Public() {
		t.Errorf("state: %+v", st)
	}
	if !slices.Equal(st.ServerThumbprints, []string{c.id.Thumbprint}) || st.ServerHint != c.id.Thumbprint {
		t.Errorf("state thumbprints: %+v", st)
	}
	loaded, err := LoadState(home)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.AgentID != st.AgentID || !slices.Equal(loaded.Servers, []string{c.addr()}) || loaded.RegisteredAt.IsZero() {
		t.Errorf("saved state: %+v", loaded)
	}
	if runtime.GOOS != "windows" {
		for _, f := range []string{stateFile, "certs/agent.key"} {
			if m := mode(t, filepath.Join(home, f)); m != 0o600 {
				t.Errorf("%s: mode %o, want 600", f, m)
			}
		}
	}
	for _, d := range []string{calamariDir, workDir, logsDir} {
		if fi, err := os.Stat(filepath.Join(home, d)); err != nil || !fi.IsDir() {
			t.Errorf("folder %s: %v", d, err)
		}
	}
	thumb, err := Thumbprint(home)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.registers) != 1 || c.registers[0].Token != "secret-token" || c.registers[0].OS != runtime.GOOS {
		t.Errorf("coordinator saw %+v", c.registers)
	}
	if !c.known[thumb] {
		t.Errorf("coordinator does not know thumbprint %s", thumb)
	}
}

func TestRegisterWrongThumbprint(t *testing.T) {
	c := newTestCoordinator(t)
	other, err := certs.NewIdentity("impostor")
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	_, err = register(t, c, home, func(cfg *RegisterConfig) { cfg.ServerThumbprint = strings.ToUpper(other.Thumbprint) })
	if err == nil {
		t.Fatal("registered with a coordinator whose thumbprint is not the given one")
	}
	if !errors.Is(err, certs.ErrUntrusted) || !strings.Contains(err.Error(), "check --server-thumbprint") || !strings.Contains(err.Error(), other.Thumbprint) {
		t.Errorf("error does not explain the pin failure: %v", err)
	}
	if n := c.count(func() int { return len(c.registers) }); n != 0 {
		t.Errorf("the token reached the coordinator (%d register calls)", n)
	}
	if _, err := LoadState(home); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("state after a failed registration: %v", err)
	}
}

func TestRegisterRemoteError(t *testing.T) {
	c := newTestCoordinator(t)
	c.registerErr = &protocol.RemoteError{Code: protocol.CodeUnauthorized, Message: "the token has expired; create a new one"}
	_, err := register(t, c, t.TempDir(), nil)
	if !protocol.IsCode(err, protocol.CodeUnauthorized) || !strings.Contains(err.Error(), "the token has expired; create a new one") {
		t.Fatalf("got %v, want the coordinator's message", err)
	}
}

func TestRegisterTriesNextServer(t *testing.T) {
	c := newTestCoordinator(t)
	dead, err := newClosedAddr()
	if err != nil {
		t.Fatal(err)
	}
	st, err := register(t, c, t.TempDir(), func(cfg *RegisterConfig) { cfg.Servers = []string{dead, c.addr()} })
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Servers) != 2 {
		t.Errorf("servers: %v", st.Servers)
	}
}

func TestRegisterAlreadyRegistered(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	before, _ := Thumbprint(home)
	_, err := register(t, c, home, nil)
	if err == nil || !strings.Contains(err.Error(), "already registered as web-01 with "+c.addr()) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("got %v, want a refusal naming --force", err)
	}
	st, err := register(t, c, home, func(cfg *RegisterConfig) { cfg.Force = true; cfg.Name = "web-02" })
	if err != nil {
		t.Fatal(err)
	}
	forced := c.count(func() int {
		if c.registers[len(c.registers)-1].Force {
			return 1
		}
		return 0
	})
	if st.Name != "web-02" || forced != 1 {
		t.Errorf("forced registration: %+v", st)
	}
	if after, _ := Thumbprint(home); after != before {
		t.Errorf("forced registration changed the identity %s -> %s", before, after)
	}
}

func TestNewUnregistered(t *testing.T) {
	_, err := New(Config{Home: t.TempDir()})
	if !errors.Is(err, ErrNotRegistered) || !strings.Contains(err.Error(), "tendril-agent register") {
		t.Fatalf("got %v, want an error naming the register command", err)
	}
	if _, err := RotateCertificate(t.TempDir()); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("RotateCertificate on an unregistered home: %v", err)
	}
	if _, err := Thumbprint(t.TempDir()); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("Thumbprint on an unregistered home: %v", err)
	}
}

func TestRunServesCoordinator(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	// A verified Calamari, one with a marker but nothing else, and one
	// whose install never finished. Only the first counts as installed.
	b := newTestBundle(t, c, "1.0.0")
	if _, err := bundle.Install(context.Background(), bytes.NewReader(b.data), filepath.Join(home, calamariDir), c.signer.Public(), b.sig, bundle.Limits{}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"2.0.0", "2.1.0"} {
		if err := os.MkdirAll(filepath.Join(home, calamariDir, v), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(home, calamariDir, "2.0.0", bundle.SuccessName), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1)
	s := c.live()

	st := a.Status()
	if st.Server != c.addr() || st.TLSVersion != "1.3" || st.Protocol != protocol.ProtocolVersion || st.UpgradeOnly || st.Sessions != 1 {
		t.Errorf("status: %+v", st)
	}
	s.mu.Lock()
	h := *s.hello
	s.mu.Unlock()
	if h.Version != "1.2.3" || h.ProtocolMin != protocol.MinProtocol || h.ProtocolMax != protocol.ProtocolVersion || h.OS != runtime.GOOS || !slices.Equal(h.Calamari, []string{"1.0.0"}) {
		t.Errorf("hello: %+v", h)
	}

	t.Run("health", func(t *testing.T) {
		var health protocol.Health
		if err := c.call(s, protocol.TypeHealthRequest, protocol.HealthRequest{}, protocol.TypeHealth, &health); err != nil {
			t.Fatal(err)
		}
		if health.Version != "1.2.3" || health.OS != runtime.GOOS || health.Arch != runtime.GOARCH || health.UptimeSeconds < 0 {
			t.Errorf("health: %+v", health)
		}
		if health.DiskFree <= 0 {
			t.Errorf("disk free: %d, want > 0", health.DiskFree)
		}
		if !slices.Equal(health.Calamari, []string{"1.0.0"}) {
			t.Errorf("calamari: got %v, want [1.0.0]", health.Calamari)
		}
		if len(health.CalamariProblems) != 2 ||
			health.CalamariProblems[0] != "2.1.0: not installed" ||
			!strings.HasPrefix(health.CalamariProblems[1], "2.0.0: ") || !strings.Contains(health.CalamariProblems[1], "manifest.json is missing") {
			t.Errorf("calamari problems: got %q, want 2.1.0 not installed and 2.0.0 without its manifest", health.CalamariProblems)
		}
	})

	t.Run("unknown type", func(t *testing.T) {
		err := c.call(s, "teleport", nil, protocol.TypeAck, nil)
		if !protocol.IsCode(err, protocol.CodeUnknownType) || !strings.Contains(err.Error(), "teleport") {
			t.Errorf("got %v, want %s", err, protocol.CodeUnknownType)
		}
	})

	t.Run("empty server certificates", func(t *testing.T) {
		err := c.call(s, protocol.TypeServerCertificates, protocol.ServerCertificates{}, protocol.TypeAck, nil)
		if !protocol.IsCode(err, protocol.CodeBadRequest) {
			t.Errorf("got %v, want %s", err, protocol.CodeBadRequest)
		}
	})

	t.Run("server certificates", func(t *testing.T) {
		next, err := certs.NewIdentity("coordinator-next")
		if err != nil {
			t.Fatal(err)
		}
		list := []string{next.Thumbprint, c.id.Thumbprint}
		if err := c.call(s, protocol.TypeServerCertificates, protocol.ServerCertificates{Thumbprints: list}, protocol.TypeAck, nil); err != nil {
			t.Fatal(err)
		}
		saved, err := LoadState(home)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(saved.ServerThumbprints, list) || saved.ServerHint != next.Thumbprint {
			t.Errorf("saved: %+v", saved)
		}
		// The coordinator now switches to its new certificate; the agent
		// only reconnects if its live pins were updated.
		c.mu.Lock()
		c.thumbprints = list
		c.mu.Unlock()
		c.setIdentity(next)
		c.dropAll()
		a.waitConnected(t, 2)
	})
}

func TestRunReconnects(t *testing.T) {
	c := newTestCoordinator(t)
	a := startAgent(t, registered(t, c), nil)
	a.waitConnected(t, 1)
	for i := int64(2); i <= 3; i++ {
		c.dropAll()
		a.waitConnected(t, i)
	}
	helloed := c.count(func() int {
		n := 0
		for _, s := range c.sessions {
			if s.helloed() {
				n++
			}
		}
		return n
	})
	if helloed != 3 {
		t.Errorf("coordinator saw %d sessions say Hello, want 3", helloed)
	}
}

func TestRunOldProtocolAndTLS(t *testing.T) {
	c := newTestCoordinator(t)
	a := startAgent(t, registered(t, c), func(cfg *Config) {
		cfg.TLSMaxVersion = 0x0303 // TLS 1.2
		cfg.ProtocolMin, cfg.ProtocolMax = 1, 1
	})
	a.waitConnected(t, 1)
	if st := a.Status(); st.TLSVersion != "1.2" {
		t.Errorf("TLS version %s, want 1.2", st.TLSVersion)
	}
}

func TestRunDeletedKeepsRetrying(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1)
	s := c.live()
	thumb, _ := Thumbprint(home)
	c.mu.Lock()
	c.refused[thumb] = true
	before := c.handshakes
	c.mu.Unlock()
	err := c.call(s, protocol.TypeGoAway, protocol.GoAway{Reason: "agent deleted", Reconnect: false}, protocol.TypeAck, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.ys.Close()
	eventually(t, "the agent to keep retrying", func() bool {
		return c.count(func() int { return c.handshakes }) >= before+3
	})
	st := a.Status()
	if st.Connected || st.LastError == "" {
		t.Errorf("status: %+v", st)
	}
	if n := a.logs.FilterMessageSnippet("deleted from the coordinator; register it again with --force").FilterLevelExact(zapcore.ErrorLevel).Len(); n != 1 {
		t.Errorf("deletion logged %d times at error level, want once", n)
	}
	// Registered again: the agent comes back by itself.
	c.mu.Lock()
	delete(c.refused, thumb)
	c.mu.Unlock()
	a.waitConnected(t, 2)
}

func TestRunStopsWhileDisconnected(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	c.close()
	a := startAgent(t, home, func(cfg *Config) { cfg.MinBackoff, cfg.MaxBackoff = time.Hour, time.Hour })
	eventually(t, "a failed attempt", func() bool { return a.Status().LastError != "" })
	// The cleanup checks that Run returns promptly even mid-wait.
}

func TestRunRejectsUntrustedCoordinator(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	other, err := certs.NewIdentity("impostor")
	if err != nil {
		t.Fatal(err)
	}
	c.setIdentity(other)
	before := c.count(func() int { return len(c.sessions) }) // the registration's
	a := startAgent(t, home, nil)
	eventually(t, "a pin failure", func() bool { return strings.Contains(a.Status().LastError, "not trusted") })
	eventually(t, "the pin failure to be logged with its reason", func() bool {
		return a.logs.FilterMessageSnippet("coordinator certificate is not trusted").Len() > 0
	})
	if n := c.count(func() int { return len(c.sessions) }); n != before {
		t.Errorf("a session was made with an untrusted coordinator")
	}
}

func TestRotation(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	old, err := Thumbprint(home)
	if err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1)

	var sawDisconnected atomic.Bool
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !a.Status().Connected {
				sawDisconnected.Store(true)
			}
		}
	}()

	next, err := RotateCertificate(home)
	if err != nil {
		t.Fatal(err)
	}
	c.waitSession(func(s *coordSession) bool { return s.thumbprint == next })
	eventually(t, "the agent to switch", func() bool {
		st := a.Status()
		return st.Thumbprint == next && st.Sessions == 2
	})
	close(stop)
	<-sampled
	if sawDisconnected.Load() {
		t.Error("Status().Connected was false during the rotation")
	}
	c.mu.Lock()
	if len(c.rotations) != 1 || c.rotations[0] != next {
		t.Errorf("coordinator saw rotations %v, want [%s]", c.rotations, next)
	}
	c.mu.Unlock()
	eventually(t, "the old session to close", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, s := range c.sessions {
			if s.thumbprint == old && !s.ys.IsClosed() {
				return false
			}
		}
		return true
	})
	if got, _ := Thumbprint(home); got != next {
		t.Errorf("agent.crt is %s, want %s", got, next)
	}
	prev, err := certSlot(home, previousSlot).load()
	if err != nil || prev.Thumbprint != old {
		t.Errorf("previous identity: %v", err)
	}
	if exists(certSlot(home, nextSlot).cert) || exists(certSlot(home, nextSlot).key) {
		t.Error("next.* still present after the rotation")
	}
}

func TestRotationRefusedKeepsSession(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	old, _ := Thumbprint(home)
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1)
	// The coordinator accepts the new certificate but then refuses
	// connections made with it, as a coordinator node that has not yet
	// heard of the rotation would.
	next, err := RotateCertificate(home)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.refused[next] = true
	c.mu.Unlock()
	eventually(t, "the rotation to be presented", func() bool {
		return c.count(func() int { return len(c.rotations) }) == 1
	})
	eventually(t, "a failed attempt with the new certificate", func() bool {
		return a.logs.FilterMessage("certificate rotation failed; will retry").Len() > 0
	})
	st := a.Status()
	if !st.Connected || st.Sessions != 1 || st.Thumbprint != next {
		t.Errorf("status: %+v", st)
	}
	if s := c.live(); s.thumbprint != old {
		t.Errorf("live session uses %s, want the old %s", s.thumbprint, old)
	}
	c.mu.Lock()
	delete(c.refused, next)
	c.mu.Unlock()
	eventually(t, "the switch once allowed", func() bool { return a.Status().Sessions == 2 })
}

func TestRotateCertificatePending(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	cur, _ := Thumbprint(home)
	next, err := RotateCertificate(home)
	if err != nil {
		t.Fatal(err)
	}
	if next == cur {
		t.Fatal("rotation kept the thumbprint")
	}
	// Not yet picked up by an agent: a second command returns the pending
	// one instead of replacing it under a running agent.
	if again, err := RotateCertificate(home); err != nil || again != next {
		t.Errorf("second rotate: %s, %v; want the pending %s", again, err, next)
	}
	if runtime.GOOS != "windows" {
		if m := mode(t, certSlot(home, nextSlot).key); m != 0o600 {
			t.Errorf("next.key: mode %o, want 600", m)
		}
	}
	// A rotation presented while the agent was stopped is picked up by
	// the next run.
	a := startAgent(t, home, nil)
	eventually(t, "the pending certificate in use", func() bool {
		st := a.Status()
		return st.Connected && st.Thumbprint == next && st.Sessions == 2
	})
}

func TestPromoteRecovery(t *testing.T) {
	// Each case is a crash after some renames of a promotion; loading must
	// finish it and come up with the new identity.
	for stepsDone := 0; stepsDone <= 4; stepsDone++ {
		home := t.TempDir()
		if err := makeHome(home); err != nil {
			t.Fatal(err)
		}
		cur, next, prev := certSlot(home, currentSlot), certSlot(home, nextSlot), certSlot(home, previousSlot)
		oldID, _ := certs.NewIdentity("a")
		newID, _ := certs.NewIdentity("a")
		if err := oldID.Save(cur.cert, cur.key); err != nil {
			t.Fatal(err)
		}
		if err := newID.Save(next.cert, next.key); err != nil {
			t.Fatal(err)
		}
		renames := [][2]string{{cur.cert, prev.cert}, {cur.key, prev.key}, {next.key, cur.key}, {next.cert, cur.cert}}
		for _, r := range renames[:stepsDone] {
			if err := os.Rename(r[0], r[1]); err != nil {
				t.Fatal(err)
			}
		}
		id, err := loadIdentity(home)
		if err != nil {
			t.Fatalf("after %d steps: %v", stepsDone, err)
		}
		want := newID.Thumbprint
		if stepsDone == 0 {
			want = oldID.Thumbprint // nothing started: the rotation is still pending
		}
		if id.Thumbprint != want {
			t.Errorf("after %d steps: loaded %s, want %s", stepsDone, id.Thumbprint, want)
		}
		if stepsDone > 0 {
			if p, err := prev.load(); err != nil || p.Thumbprint != oldID.Thumbprint {
				t.Errorf("after %d steps: previous identity %v", stepsDone, err)
			}
		}
	}
}

func TestBackoff(t *testing.T) {
	min, max := 100*time.Millisecond, 3*time.Second
	b := newJitterBackOff(min, max)
	var caps []time.Duration
	for range 10 {
		w := b.NextBackOff()
		c := b.currentCap()
		if w < 0 || w >= c {
			t.Fatalf("wait %s outside [0, %s)", w, c)
		}
		caps = append(caps, c)
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 3000, 3000, 3000, 3000, 3000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(caps, want) {
		t.Errorf("caps %v, want %v", caps, want)
	}
	b.Reset()
	b.NextBackOff()
	if b.currentCap() != min {
		t.Errorf("cap after reset %s, want %s", b.currentCap(), min)
	}
	// The jitter is spread, not pinned to the cap.
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[b.NextBackOff()] = true
	}
	if len(seen) < 10 {
		t.Errorf("only %d distinct waits in 50", len(seen))
	}
}

func TestRetryPolicy(t *testing.T) {
	p := newRetryPolicy(time.Second, time.Minute)
	for range 10 {
		p.next(outcome{err: errConnectionLost})
	}
	if p.bo.currentCap() != time.Minute {
		t.Fatalf("cap %s after 10 failures, want saturated", p.bo.currentCap())
	}
	if w, _ := p.next(outcome{err: errConnectionLost, welcomed: true}); w >= time.Second {
		t.Errorf("wait after a welcomed session %s, want below the minimum", w)
	}
	w, deleted := p.next(outcome{err: errConnectionLost, welcomed: true, goAway: &protocol.GoAway{Reconnect: false}})
	if w != time.Minute || !deleted {
		t.Errorf("deleted: wait %s, first %v", w, deleted)
	}
	if w, deleted := p.next(outcome{err: errConnectionLost}); w != time.Minute || deleted {
		t.Errorf("still deleted: wait %s, first %v", w, deleted)
	}
	if _, deleted := p.next(outcome{err: errConnectionLost, welcomed: true}); deleted || p.deleted {
		t.Error("a Welcome did not clear the deletion")
	}
	if w, _ := p.next(outcome{err: errConnectionLost, goAway: &protocol.GoAway{Reconnect: true, RetryAfterMillis: 90_000}}); w != 90*time.Second {
		t.Errorf("RetryAfter: wait %s, want 90s", w)
	}
	// A certificate refused as revoked is a deletion too, seen at
	// connect rather than in a session.
	revoked := fmt.Errorf("hello to coordinator x: %w", &protocol.RemoteError{Code: protocol.CodeRevoked, Message: "deleted"})
	if w, deleted := p.next(outcome{err: revoked}); w != time.Minute || !deleted {
		t.Errorf("revoked: got wait %s, first %v; want 1m0s, true", w, deleted)
	}
	if w, deleted := p.next(outcome{err: revoked}); w != time.Minute || deleted {
		t.Errorf("still revoked: got wait %s, first %v; want 1m0s, false", w, deleted)
	}
	p.registeredAgain()
	if w, _ := p.next(outcome{err: errConnectionLost}); w >= time.Second || p.deleted {
		t.Errorf("after a new registration: got wait %s, deleted %v; want below the minimum, false", w, p.deleted)
	}
}

// TestRetryPolicyRefusal: a coordinator that refuses a session for a
// reason that passes and says when to come back is tried again then,
// with jitter and within the agent's bounds, however far the backoff has
// grown; a refusal that says nothing keeps the backoff.
func TestRetryPolicyRefusal(t *testing.T) {
	refused := func(after time.Duration) outcome {
		return outcome{err: fmt.Errorf("hello to coordinator x: %w", &protocol.RemoteError{
			Code: protocol.CodeUnavailable, Message: "coordinator node a cannot reach its database", RetryAfter: after})}
	}
	tests := []struct {
		name     string
		out      outcome
		min, max time.Duration
	}{
		{"retry after 2s", refused(2 * time.Second), 2 * time.Second, 3 * time.Second},
		{"below the minimum backoff", refused(time.Millisecond), time.Second, time.Second},
		{"beyond the maximum backoff", refused(time.Hour), time.Minute, time.Minute},
		{"an older coordinator's refusal: own backoff", refused(0), 0, time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for range 100 {
				p := newRetryPolicy(time.Second, time.Minute)
				for range 10 {
					p.next(outcome{err: errConnectionLost})
				}
				w, deleted := p.next(tc.out)
				if w < tc.min || w > tc.max || deleted {
					t.Fatalf("got wait %s (deleted %v), want within [%s, %s]", w, deleted, tc.min, tc.max)
				}
				seen[w] = true
				if p.bo.currentCap() != time.Minute {
					t.Fatalf("backoff cap %s, want it left where the failures took it", p.bo.currentCap())
				}
			}
			if tc.max-tc.min >= time.Second && len(seen) < 10 {
				t.Errorf("only %d distinct waits in 100: want jitter", len(seen))
			}
		})
	}
}

// TestRetryPolicyBusy: a coordinator that shed the connection with the
// busy answer is tried again when it said, with a little jitter, from the
// first attempt on, and the backoff does not grow meanwhile.
func TestRetryPolicyBusy(t *testing.T) {
	busy := func(after time.Duration) outcome {
		return outcome{err: fmt.Errorf("TLS handshake with coordinator x: %w", &protocol.BusyError{RetryAfter: after})}
	}
	tests := []struct {
		name     string
		out      outcome
		min, max time.Duration
	}{
		{"come back in 10s", busy(10 * time.Second), 10 * time.Second, 11 * time.Second},
		{"come back in 100ms", busy(100 * time.Millisecond), 100 * time.Millisecond, 110 * time.Millisecond},
		{"jitter at most a second", busy(50 * time.Second), 50 * time.Second, 51 * time.Second},
		{"beyond the maximum backoff", busy(time.Hour), time.Minute, time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newRetryPolicy(time.Second, time.Minute)
			for i := range 20 {
				w, deleted := p.next(tc.out)
				if w < tc.min || w > tc.max || deleted {
					t.Fatalf("busy answer %d: got wait %s (deleted %v), want within [%s, %s]", i+1, w, deleted, tc.min, tc.max)
				}
			}
			if c := p.bo.currentCap(); c != 0 {
				t.Fatalf("backoff cap %s after busy answers only, want it untouched (0)", c)
			}
		})
	}
}

// TestRetryPolicySpread: after a session that broke without a goodbye the
// wait is drawn from the coordinator's window (capped by the maximum
// backoff), so a crashed coordinator's fleet returns spread over it.
func TestRetryPolicySpread(t *testing.T) {
	lost := func(spread time.Duration, g *protocol.GoAway) outcome {
		return outcome{err: errConnectionLost, welcomed: true, spread: spread, goAway: g}
	}
	tests := []struct {
		name     string
		out      outcome
		min, max time.Duration // bounds of the wait
		wantWide bool          // some waits must exceed the minimum backoff
	}{
		{"no window: own backoff", lost(0, nil), 0, time.Second, false},
		{"20s window", lost(20*time.Second, nil), 0, 20 * time.Second, true},
		{"window above the maximum backoff", lost(time.Hour, nil), 0, time.Minute, true},
		{"goodbye with a retry time wins", lost(20*time.Second, &protocol.GoAway{Reconnect: true, RetryAfterMillis: 3000}), 3 * time.Second, 3 * time.Second, true},
		{"never welcomed: own backoff", outcome{err: errConnectionLost, spread: 20 * time.Second}, 0, time.Second, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wide := false
			for range 200 {
				p := newRetryPolicy(time.Second, time.Minute)
				w, _ := p.next(tc.out)
				if w < tc.min || w > tc.max {
					t.Fatalf("got wait %s, want within [%s, %s]", w, tc.min, tc.max)
				}
				wide = wide || w > time.Second
			}
			if wide != tc.wantWide {
				t.Errorf("got waits beyond the minimum backoff: %v, want %v", wide, tc.wantWide)
			}
		})
	}
}
