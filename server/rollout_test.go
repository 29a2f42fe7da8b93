package server

// Agent packages and rollouts. The rollout engine is driven here by
// SIMULATED agents: the real agent upgrades by re-executing a new binary
// of itself, which cannot happen inside a test process, so fakeAgent plays
// its part over the real protocol and loopback TLS (the end-to-end tests
// with real binaries cover the agent's side). The coordinator is real.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// pushPackage stores a stand-in agent binary stamped with version for a
// platform (servertest.AgentBinary): the coordinator reads the version
// built into a package, and simulated agents never run it.
func (ts *testServer) pushPackage(t *testing.T, version, goos, goarch string) api.AgentPackageView {
	t.Helper()
	return ts.pushBinary(t, version, goos, goarch, servertest.AgentBinary(t, version, goos, goarch))
}

func (ts *testServer) pushBinary(t *testing.T, version, goos, goarch string, b []byte) api.AgentPackageView {
	t.Helper()
	v, err := ts.rollouts.UploadAgentPackage(context.Background(), version, goos, goarch, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestUploadAgentPackage(t *testing.T) {
	ts := startServer(t, nil)
	real := servertest.AgentBinary(t, "1.2.0", "linux", "amd64")
	v := ts.pushBinary(t, "1.2.0", "linux", "amd64", real)
	sum := sha256.Sum256(real)
	if !v.Created || v.SHA256 != hex.EncodeToString(sum[:]) || v.Size != int64(len(real)) {
		t.Fatalf("upload: got %+v", v)
	}
	stored, err := os.ReadFile(filepath.Join(ts.dir, "agent-packages", "1.2.0", "linux-amd64", "tendril-agent"))
	if err != nil || !bytes.Equal(stored, real) {
		t.Fatalf("stored binary: %v (equal %v)", err, bytes.Equal(stored, real))
	}
	p, err := ts.store.AgentPackage(context.Background(), "1.2.0", "linux", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	desc := protocol.AgentPackage{Version: "1.2.0", OS: "linux", Arch: "amd64", SHA256: v.SHA256, Size: v.Size}
	if err := certs.Verify(ts.signing.Public(), desc.SigningBytes(), p.Signature); err != nil {
		t.Fatalf("stored signature does not verify: %v", err)
	}
	if again := ts.pushBinary(t, "1.2.0", "linux", "amd64", real); again.Created {
		t.Fatal("same binary again: got created, want a no-op")
	}
	ts.pushPackage(t, "1.10.0", "windows", "amd64")
	ts.pushPackage(t, "1.3.0", "darwin", "arm64")
	older := servertest.AgentBinary(t, "1.1.0", "linux", "amd64")
	for _, tc := range []struct {
		name, version, os, arch string
		body                    []byte
		kind                    error
		want                    string
	}{
		{"text file", "1.4.0", "linux", "amd64", []byte("#!/bin/sh\necho hi\n"), kind.ErrBadRequest, "file is not a linux executable"},
		{"ELF for windows", "1.4.0", "windows", "amd64", real[:64], kind.ErrBadRequest, "file is not a windows executable"},
		{"empty", "1.4.0", "linux", "amd64", nil, kind.ErrBadRequest, "empty"},
		{"bad version", "v1.4", "linux", "amd64", real[:64], kind.ErrBadRequest, "not a semantic version"},
		{"unknown os", "1.4.0", "plan9", "amd64", real[:64], kind.ErrBadRequest, `os "plan9"`},
		{"unknown arch", "1.4.0", "linux", "mips", real[:64], kind.ErrBadRequest, `arch "mips"`},
		// Issue 19: a binary that reports 1.1.0 pushed as 1.2.0 was signed.
		{"built-in version differs", "1.2.0", "linux", "amd64", older, kind.ErrBadRequest,
			`the binary says it is 1.1.0 but --version is 1.2.0; push it with --version 1.1.0, or rebuild it with -ldflags "-X github.com/tendrildeploy/tendril/version.Version=1.2.0"`},
		{"built-in version differs, nothing stored", "1.4.0", "linux", "amd64", older, kind.ErrBadRequest,
			"the binary says it is 1.1.0 but --version is 1.4.0"},
		{"built for another arch", "1.1.0", "linux", "arm64", older, kind.ErrBadRequest,
			"the binary is built for linux/amd64 but --os and --arch say linux/arm64; push it with --os linux --arch amd64"},
		{"not a Go program", "1.4.0", "linux", "amd64", append([]byte("\x7fELF\x02\x01\x01\x00"), bytes.Repeat([]byte("x"), 4096)...), kind.ErrBadRequest,
			"the agent package's built-in version cannot be read: read build information: the file is not a Go program"},
		{"conflicting content", "1.2.0", "linux", "amd64", servertest.AgentBinary(t, "1.2.0", "linux", "amd64", "other"), kind.ErrConflict, "already stored with other content"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.rollouts.UploadAgentPackage(context.Background(), tc.version, tc.os, tc.arch, bytes.NewReader(tc.body))
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %v containing %q", err, tc.kind, tc.want)
			}
		})
	}
	list, err := ts.rollouts.AgentPackages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range list {
		got = append(got, p.Version+" "+p.OS)
	}
	if strings.Join(got, ",") != "1.10.0 windows,1.3.0 darwin,1.2.0 linux" {
		t.Fatalf("list: got %v, want newest first and nothing refused stored", got)
	}
	if left, _ := filepath.Glob(filepath.Join(ts.dir, "agent-packages", "*", "*", ".upload-*")); len(left) != 0 {
		t.Errorf("temporary upload files left behind: %v", left)
	}
}

func TestUpgradeViewsAndRequiredRefusesTasks(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "web-1") // Hello: 1.0.0 linux/amd64
	if v := ts.agentView(t, "web-1"); v.Upgrade != api.UpgradeNone || v.UpgradeTo != "" {
		t.Fatalf("no packages: got %q %q, want none", v.Upgrade, v.UpgradeTo)
	}
	ts.pushPackage(t, "1.0.0", "linux", "amd64")
	ts.pushPackage(t, "2.0.0", "linux", "arm64") // another platform: not for web-1
	if v := ts.agentView(t, "web-1"); v.Upgrade != api.UpgradeNone {
		t.Fatalf("same version only: got %q, want none", v.Upgrade)
	}
	ts.pushPackage(t, "1.1.0", "linux", "amd64")
	if v := ts.agentView(t, "web-1"); v.Upgrade != api.UpgradeRecommended || v.UpgradeTo != "1.1.0" {
		t.Fatalf("newer package: got %q %q, want recommended 1.1.0", v.Upgrade, v.UpgradeTo)
	}
	ts.stop()

	// A coordinator whose minimum protocol is above the agent's: the
	// agent's record keeps the protocol of its last session.
	ts2 := runServer(t, ts.dir, func(c *Config) { c.ProtocolMin, c.ProtocolMax = 2, 2 })
	if v := ts2.agentView(t, "web-1"); v.Upgrade != api.UpgradeRequired {
		t.Fatalf("protocol below minimum: got %q, want required", v.Upgrade)
	}
	_, err := ts2.CreateTasks(context.Background(), api.TaskRequest{Agent: "web-1", Args: []string{"run-script"}})
	want := "agent web-1 must be upgraded before it can run tasks (its protocol 1 is below this coordinator's minimum 2); run: tendril-server upgrade --environment Test"
	if !errors.Is(err, kind.ErrConflict) || err.Error() != want {
		t.Fatalf("task to an upgrade-required agent: got %v, want %q", err, want)
	}
}

