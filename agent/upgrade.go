package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/agent/upgrade"
	"github.com/tendrildeploy/tendril/protocol"
)

// restartFlush is how long the agent waits, after UpgradeReady, for the
// coordinator to close the stream before it closes the session itself, so
// the reply is not lost to a reset.
const restartFlush = time.Second

// handleAgentUpgrade receives a new agent binary: a refusal, or PushReady
// with the offset to resume from, the bytes, then UpgradeReady once the
// binary is verified, smoke-tested and swapped in (or an error). After
// UpgradeReady the session closes and Run returns ErrRestart.
func (a *Agent) handleAgentUpgrade(s *liveSession, st *yamux.Stream, f protocol.Frame) error {
	var req protocol.AgentUpgrade
	if err := f.Decode(&req); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	// One upgrade at a time; a second one waits a little, so a retry
	// that arrives while the first is still returning is not refused.
	wait := time.NewTimer(streamTimeout / 2)
	select {
	case a.upgradeSlot <- struct{}{}:
		wait.Stop()
	case <-wait.C:
		return protocol.WriteError(st, protocol.CodeConflict, "another agent upgrade is being received")
	case <-s.ctx.Done():
		wait.Stop()
		return nil
	}
	defer func() { <-a.upgradeSlot }()
	p := upgrade.Params{
		Home:       a.cfg.Home,
		Exe:        a.cfg.exe,
		Running:    a.cfg.Version,
		SigningKey: a.signingKey(),
		// handle checked the signature of every request that has one.
		SignedRequest: f.Intent != nil,
		Supervised:    a.cfg.Supervised,
		Service:       a.cfg.Service,
		Args:          a.cfg.args,
		Logger:        a.log,

		SimulateSwap: a.cfg.SimulateUpgradeSwap,
	}
	if p.Exe == "" && !p.SimulateSwap {
		return a.replyFailure(st, f.Type, errors.New("upgrade: cannot find the agent's own binary"))
	}
	// Tasks stop starting before the running ones are counted, so none
	// starts between the count and the restart.
	a.gate.Lock()
	a.upgrading = true
	running := a.tasks.Running()
	a.gate.Unlock()
	restarting := false
	defer func() {
		if !restarting {
			a.gate.Lock()
			a.upgrading = false
			a.gate.Unlock()
		}
	}()
	if err := upgrade.Check(p, req, running); err != nil {
		a.log.Info("upgrade refused", zap.String("to", req.Package.Version), zap.String("reason", err.Error()))
		return a.replyFailure(st, f.Type, err)
	}
	ls := newLongStream(st)
	if err := protocol.WriteFrame(ls, protocol.TypePushReady, protocol.PushReady{Offset: upgrade.Offset(p, req)}); err != nil {
		return err
	}
	// Not the session's context: once the bytes are in, the upgrade
	// finishes (or fails and says so) even if the session drops, rather
	// than stop between two steps.
	swapped, err := upgrade.Install(context.WithoutCancel(s.ctx), p, req, ls)
	a.reloadUpgrade()
	if err != nil {
		if interrupted(err) {
			a.log.Info("upgrade transfer interrupted; kept what arrived", zap.String("to", req.Package.Version), zap.Error(err))
			return nil
		}
		if upgrade.IsRefused(err) {
			a.log.Warn("upgrade failed", zap.String("to", req.Package.Version), zap.String("reason", err.Error()))
		}
		return a.replyFailure(ls, f.Type, err)
	}
	restarting = true
	werr := protocol.WriteFrame(ls, protocol.TypeUpgradeReady, protocol.UpgradeReady{From: swapped.From, To: swapped.To})
	st.SetReadDeadline(time.Now().Add(restartFlush))
	io.Copy(io.Discard, st) // returns when the coordinator closes, or at the deadline
	// Only now: a listening agent closes its session as soon as a restart
	// is requested, which would cut UpgradeReady off, and the coordinator
	// would take the installed upgrade for a broken transfer.
	a.requestRestart()
	s.ys.Close()
	if werr != nil {
		return fmt.Errorf("upgrade ready: %w", werr)
	}
	return nil
}

func (a *Agent) signingKey() string {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	return a.state.SigningKey
}

