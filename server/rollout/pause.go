package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// An operator can halt a running rollout: no further batch starts, while
// the agents of the batch already started finish their upgrade; resuming
// lets the next batch start. The rollout stays "running" in the store
// throughout (it is unfinished, its agents still belong to it, and a
// restart resumes its engine), and the halt is kept beside it as a
// setting, so that it survives a restart and every coordinator node
// sharing the database sees it before starting a batch.

// settingRolloutPaused prefixes the settings key, followed by the
// rollout's ID, that holds an operator's halt.
const settingRolloutPaused = "rollout-paused/"

// storedPause is the JSON kept under settingRolloutPaused+ID. Resuming
// stores Paused false rather than deleting the key: the store has no
// delete, and a finished rollout's key is never read again.
type storedPause struct {
	Paused bool      `json:"paused"`
	At     time.Time `json:"at,omitzero"`
}

// rolloutPause returns whether an operator halted the rollout, and when.
func (e *Engine) rolloutPause(ctx context.Context, id string) (storedPause, error) {
	v, err := e.st.Setting(ctx, settingRolloutPaused+id)
	if errors.Is(err, store.ErrNotFound) {
		return storedPause{}, nil
	}
	if err != nil {
		return storedPause{}, fmt.Errorf("read halt of rollout %s: %w", id, err)
	}
	var p storedPause
	if err := json.Unmarshal([]byte(v), &p); err != nil {
		return storedPause{}, fmt.Errorf("read halt of rollout %s: %w", id, err)
	}
	return p, nil
}

func (e *Engine) setRolloutPause(ctx context.Context, id string, p storedPause) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := e.st.SetSetting(ctx, settingRolloutPaused+id, string(b)); err != nil {
		return fmt.Errorf("record halt of rollout %s: %w", id, err)
	}
	return nil
}

// runningRollout loads a rollout that an operator wants to halt or
// resume: it must exist and not have finished.
func (e *Engine) runningRollout(ctx context.Context, id, verb string) (store.Rollout, error) {
	r, err := e.st.Rollout(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Rollout{}, kind.Errorf(kind.ErrNotFound, "no rollout %q (see GET /api/rollouts or tendril-server rollout list)", id)
	}
	if err != nil {
		return store.Rollout{}, fmt.Errorf("%s rollout %s: %w", verb, id, err)
	}
	if r.State != api.RolloutRunning {
		return store.Rollout{}, kind.Errorf(kind.ErrConflict, "rollout %s has already finished (%s: %s); there is nothing to %s; start a new one to upgrade more agents",
			id, r.State, r.Reason, verb)
	}
	return r, nil
}

// HaltRollout stops a running rollout from starting its next batch.
// Agents of a batch already started finish their upgrade. Halting a
// halted rollout changes nothing.
func (e *Engine) HaltRollout(ctx context.Context, id string) (api.RolloutView, error) {
	if _, err := e.runningRollout(ctx, id, "halt"); err != nil {
		return api.RolloutView{}, err
	}
	p, err := e.rolloutPause(ctx, id)
	if err != nil {
		return api.RolloutView{}, err
	}
	if !p.Paused {
		if err := e.setRolloutPause(ctx, id, storedPause{Paused: true, At: time.Now().UTC().Truncate(time.Second)}); err != nil {
			return api.RolloutView{}, err
		}
		e.log.Info("rollout halted by an operator", zap.String("rollout", id))
		e.state.notify()
	}
	return e.Rollout(ctx, id)
}

// ResumeRollout lets a halted rollout start its next batch. It is new
// work, so maintenance mode refuses it. Resuming a rollout that is not
// halted changes nothing.
func (e *Engine) ResumeRollout(ctx context.Context, id string) (api.RolloutView, error) {
	if _, err := e.runningRollout(ctx, id, "resume"); err != nil {
		return api.RolloutView{}, err
	}
	done, err := e.fleet.BeginWork()
	if err != nil {
		return api.RolloutView{}, err
	}
	defer done()
	p, err := e.rolloutPause(ctx, id)
	if err != nil {
		return api.RolloutView{}, err
	}
	if p.Paused {
		if err := e.setRolloutPause(ctx, id, storedPause{}); err != nil {
			return api.RolloutView{}, err
		}
		e.log.Info("rollout resumed by an operator", zap.String("rollout", id))
		e.state.notify()
	}
	return e.Rollout(ctx, id)
}

// withPause adds an operator's halt to a rollout's view.
func (e *Engine) withPause(ctx context.Context, v api.RolloutView) (api.RolloutView, error) {
	if v.State != api.RolloutRunning {
		return v, nil
	}
	p, err := e.rolloutPause(ctx, v.ID)
	if err != nil {
		return api.RolloutView{}, err
	}
	if p.Paused {
		at := p.At
		v.Paused, v.PausedAt = true, &at
	}
	return v, nil
}

// batchStarted reports whether any agent of batch b has left the queue
// without reaching a final state: the batch is under way and, halted or
// not, runs to its end.
func batchStarted(agents []store.RolloutAgent, b int) bool {
	for _, a := range agents {
		if a.Batch == b && a.State != api.UpgradeQueued && !api.UpgradeFinal(a.State) {
			return true
		}
	}
	return false
}

// pausePoll is how often a halted rollout's engine reads the halt again:
// a resume through another coordinator node wakes nothing here.
const pausePoll = 2 * time.Second

// batchHeld reports whether batch b, not started yet, must wait because
// an operator halted the rollout. The first time it holds a batch back it
// says so on each of the batch's agents, where people look.
func (e *Engine) batchHeld(ctx context.Context, id string, agents []store.RolloutAgent, b int) bool {
	if batchStarted(agents, b) {
		return false
	}
	p, err := e.rolloutPause(ctx, id)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Error("read rollout halt failed", zap.String("rollout", id), zap.Error(err))
		}
		return true // look again rather than start a batch that may be halted
	}
	if !p.Paused {
		return false
	}
	reason := fmt.Sprintf("batch %d waits: the rollout was halted by an operator; resume it to go on", b)
	for _, a := range agents {
		if a.Batch == b && a.State == api.UpgradeQueued && a.Reason != reason {
			e.setUpgradeState(ctx, id, a.AgentID, []string{api.UpgradeQueued}, api.UpgradeQueued, reason)
		}
	}
	return true
}

// waitHeld waits, for a held batch, until something changes here (a
// resume through this node), pausePoll passes, or ctx ends.
func waitHeld(ctx context.Context, changed <-chan struct{}) {
	t := time.NewTimer(pausePoll)
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-ctx.Done():
	}
}

// BusyRollouts counts the running rollouts that still upgrade agents: a
// halted one counts only while agents of its started batch are in
// flight, since nothing more of it happens until someone resumes it.
func (e *Engine) BusyRollouts(ctx context.Context, rs []store.Rollout) (int, error) {
	n := 0
	for _, r := range rs {
		p, err := e.rolloutPause(ctx, r.ID)
		if err != nil {
			return 0, err
		}
		if !p.Paused {
			n++
			continue
		}
		agents, err := e.st.RolloutAgents(ctx, r.ID)
		if err != nil {
			return 0, fmt.Errorf("agents of rollout %s: %w", r.ID, err)
		}
		for _, a := range agents {
			if a.State != api.UpgradeQueued && !api.UpgradeFinal(a.State) {
				n++
				break
			}
		}
	}
	return n, nil
}