// fakeAgent is a simulated agent (see the top of this file).
type fakeAgent struct {
	t    *testing.T
	ts   *testServer
	id   *certs.Identity
	name string
	env  string

	mu       sync.Mutex
	version  string
	running  int  // RunningTasks in health reports
	busy     bool // Hello.Busy
	mode     string
	report   *protocol.UpgradeReport
	peer     *peer
	offers   int
	acked    bool // the last Welcome acknowledged a report
	install  time.Duration
	closed   bool
	wg       sync.WaitGroup
	switchTo func(*testServer) // reconnect to another coordinator (restart test)
	welcomes int               // sessions that got their Welcome
	proto    int               // protocol spoken; 0 means 1
	newProto int               // protocol spoken after an upgrade; 0 means unchanged
}

// Fake agent behaviours on an upgrade offer.
const (
	fakeOK       = "ok"       // install, restart at the new version
	fakeRollback = "rollback" // install, then come back at the old version reporting a rollback
	fakeRefuse   = "refuse"   // refuse the offer
	fakeVanish   = "vanish"   // install, then never come back
	fakeBusyOnce = "busy"     // say busy to the first offer (a task just started), then behave as ok
)

func newFakeAgent(t *testing.T, ts *testServer, name, env, version string) *fakeAgent {
	t.Helper()
	f := &fakeAgent{t: t, ts: ts, id: newIdentity(t), name: name, env: env, version: version, mode: fakeOK, install: 50 * time.Millisecond}
	p, err := dialPeer(t, ts, f.id)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.CreateToken(context.Background(), env, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.register(tok.Token, name, false); err != nil {
		t.Fatal(err)
	}
	p.sess.Close()
	t.Cleanup(func() {
		f.mu.Lock()
		f.closed = true
		if f.peer != nil {
			f.peer.sess.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	f.connect()
	return f
}

// failed reports a connection failure unless the test is tearing the
// agent down, when sessions in flight are expected to break.
func (f *fakeAgent) failed(step string, err error) {
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if !closed {
		f.t.Errorf("%s: %s: %v", f.name, step, err)
	}
}

func (f *fakeAgent) welcomeCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.welcomes
}

func (f *fakeAgent) offerCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.offers
}

func (f *fakeAgent) set(fn func(f *fakeAgent)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// connect opens a session with the Hello its current version sends.
func (f *fakeAgent) connect() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	proto := max(f.proto, 1)
	ts, hello := f.ts, protocol.Hello{Version: f.version, ProtocolMin: proto, ProtocolMax: proto, OS: "linux", Arch: "amd64", Upgrade: f.report, Busy: f.busy}
	f.mu.Unlock()
	p, err := dialPeer(f.t, ts, f.id)
	if err != nil {
		f.failed("reconnect", err)
		return
	}
	f.mu.Lock()
	f.peer = p
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			st, err := p.sess.AcceptStream()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.handle(st)
			}()
		}
	}()
	var w protocol.Welcome
	if err := p.call(protocol.TypeHello, hello, protocol.TypeWelcome, &w); err != nil {
		f.failed("hello", err)
		return
	}
	f.mu.Lock()
	f.welcomes++
	f.acked = w.UpgradeAcknowledged
	if w.UpgradeAcknowledged {
		f.report = nil
	}
	f.mu.Unlock()
}