// recoverUpgrade reads the last upgrade's state when Run starts (holding
// the home lock) and settles what a restart says about it: the new
// version running means a commit is due at the next Welcome; the old one
// running after a swap means the new one never took over; a crash before
// the swap means the upgrade failed.
func (a *Agent) recoverUpgrade() {
	st, ok, err := upgrade.Load(a.cfg.Home)
	if err != nil {
		a.log.Warn("could not read the upgrade state; the last upgrade goes unreported", zap.Error(err))
		return
	}
	if !ok {
		return
	}
	settle := func(phase upgrade.Phase, reason string) {
		st.Phase, st.Reason, st.Reported = phase, reason, false
		if err := upgrade.Save(a.cfg.Home, st); err != nil {
			a.log.Warn("could not record the upgrade's outcome", zap.Error(err))
		}
	}
	switch st.Phase {
	case upgrade.PhaseSwapped:
		switch a.cfg.Version {
		case st.To:
			a.log.Info("running the new version; the upgrade commits once the coordinator welcomes it", zap.String("from", st.From), zap.String("to", st.To))
		case st.From:
			a.log.Warn("the upgrade was rolled back: the new version did not start", zap.String("from", st.From), zap.String("to", st.To))
			settle(upgrade.PhaseRolledBack, "the new version did not start")
		default:
			settle(upgrade.PhaseFailed, fmt.Sprintf("the agent started at version %s, neither %s nor %s", a.cfg.Version, st.From, st.To))
		}
	case upgrade.PhaseReceived:
		if err := upgrade.RemoveStaged(a.cfg.Home); err != nil {
			a.log.Warn("could not remove the staged upgrade", zap.Error(err))
		}
		settle(upgrade.PhaseFailed, "the agent stopped before the upgrade was applied")
	}
	a.upMu.Lock()
	a.up = &st
	a.upMu.Unlock()
}

// reloadUpgrade takes the state an upgrade step wrote as what the next
// Hello reports.
func (a *Agent) reloadUpgrade() {
	st, ok, err := upgrade.Load(a.cfg.Home)
	if err != nil || !ok {
		return // Install said why; the report is best effort
	}
	a.upMu.Lock()
	a.up = &st
	a.upMu.Unlock()
}

// upgradeReport is the Hello's report of the last upgrade, until a
// Welcome acknowledges it.
func (a *Agent) upgradeReport() *protocol.UpgradeReport {
	a.upMu.Lock()
	defer a.upMu.Unlock()
	st := a.up
	if st == nil || st.Reported {
		return nil
	}
	r := &protocol.UpgradeReport{RolloutID: st.RolloutID, From: st.From, To: st.To, Reason: st.Reason}
	switch st.Phase {
	case upgrade.PhaseSwapped:
		if a.cfg.Version != st.To {
			return nil // this process swapped; its successor reports
		}
		r.Result, r.Reason = protocol.UpgradeCommitted, ""
	case upgrade.PhaseCommitted:
		r.Result = protocol.UpgradeCommitted
	case upgrade.PhaseRolledBack:
		r.Result = protocol.UpgradeRolledBack
	case upgrade.PhaseFailed:
		r.Result = protocol.UpgradeFailed
	default:
		return nil
	}
	return r
}

// upgradeWelcomed commits a swapped upgrade once the new version was
// welcomed (this is what the watchdog waits for), and stops reporting the
// outcome once the coordinator acknowledged it.
func (a *Agent) upgradeWelcomed(sent *protocol.UpgradeReport, w protocol.Welcome) {
	if sent == nil {
		return
	}
	a.upMu.Lock()
	defer a.upMu.Unlock()
	if a.up == nil {
		return
	}
	st := *a.up
	commit := st.Phase == upgrade.PhaseSwapped && a.cfg.Version == st.To
	if commit {
		st.Phase, st.Reason = upgrade.PhaseCommitted, ""
	}
	ack := w.UpgradeAcknowledged && !st.Reported
	if ack {
		st.Reported = true
	}
	if !commit && !ack {
		return
	}
	if err := upgrade.Save(a.cfg.Home, st); err != nil {
		a.log.Error("could not record the upgrade's commit; the watchdog will restore the previous version", zap.Error(err))
		return
	}
	a.up = &st
	if commit {
		a.log.Info("upgrade committed", zap.String("from", st.From), zap.String("to", st.To), zap.String("rollout", st.RolloutID))
	}
	if st.Reported && st.Phase != upgrade.PhaseSwapped && st.Phase != upgrade.PhaseReceived {
		// Staged packages are of no more use: a committed one is in
		// place, any other failed. Previous stays until the next upgrade.
		if err := upgrade.RemoveStaged(a.cfg.Home); err != nil {
			a.log.Warn("could not remove the staged upgrade", zap.Error(err))
		}
	}
}
