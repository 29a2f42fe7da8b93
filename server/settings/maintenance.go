// Package settings holds the fleet-wide settings kept in the database,
// that every node applies: maintenance mode and the machine policy. Each
// node keeps a copy, read at start and again when another node announces
// a change (or at the next heartbeat, should the announcement be lost).
package settings

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// settingMaintenance is the settings key that holds the maintenance state,
// so that it survives a restart: a coordinator restarted in the middle of
// an upgrade must not start taking tasks again on its own.
const settingMaintenance = "maintenance"

// maintenanceMessage is what a refused request says, with the way out.
const maintenanceMessage = "the coordinator is in maintenance mode; no new tasks start (turn it off with: tendril-server maintenance off)"

// MaintenanceStore is the part of the store maintenance mode needs.
type MaintenanceStore interface {
	Setting(ctx context.Context, key string) (string, error)
	SetSetting(ctx context.Context, key, value string) error
	ListTasks(ctx context.Context, f store.TaskFilter) ([]store.Task, error)
	Rollouts(ctx context.Context, runningOnly bool, limit int) ([]store.Rollout, error)
}

// MaintenanceConfig configures Maintenance.
type MaintenanceConfig struct {
	Store MaintenanceStore
	// Announce tells the other nodes that the state changed.
	Announce func()
	// BusyRollouts counts the running rollouts that still upgrade agents.
	BusyRollouts func(ctx context.Context, rs []store.Rollout) (int, error)
	Logger       *zap.Logger
}

// Maintenance is a node's copy of maintenance mode. Starting work holds
// the read lock from the check until the work is stored, and switching
// takes the write lock, so once Set(on) returns no request that passed
// the check is still about to create a task: a drain that then sees no
// unfinished task has truly seen the last one.
type Maintenance struct {
	cfg MaintenanceConfig
	log *zap.Logger

	mu    sync.RWMutex
	on    bool
	since time.Time
}

// storedMaintenance is the JSON kept under settingMaintenance.
type storedMaintenance struct {
	On    bool      `json:"on"`
	Since time.Time `json:"since,omitzero"`
}

// LoadMaintenance reads the stored state.
func LoadMaintenance(ctx context.Context, cfg MaintenanceConfig) (*Maintenance, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	m := &Maintenance{cfg: cfg, log: cfg.Logger}
	if err := m.load(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Maintenance) load(ctx context.Context) error {
	v, err := m.cfg.Store.Setting(ctx, settingMaintenance)
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
	m.on, m.since = sm.On, sm.Since
	return nil
}

// Reload reads the stored state again: another node changed it.
func (m *Maintenance) Reload(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	was := m.on
	if err := m.load(ctx); err != nil {
		if ctx.Err() == nil {
			m.log.Error("reload maintenance state failed", zap.Error(err))
		}
		return
	}
	if m.on != was {
		m.log.Info("maintenance mode changed through another node", zap.Bool("on", m.on))
	}
}

// On reports whether maintenance mode is on.
func (m *Maintenance) On() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.on
}

// Begin takes the read lock that new work holds until it is stored, and
// refuses with kind.ErrConflict while maintenance is on. The caller calls
// the returned function when the work is stored (or refused).
func (m *Maintenance) Begin() (func(), error) {
	m.mu.RLock()
	if m.on {
		m.mu.RUnlock()
		return nil, kind.Errorf(kind.ErrConflict, maintenanceMessage)
	}
	return m.mu.RUnlock, nil
}

// Set turns maintenance mode on or off and stores it. Turning it on again
// keeps the original since.
func (m *Maintenance) Set(ctx context.Context, on bool) (api.MaintenanceView, error) {
	m.mu.Lock()
	sm := storedMaintenance{On: on}
	if on {
		sm.Since = m.since
		if !m.on || sm.Since.IsZero() {
			sm.Since = time.Now().UTC().Truncate(time.Second)
		}
	}
	b, err := json.Marshal(sm)
	if err == nil {
		err = m.cfg.Store.SetSetting(ctx, settingMaintenance, string(b))
	}
	if err != nil {
		m.mu.Unlock()
		return api.MaintenanceView{}, fmt.Errorf("set maintenance mode: %w", err)
	}
	changed := m.on != on
	m.on, m.since = sm.On, sm.Since
	m.mu.Unlock()
	if changed {
		m.log.Info("maintenance mode changed", zap.Bool("on", on))
	}
	// The other nodes share the database but keep their own copy.
	m.cfg.Announce()
	return m.View(ctx)
}

// View returns the state and what is still running.
func (m *Maintenance) View(ctx context.Context) (api.MaintenanceView, error) {
	m.mu.RLock()
	v := api.MaintenanceView{On: m.on}
	if m.on && !m.since.IsZero() {
		since := m.since
		v.Since = &since
	}
	m.mu.RUnlock()
	// The store, not this process's runners, is the truth: a task resumed
	// after a restart counts until its result is collected.
	ts, err := m.cfg.Store.ListTasks(ctx, store.TaskFilter{Unfinished: true, Limit: 1 << 20})
	if err != nil {
		return api.MaintenanceView{}, fmt.Errorf("maintenance state: %w", err)
	}
	for _, t := range ts {
		if t.State == api.TaskRunning {
			v.RunningTasks++
		} else {
			v.QueuedTasks++
		}
	}
	rs, err := m.cfg.Store.Rollouts(ctx, true, 1<<20)
	if err != nil {
		return api.MaintenanceView{}, fmt.Errorf("maintenance state: %w", err)
	}
	// A halted rollout with nothing in flight does no work until it is
	// resumed, which maintenance mode refuses: a drain need not wait for it.
	if v.RunningRollouts, err = m.cfg.BusyRollouts(ctx, rs); err != nil {
		return api.MaintenanceView{}, fmt.Errorf("maintenance state: %w", err)
	}
	return v, nil
}
