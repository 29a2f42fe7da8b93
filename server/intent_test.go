package server

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/kind"
)

// TestRogueCoordinatorWithOnlyTheTLSKey: a party that holds the
// coordinator's TLS key and its database, but not its signing key, runs a
// coordinator in its place. The agent connects (the TLS key is the one it
// pinned) but refuses to run its scripts, take its bundles, or be
// downgraded by it, whether the rogue signs with a key of its own or not
// at all; and the real coordinator, back, drives it as before.
func TestRogueCoordinatorWithOnlyTheTLSKey(t *testing.T) {
	addr := servertest.FreeAddr(t)
	listen := func(c *Config) { c.Listen = addr }
	real := startServer(t, listen)
	ra := real.readyAgent(t, "web-1", nil)
	if st, err := agent.LoadState(ra.home); err != nil || !st.SignedRequests {
		t.Fatalf("agent state after registering: got %+v, %v; want signed requests required", st, err)
	}
	first := real.waitFinished(t, real.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", "echo signed"}}).ID)
	if first.State != api.TaskSucceeded {
		t.Fatalf("a task from the real coordinator: got %s (%s)", first.State, first.Error)
	}
	real.stop()

	// The rogue: the same data folder but another signing key.
	realKey, err := os.ReadFile(filepath.Join(real.dir, datadir.SigningFile))
	if err != nil {
		t.Fatal(err)
	}
	rogueKey, err := certs.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := rogueKey.Save(filepath.Join(real.dir, datadir.SigningFile)); err != nil {
		t.Fatal(err)
	}
	rogue := runServer(t, real.dir, listen)
	rogue.waitConnected(t, "web-1")
	eventually(t, "the agent connected to the rogue", func() bool { return ra.Status().Connected })

	task := rogue.waitFinished(t, rogue.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", "echo pwned > " + filepath.Join(t.TempDir(), "pwned")}}).ID)
	if task.State != api.TaskFailed || !strings.Contains(task.Error, "not signed by the coordinator's signing key this agent trusts") {
		t.Errorf("the rogue's task: got %s (%s), want failed, refused for its signature", task.State, task.Error)
	}

	as := rogue.sessions.get(rogue.agentView(t, "web-1").ID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	down := protocol.AgentUpgrade{Package: protocol.AgentPackage{Version: "0.0.1", OS: "linux", Arch: "amd64", SHA256: strings.Repeat("a", 64), Size: 3},
		AllowDowngrade: true}
	for _, tt := range []struct {
		name string
		sign protocol.Signer
		want string
	}{
		{"signed with its own key", as.sign, "not signed by the coordinator's signing key this agent trusts"},
		{"unsigned", nil, "takes only signed requests"},
	} {
		_, err := protocol.PushSigned(ctx, as.sess, tt.sign, protocol.TypeAgentUpgrade, down, bytes.NewReader([]byte("abc")), 3, protocol.TypeUpgradeReady, nil, nil)
		if !protocol.IsCode(err, protocol.CodeUnauthorized) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("downgrade %s: got %v, want refused saying %q", tt.name, err, tt.want)
		}
		err = protocol.CallSigned(ctx, as.sess, tt.sign, protocol.TypeCalamariPush, protocol.CalamariPush{Version: "6.6.6"}, protocol.TypeCalamariInstalled, nil)
		if !protocol.IsCode(err, protocol.CodeUnauthorized) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Calamari push %s: got %v, want refused saying %q", tt.name, err, tt.want)
		}
		err = protocol.CallSigned(ctx, as.sess, tt.sign, protocol.TypeTaskStart, protocol.TaskStart{Ticket: "rogue", Calamari: "1.0.0", Args: []string{"run-script"}}, protocol.TypeTaskStarted, nil)
		if !protocol.IsCode(err, protocol.CodeUnauthorized) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("task start %s: got %v, want refused saying %q", tt.name, err, tt.want)
		}
	}
	rogue.stop()

	// The real coordinator is back: the agent takes its requests again.
	if err := os.WriteFile(filepath.Join(real.dir, datadir.SigningFile), realKey, 0o600); err != nil {
		t.Fatal(err)
	}
	back := runServer(t, real.dir, listen)
	back.waitConnected(t, "web-1")
	eventually(t, "the agent connected to the real coordinator again", func() bool { return ra.Status().Connected })
	if again := back.waitFinished(t, back.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", "echo signed again"}}).ID); again.State != api.TaskSucceeded {
		t.Errorf("a task from the real coordinator after the rogue: got %s (%s)", again.State, again.Error)
	}
}

// TestRotationsWhileAgentAway: three coordinator certificate rotations
// while an agent is away, and it reconnects, trusting the certificate the
// signing key endorsed. An agent that cannot check endorsements (the test
// peer, as an older release) makes the rotation that would lock it out
// refused, naming it, unless forced.
func TestRotationsWhileAgentAway(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	ra := ts.readyAgent(t, "web-1", nil)
	old := enrolled(t, ts, "old-1") // says no features in its Hello
	for _, name := range []string{"web-1", "old-1"} {
		eventually(t, name+" acknowledged the current certificate", func() bool {
			a, err := ts.store.AgentByName(ctx, name)
			return err == nil && a.ServerThumbprintAck == ts.Thumbprint()
		})
	}
	ra.stop()
	old.sess.Close()
	eventually(t, "both away", func() bool { return !ts.agentView(t, "web-1").Connected && !ts.agentView(t, "old-1").Connected })

	first, err := ts.RotateCertificate(ctx, false)
	if err != nil || len(first.Behind) != 0 {
		t.Fatalf("first rotation: got %+v, %v; want nobody behind (both had learned the certificate it replaces)", first, err)
	}
	_, err = ts.RotateCertificate(ctx, false)
	if !errors.Is(err, kind.ErrConflict) || !strings.Contains(err.Error(), "rotating now would lock out old-1") {
		t.Fatalf("second rotation: got %v, want it refused for old-1", err)
	}
	second, err := ts.RotateCertificate(ctx, true)
	if err != nil || !slices.Equal(second.Behind, []string{"old-1", "web-1"}) || !slices.Equal(second.Stranded, []string{"old-1"}) {
		t.Fatalf("forced second rotation: got %+v, %v; want both behind, old-1 stranded", second, err)
	}
	if _, err := ts.RotateCertificate(ctx, true); err != nil {
		t.Fatal(err)
	}

	back := startAgent(t, ra.home, nil)
	ts.waitConnected(t, "web-1")
	eventually(t, "web-1 back after three rotations", func() bool { return back.Status().Connected })
	st, err := agent.LoadState(ra.home)
	if err != nil || st.ServerThumbprints[0] != ts.Thumbprint() {
		t.Fatalf("agent state: got %v (%v), want the current thumbprint %s first", st.ServerThumbprints, err, ts.Thumbprint())
	}
	if task := ts.waitFinished(t, ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", "echo back"}}).ID); task.State != api.TaskSucceeded {
		t.Errorf("a task after the rotations: got %s (%s)", task.State, task.Error)
	}
}