func (f *fakeAgent) handle(st io.ReadWriteCloser) {
	defer st.Close()
	fr, err := protocol.ReadFrame(st, 0)
	if err != nil {
		return
	}
	switch fr.Type {
	case protocol.TypeHealthRequest:
		f.mu.Lock()
		h := protocol.Health{Version: f.version, DiskFree: 10 << 30, RunningTasks: f.running, OS: "linux", Arch: "amd64"}
		f.mu.Unlock()
		protocol.WriteFrame(st, protocol.TypeHealth, h)
	case protocol.TypeAgentUpgrade:
		var up protocol.AgentUpgrade
		if err := fr.Decode(&up); err != nil {
			protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
			return
		}
		f.mu.Lock()
		f.offers++
		mode, from, install := f.mode, f.version, f.install
		f.mu.Unlock()
		if mode == fakeRefuse {
			protocol.WriteError(st, protocol.CodeBadRequest, "package signature does not verify")
			return
		}
		if mode == fakeBusyOnce {
			f.mu.Lock()
			f.mode = fakeOK
			f.mu.Unlock()
			protocol.WriteError(st, protocol.CodeUnavailable, "agent is busy with 1 tasks; the upgrade waits for idle")
			return
		}
		protocol.WriteFrame(st, protocol.TypePushReady, protocol.PushReady{})
		h := sha256.New()
		if _, err := io.CopyN(h, st, up.Package.Size); err != nil || hex.EncodeToString(h.Sum(nil)) != up.Package.SHA256 {
			protocol.WriteError(st, protocol.CodeBadRequest, "package hash differs")
			return
		}
		time.Sleep(install)
		protocol.WriteFrame(st, protocol.TypeUpgradeReady, protocol.UpgradeReady{From: from, To: up.Package.Version})
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.restart(up, from, mode)
		}()
	default:
		protocol.WriteFrame(st, protocol.TypeAck, nil)
	}
}

