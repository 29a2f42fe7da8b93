//go:build !windows

package agent

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/certs"
)

// TestListeningAgentAnswersUpgradeBeforeRestarting: a listening agent
// closes its session when it restarts into a new binary; the coordinator
// must still read UpgradeReady first, or it takes an installed upgrade
// for a cut transfer and sends it again to an agent that is gone.
func TestListeningAgentAnswersUpgradeBeforeRestarting(t *testing.T) {
	c := newTestCoordinator(t)
	coord, err := certs.NewIdentity("coordinator")
	if err != nil {
		t.Fatal(err)
	}
	data := simulatedPackage(t)
	for i := range 5 {
		home := filepath.Join(t.TempDir(), "home")
		addr, err := newClosedAddr()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := RegisterListening(ListenConfig{Home: home, Listen: addr, ServerThumbprints: []string{coord.Thumbprint}}); err != nil {
			t.Fatal(err)
		}
		exe, _ := standInExe(t)
		a, err := New(Config{Home: home, Version: "1.2.3", Logger: zaptest.NewLogger(t), exe: exe, SimulateUpgradeSwap: true})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- a.Run(context.Background()) }()
		eventually(t, "the agent listening", func() bool { return a.Status().Listening != "" })
		ys := dialListeningSigned(t, addr, coord, a.Status().Thumbprint, c.signer.Public())
		eventually(t, "the session", func() bool { return a.Status().Connected })
		ready, err := c.pushUpgrade(&coordSession{ys: ys}, c.upgradeOffer(data, "2.0.0"), data, -1)
		if err != nil || ready.To != "2.0.0" {
			t.Fatalf("upgrade %d: got %+v, %v, want UpgradeReady to 2.0.0", i, ready, err)
		}
		ys.Close()
		select {
		case err := <-done:
			if !errors.Is(err, ErrRestart) {
				t.Fatalf("Run after upgrade %d: got %v, want ErrRestart", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Run did not return after upgrade %d", i)
		}
	}
}
