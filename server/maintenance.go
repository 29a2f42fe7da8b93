package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tendrildeploy/tendril/api"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// settingMaintenance is the settings key that holds the maintenance state,
// so that it survives a restart: a coordinator restarted in the middle of
// an upgrade must not start taking tasks again on its own.
const settingMaintenance = "maintenance"

// maintenanceMessage is what a refused request says, with the way out.
const maintenanceMessage = "the coordinator is in maintenance mode; no new tasks start (turn it off with: tendril-server maintenance off)"

// maintenance is the coordinator's copy of the stored state. Starting work
// holds the read lock from the check until the work is stored, and
// switching takes the write lock, so once SetMaintenance(on) returns no
// request that passed the check is still about to create a task: a drain
// that then sees no unfinished task has truly seen the last one.
type maintenance struct {
	mu    sync.RWMutex
	on    bool
	since time.Time
}

// storedMaintenance is the JSON kept under settingMaintenance.
type storedMaintenance struct {
	On    bool      `json:"on"`
	Since time.Time `json:"since,omitzero"`
}

// loadMaintenance reads the stored state at start.
func (s *Server) loadMaintenance(ctx context.Context) error {
	v, err := s.store.Setting(ctx, settingMaintenance)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load maintenance state: %w", err)
	}
	var sm storedMaintenance
	if err := json.Unmarshal([]byte(v), &sm); err != nil {
		return fmt.Errorf("load maintenance state: setting %q: %w", settingMaintenance, err)
	}
	s.maint.on, s.maint.since = sm.On, sm.Since
	return nil
}

// reloadMaintenance reads the stored state again: another node changed
// it.
func (s *Server) reloadMaintenance(ctx context.Context) {
	s.maint.mu.Lock()
	defer s.maint.mu.Unlock()
	was := s.maint.on
	if err := s.loadMaintenance(ctx); err != nil {
		if ctx.Err() == nil {
			s.log.Error("reload maintenance state failed", zap.Error(err))
		}
		return
	}
	if s.maint.on != was {
		s.log.Info("maintenance mode changed through another node", zap.Bool("on", s.maint.on))
	}
}

// beginWork takes the read lock that new work holds until it is stored,
// and refuses with kind.ErrConflict while maintenance is on. The caller calls
// the returned function when the work is stored (or refused).
func (s *Server) beginWork() (func(), error) {
	s.maint.mu.RLock()
	if s.maint.on {
		s.maint.mu.RUnlock()
		return nil, kind.Errorf(kind.ErrConflict, maintenanceMessage)
	}
	return s.maint.mu.RUnlock, nil
}

// SetMaintenance turns maintenance mode on or off and stores it. Turning
// it on again keeps the original since.
func (s *Server) SetMaintenance(ctx context.Context, on bool) (api.MaintenanceView, error) {
	s.maint.mu.Lock()
	sm := storedMaintenance{On: on}
	if on {
		sm.Since = s.maint.since
		if !s.maint.on || sm.Since.IsZero() {
			sm.Since = time.Now().UTC().Truncate(time.Second)
		}
	}
	b, err := json.Marshal(sm)
	if err == nil {
		err = s.store.SetSetting(ctx, settingMaintenance, string(b))
	}
	if err != nil {
		s.maint.mu.Unlock()
		return api.MaintenanceView{}, fmt.Errorf("set maintenance mode: %w", err)
	}
	changed := s.maint.on != on
	s.maint.on, s.maint.since = sm.On, sm.Since
	s.maint.mu.Unlock()
	if changed {
		s.log.Info("maintenance mode changed", zap.Bool("on", on))
	}
	// The other nodes share the database but keep their own copy.
	s.notifyCluster(cluster.NotifyMaintenance)
	return s.Maintenance(ctx)
}

// Maintenance returns the state and what is still running.
func (s *Server) Maintenance(ctx context.Context) (api.MaintenanceView, error) {
	s.maint.mu.RLock()
	v := api.MaintenanceView{On: s.maint.on}
	if s.maint.on && !s.maint.since.IsZero() {
		since := s.maint.since
		v.Since = &since
	}
	s.maint.mu.RUnlock()
	// The store, not this process's runners, is the truth: a task resumed
	// after a restart counts until its result is collected.
	ts, err := s.store.ListTasks(ctx, store.TaskFilter{Unfinished: true, Limit: 1 << 20})
	if err != nil {
		return api.MaintenanceView{}, fmt.Errorf("maintenance state: %w", err)
	}
	for _, t := range ts {
		if t.State == store.TaskRunning {
			v.RunningTasks++
		} else {
			v.QueuedTasks++
		}
	}
	rs, err := s.store.Rollouts(ctx, true, 1<<20)
	if err != nil {
		return api.MaintenanceView{}, fmt.Errorf("maintenance state: %w", err)
	}
	// A halted rollout with nothing in flight does no work until it is
	// resumed, which maintenance mode refuses: a drain need not wait for it.
	if v.RunningRollouts, err = s.rollouts.BusyRollouts(ctx, rs); err != nil {
		return api.MaintenanceView{}, fmt.Errorf("maintenance state: %w", err)
	}
	return v, nil
}