// restart is what the real agent's re-exec looks like from the
// coordinator: the session ends, and a new one starts with the new
// version's Hello (or, after a rollback, the old version's with a report).
func (f *fakeAgent) restart(up protocol.AgentUpgrade, from, mode string) {
	time.Sleep(20 * time.Millisecond) // let the reply reach the coordinator
	f.mu.Lock()
	f.peer.sess.Close()
	switch mode {
	case fakeOK:
		f.version = up.Package.Version
		if f.newProto != 0 {
			f.proto = f.newProto
		}
	case fakeRollback:
		f.report = &protocol.UpgradeReport{RolloutID: up.RolloutID, From: from, To: up.Package.Version,
			Result: protocol.UpgradeRolledBack, Reason: "the new version did not commit within the grace period"}
	case fakeVanish:
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	f.connect()
}

func (ts *testServer) rollout(t *testing.T, id string) api.RolloutView {
	t.Helper()
	v, err := ts.rollouts.Rollout(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (ts *testServer) waitRollout(t *testing.T, id string) api.RolloutView {
	t.Helper()
	var v api.RolloutView
	eventually(t, "rollout "+id+" to finish", func() bool {
		v = ts.rollout(t, id)
		return v.State != api.RolloutRunning
	})
	return v
}

func agentStates(v api.RolloutView) map[string]string {
	m := map[string]string{}
	for _, a := range v.Agents {
		m[a.Agent] = a.State
	}
	return m
}

func TestRolloutBatches(t *testing.T) {
	ts := startServer(t, nil)
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	var agents []*fakeAgent
	for _, n := range []string{"web-5", "web-3", "web-1", "web-4", "web-2"} {
		agents = append(agents, newFakeAgent(t, ts, n, "Prod", "1.0.0"))
	}
	other := newFakeAgent(t, ts, "db-1", "Staging", "1.0.0")
	v, err := ts.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "prod", Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Sample the store while it runs: never more than a batch between
	// sending and a final state.
	stop := make(chan struct{})
	sampled := make(chan int)
	id := v.ID // v is reassigned below while this samples
	go func() {
		most := 0
		for {
			select {
			case <-stop:
				sampled <- most
				return
			default:
			}
			ras, err := ts.store.RolloutAgents(context.Background(), id)
			if err == nil {
				n := 0
				for _, a := range ras {
					switch a.State {
					case api.UpgradeSending, api.UpgradeInstalling, api.UpgradeAwaitingReconnect:
						n++
					}
				}
				most = max(most, n)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	v = ts.waitRollout(t, v.ID)
	close(stop)
	most := <-sampled
	if v.State != api.RolloutSucceeded || v.Counts[api.UpgradeSucceeded] != 5 {
		t.Fatalf("got %s (%s) %v, want succeeded for 5", v.State, v.Reason, v.Counts)
	}
	if most > 2 || most == 0 {
		t.Fatalf("at most %d agents upgrading at once, want 1..2", most)
	}
	var order []string
	for _, a := range v.Agents {
		order = append(order, a.Agent+":"+string(rune('0'+a.Batch)))
		if a.Reason != "the new version connected" || a.From != "1.0.0" {
			t.Errorf("%s: from %q reason %q", a.Agent, a.From, a.Reason)
		}
	}
	if got := strings.Join(order, " "); got != "web-1:1 web-2:1 web-3:2 web-4:2 web-5:3" {
		t.Fatalf("batches: got %s", got)
	}
	for _, a := range agents {
		if av := ts.agentView(t, a.name); av.Version != "2.0.0" || av.Upgrade != api.UpgradeNone {
			t.Errorf("%s: got %s %s", a.name, av.Version, av.Upgrade)
		}
	}
	if other.offerCount() != 0 {
		t.Error("an agent of another environment was offered the upgrade")
	}
	// A second rollout: every agent already at 2.0.0.
	v2, err := ts.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Prod"})
	if err != nil {
		t.Fatal(err)
	}
	v2 = ts.waitRollout(t, v2.ID)
	if v2.State != api.RolloutSucceeded || v2.Agents[0].Reason != "already at 2.0.0" || v2.Agents[0].Batch != 0 {
		t.Fatalf("already upgraded: got %+v", v2)
	}
}

func TestRolloutRollbackHalts(t *testing.T) {
	ts := startServer(t, nil)
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	a := newFakeAgent(t, ts, "a", "Prod", "1.0.0")
	b := newFakeAgent(t, ts, "b", "Prod", "1.0.0")
	c := newFakeAgent(t, ts, "c", "Prod", "1.0.0")
	b.set(func(f *fakeAgent) { f.mode = fakeRollback })
	v, err := ts.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Prod", Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	v = ts.waitRollout(t, v.ID)
	st := agentStates(v)
	if v.State != api.RolloutHalted || v.Reason != "halted after 1 failures" ||
		st["a"] != api.UpgradeSucceeded || st["b"] != api.UpgradeRolledBack || st["c"] != api.UpgradeQueued {
		t.Fatalf("got %s (%s) %v", v.State, v.Reason, st)
	}
	if !strings.Contains(v.Agents[1].Reason, "did not commit within the grace period") {
		t.Errorf("rolled back reason: %q", v.Agents[1].Reason)
	}
	if c.offerCount() != 0 {
		t.Error("an agent of a later batch was offered the upgrade after the halt")
	}
	// The report is stored before the Welcome that acknowledges it.
	eventually(t, "the rollback report acknowledged", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.acked && b.report == nil
	})
	if av := ts.agentView(t, "b"); av.Version != "1.0.0" {
		t.Errorf("b: got version %s", av.Version)
	}

	// Later evidence wins: an agent recorded as succeeded that reports a
	// rollback of the rollout becomes rolled back.
	a.set(func(f *fakeAgent) {
		f.version = "1.0.0"
		f.report = &protocol.UpgradeReport{RolloutID: v.ID, From: "1.0.0", To: "2.0.0", Result: protocol.UpgradeRolledBack, Reason: "crashed after commit"}
		f.peer.sess.Close()
	})
	a.connect()
	v = ts.rollout(t, v.ID)
	if st := agentStates(v); st["a"] != api.UpgradeRolledBack || v.Counts[api.UpgradeRolledBack] != 2 {
		t.Fatalf("after a late rollback report: got %v", st)
	}
}

func TestRolloutAgentNeverComesBackOrRefuses(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.UpgradeReconnectMargin = 200 * time.Millisecond })
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	gone := newFakeAgent(t, ts, "gone", "Prod", "1.0.0")
	gone.set(func(f *fakeAgent) { f.mode = fakeVanish })
	refuse := newFakeAgent(t, ts, "refuse", "Prod", "1.0.0")
	refuse.set(func(f *fakeAgent) { f.mode = fakeRefuse })
	v, err := ts.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Prod", MaxFailures: new(5), GraceSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	v = ts.waitRollout(t, v.ID)
	if v.State != api.RolloutSucceeded || v.Reason != "2 failures, within the maximum of 5" {
		t.Fatalf("got %s (%s)", v.State, v.Reason)
	}
	for _, a := range v.Agents {
		var want string
		switch a.Agent {
		case "gone":
			want = "the agent did not come back within 1s"
		case "refuse":
			want = "the agent refused the upgrade: package signature does not verify"
		}
		if a.State != api.UpgradeFailed || a.Reason != want {
			t.Errorf("%s: got %s %q, want failed %q", a.Agent, a.State, a.Reason, want)
		}
	}
}

func TestRolloutWaitsForIdle(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.UpgradeIdleTimeout = time.Minute })
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	f := newFakeAgent(t, ts, "busy", "Prod", "1.0.0")
	// After its first health check, whose idle answer could otherwise
	// land after the busy one.
	makeBusy(t, ts, f)
	v, err := ts.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Prod"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "waiting_for_idle", func() bool { return agentStates(ts.rollout(t, v.ID))["busy"] == api.UpgradeWaitingForIdle })
	time.Sleep(3 * time.Second) // at least one periodic re-check (every 2 s)
	if f.offerCount() != 0 {
		t.Fatal("a busy agent was sent the upgrade")
	}
	f.set(func(f *fakeAgent) { f.running = 0 })
	ts.checkAllHealth()
	if v = ts.waitRollout(t, v.ID); v.State != api.RolloutSucceeded {
		t.Fatalf("got %s (%s)", v.State, v.Reason)
	}

	// Never idle, and never connected: each fails at the idle timeout.
	ts.stop()
	ts2 := runServer(t, ts.dir, func(c *Config) { c.UpgradeIdleTimeout = 300 * time.Millisecond })
	ts2.pushPackage(t, "3.0.0", "linux", "amd64")
	f.set(func(f *fakeAgent) { f.ts, f.busy, f.running = ts2, true, 1 })
	f.connect()
	v, err = ts2.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Prod"})
	if err != nil {
		t.Fatal(err)
	}
	v = ts2.waitRollout(t, v.ID)
	if v.State != api.RolloutHalted || !strings.HasPrefix(v.Agents[0].Reason, "agent stayed busy") {
		t.Fatalf("busy agent: got %s, %+v", v.State, v.Agents)
	}
	f.set(func(f *fakeAgent) { f.peer.sess.Close() })
	eventually(t, "busy disconnected", func() bool { return !ts2.agentView(t, "busy").Connected })
	v, err = ts2.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Prod"})
	if err != nil {
		t.Fatal(err)
	}
	v = ts2.waitRollout(t, v.ID)
	if !strings.HasPrefix(v.Agents[0].Reason, "agent was not connected") {
		t.Fatalf("disconnected agent: got %+v", v.Agents)
	}
}

func TestRolloutResumesAfterCoordinatorRestart(t *testing.T) {
	ts := startServer(t, nil)
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	a := newFakeAgent(t, ts, "a", "Prod", "1.0.0")
	b := newFakeAgent(t, ts, "b", "Prod", "1.0.0")
	b.set(func(f *fakeAgent) { f.running = 1 }) // holds batch 2 back until after the restart
	ts.checkAllHealth()
	v, err := ts.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Prod", Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a upgraded, b waiting", func() bool {
		st := agentStates(ts.rollout(t, v.ID))
		return st["a"] == api.UpgradeSucceeded && st["b"] == api.UpgradeWaitingForIdle
	})
	ts.stop()
	ts2 := runServer(t, ts.dir, nil)
	if got := ts2.rollout(t, v.ID); got.State != api.RolloutRunning || agentStates(got)["a"] != api.UpgradeSucceeded {
		t.Fatalf("after restart: got %s %v", got.State, agentStates(got))
	}
	b.set(func(f *fakeAgent) { f.ts, f.running = ts2, 0 })
	b.connect()
	a.set(func(f *fakeAgent) { f.ts = ts2 })
	a.connect()
	welcomed := b.welcomeCount()
	if v = ts2.waitRollout(t, v.ID); v.State != api.RolloutSucceeded || v.Counts[api.UpgradeSucceeded] != 2 {
		t.Fatalf("got %s (%s) %v", v.State, v.Reason, agentStates(v))
	}
	// Success is concluded from b's new Hello, before its Welcome is
	// written; let that session finish starting before the test ends.
	eventually(t, "b welcomed at the new version", func() bool { return b.welcomeCount() > welcomed })
	if a.offerCount() != 1 || b.offerCount() != 1 {
		t.Errorf("offers: a %d, b %d; want one each", a.offerCount(), b.offerCount())
	}
}

