//go:build !windows

package agent

import (
	"errors"
	"testing"
	"time"

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
		exe, _ := standInExe(t)
		a, addr, done := runListening(t, coord, func(cfg *Config) { cfg.exe, cfg.SimulateUpgradeSwap = exe, true })
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