func TestRolloutBadRequests(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.UpgradeIdleTimeout = time.Minute })
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	ts.pushPackage(t, "3.0.0", "windows", "amd64")
	busy := newFakeAgent(t, ts, "web-1", "Prod", "1.0.0")
	busy.set(func(f *fakeAgent) { f.running = 1 })
	ts.checkAllHealth()
	newFakeAgent(t, ts, "new-1", "Newer", "9.0.0")
	running, err := ts.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Prod", Version: "2.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		req  api.RolloutRequest
		kind error
		want string
	}{
		{"neither", api.RolloutRequest{}, kind.ErrBadRequest, "give exactly one of an environment, all or a list of agents"},
		{"both", api.RolloutRequest{Environment: "Prod", All: true}, kind.ErrBadRequest, "give exactly one of an environment, all or a list of agents"},
		{"agents and all", api.RolloutRequest{Agents: []string{"web-1"}, All: true}, kind.ErrBadRequest, "give exactly one of an environment, all or a list of agents"},
		{"unknown agents", api.RolloutRequest{Agents: []string{"nobody", "web-1", "WEB-1", "nobody"}}, store.ErrNotFound, `no agent named "nobody", "WEB-1" (`},
		{"empty agent name", api.RolloutRequest{Agents: []string{""}}, kind.ErrBadRequest, "an agent name is empty"},
		{"named agent already in a rollout", api.RolloutRequest{Agents: []string{"web-1"}, Version: "2.0.0"}, kind.ErrConflict, "rollout " + running.ID + " is still running on web-1"},
		{"empty environment", api.RolloutRequest{Environment: "Nowhere"}, store.ErrNotFound, `environment "Nowhere" has no agents`},
		{"version with no package", api.RolloutRequest{Environment: "Prod", Version: "2.5.0"}, store.ErrNotFound, "no agent package of version 2.5.0"},
		{"platform with no package", api.RolloutRequest{Environment: "Prod", Version: "3.0.0"}, kind.ErrBadRequest, "no agent package 3.0.0 for web-1 (linux/amd64)"},
		{"second rollout on the same agents", api.RolloutRequest{All: true, Version: "2.0.0", AllowDowngrade: true}, kind.ErrConflict, "rollout " + running.ID + " is still running on web-1"},
		{"downgrade", api.RolloutRequest{Environment: "Newer", Version: "2.0.0"}, kind.ErrBadRequest, "upgrading new-1 (at 9.0.0) to 2.0.0 would be a downgrade; use --allow-downgrade"},
		{"negative batch", api.RolloutRequest{Environment: "Prod", Batch: -1}, kind.ErrBadRequest, "must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.rollouts.StartRollout(context.Background(), tc.req)
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %v containing %q", err, tc.kind, tc.want)
			}
		})
	}
	// Downgrading is allowed when asked for.
	if _, err := ts.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Newer", Version: "2.0.0", AllowDowngrade: true}); err != nil {
		t.Fatalf("allowed downgrade: %v", err)
	}
}

// TestRolloutUpgradesAgentBelowMinimumProtocol: a coordinator whose
// minimum protocol is above an old agent's still gives it an upgrade-only
// session, refuses it tasks, and upgrades it; an agent already current
// works beside it. The agents are simulated: a real binary speaking an
// older protocol would need a protocol this code base has not had yet.
func TestRolloutUpgradesAgentBelowMinimumProtocol(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.ProtocolMin, c.ProtocolMax = 2, 2 })
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	old := newFakeAgent(t, ts, "old", "Test", "1.0.0")
	old.set(func(f *fakeAgent) { f.newProto = 2 })
	current := newFakeAgent(t, ts, "current", "Test", "2.0.0")
	current.set(func(f *fakeAgent) { f.proto = 2 })
	current.peer.sess.Close()
	current.connect() // again, speaking protocol 2
	eventually(t, "current reconnected at protocol 2", func() bool {
		v := ts.agentView(t, "current")
		return v.Connected && v.Protocol == 2
	})
	ts.waitConnected(t, "old")
	ts.waitConnected(t, "current")
	if v := ts.agentView(t, "old"); v.Upgrade != api.UpgradeRequired || v.Protocol != 1 {
		t.Fatalf("old agent before: got upgrade %q protocol %d, want required at protocol 1", v.Upgrade, v.Protocol)
	}
	if v := ts.agentView(t, "current"); v.Upgrade != api.UpgradeNone || v.Protocol != 2 {
		t.Fatalf("current agent: got upgrade %q protocol %d, want none at protocol 2", v.Upgrade, v.Protocol)
	}
	r, err := ts.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Test", Version: "2.0.0", Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	if v := ts.waitRollout(t, r.ID); v.State != "succeeded" {
		t.Fatalf("rollout: got %s (%s), want succeeded", v.State, v.Reason)
	}
	eventually(t, "old agent upgraded to protocol 2", func() bool {
		v := ts.agentView(t, "old")
		return v.Connected && v.Version == "2.0.0" && v.Protocol == 2 && v.Upgrade == api.UpgradeNone
	})
}

// TestRolloutBusyAtOfferWaits: a task that starts between the idle check
// and the offer makes the agent answer busy; the rollout waits for idle
// again and then upgrades it, counting no failure.
func TestRolloutBusyAtOfferWaits(t *testing.T) {
	ts := startServer(t, nil)
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	f := newFakeAgent(t, ts, "web-1", "Test", "1.0.0")
	f.set(func(f *fakeAgent) { f.mode = fakeBusyOnce })
	ts.waitConnected(t, "web-1")
	r, err := ts.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Test", Version: "2.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	v := ts.waitRollout(t, r.ID)
	if v.State != "succeeded" || f.offerCount() != 2 {
		t.Fatalf("got %s (%s) after %d offers, want succeeded after 2", v.State, v.Reason, f.offerCount())
	}
}
