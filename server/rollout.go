package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/store"
)

// Rollout defaults.
const (
	// DefaultRolloutBatch is how many agents a rollout upgrades at once
	// unless told otherwise.
	DefaultRolloutBatch = 10
	// idleRecheck is how often an agent waiting for idle is re-checked
	// even without a health result or session change: a task finishing is
	// not broadcast.
	idleRecheck = 2 * time.Second
	// maxSendAttempts bounds transfers of one package to one agent cut
	// short by the connection (not refused by the agent).
	maxSendAttempts = 3
)

// RolloutRequest is the body of POST /api/rollouts.
type RolloutRequest struct {
	// Environment or All: exactly one.
	Environment string `json:"environment,omitempty"`
	All         bool   `json:"all,omitempty"`
	// Version is the agent version to install; "" means the newest
	// package stored.
	Version string `json:"version,omitempty"`
	// Batch is how many agents are upgraded at once; 0 means 10.
	Batch int `json:"batch,omitempty"`
	// MaxFailures is how many agents may fail or roll back before the
	// rollout halts; 0 halts at the first.
	MaxFailures    int  `json:"max_failures,omitempty"`
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
	// GraceSeconds is how long a new version has to connect and commit
	// before the agent's watchdog restores the previous one; 0 means the
	// coordinator's default (Config.UpgradeGrace).
	GraceSeconds int `json:"grace_seconds,omitempty"`
}

// RolloutView is a rollout as the API shows it.
type RolloutView struct {
	ID             string             `json:"id"`
	Environment    string             `json:"environment,omitempty"`
	All            bool               `json:"all"`
	Version        string             `json:"version"`
	Batch          int                `json:"batch"`
	MaxFailures    int                `json:"max_failures"`
	AllowDowngrade bool               `json:"allow_downgrade,omitempty"`
	GraceSeconds   int                `json:"grace_seconds"`
	State          string             `json:"state"`
	Reason         string             `json:"reason,omitempty"`
	CreatedAt      time.Time          `json:"created_at"`
	FinishedAt     *time.Time         `json:"finished_at,omitempty"`
	Counts         map[string]int     `json:"counts"`
	Agents         []RolloutAgentView `json:"agents,omitempty"`
}

// RolloutAgentView is one agent's progress in a rollout. Batch 0 holds
// the agents that were already at the version.
type RolloutAgentView struct {
	Agent     string    `json:"agent"`
	Batch     int       `json:"batch"`
	From      string    `json:"from"`
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

func rolloutView(r store.Rollout, agents []store.RolloutAgent, withAgents bool) RolloutView {
	v := RolloutView{ID: r.ID, Environment: r.Environment, All: r.Environment == "", Version: r.Version,
		Batch: r.Batch, MaxFailures: r.MaxFailures, AllowDowngrade: r.AllowDowngrade, GraceSeconds: r.GraceSeconds,
		State: r.State, Reason: r.Reason, CreatedAt: r.CreatedAt, Counts: map[string]int{}}
	if !r.FinishedAt.IsZero() {
		v.FinishedAt = &r.FinishedAt
	}
	for _, a := range agents {
		v.Counts[a.State]++
		if withAgents {
			v.Agents = append(v.Agents, RolloutAgentView{Agent: a.AgentName, Batch: a.Batch, From: a.FromVersion,
				State: a.State, Reason: a.Reason, UpdatedAt: a.UpdatedAt})
		}
	}
	return v
}

// upgradeState is what the rollout engine knows beyond the store: which
// agents are busy (from their Hello and last health report), which
// rollouts have an engine running here, and a broadcast of changes.
type upgradeState struct {
	mu      sync.Mutex
	busy    map[string]bool // agent ID -> running tasks at its last report
	running map[string]bool // rollout IDs driven by this coordinator
	// changed is closed and replaced at every Hello, health result and
	// rollout agent change, waking every waiter to re-check.
	changed chan struct{}
	// startMu makes StartRollout's overlap check and creation atomic.
	startMu sync.Mutex
}

func (u *upgradeState) wait() <-chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.changed == nil {
		u.changed = make(chan struct{})
	}
	return u.changed
}

func (u *upgradeState) notify() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.changed != nil {
		close(u.changed)
		u.changed = nil
	}
}

func (u *upgradeState) setBusy(agentID string, busy bool) {
	u.mu.Lock()
	if u.busy == nil {
		u.busy = make(map[string]bool)
	}
	u.busy[agentID] = busy
	u.mu.Unlock()
	u.notify()
}

func (u *upgradeState) isBusy(agentID string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.busy[agentID]
}

// StartRollout validates a request and starts upgrading its agents in the
// background. A request that cannot run as asked is refused whole: no
// agent is touched.
func (s *Server) StartRollout(ctx context.Context, req RolloutRequest) (RolloutView, error) {
	if (req.Environment == "") == !req.All {
		return RolloutView{}, userError(ErrBadRequest, "give exactly one of an environment or all")
	}
	if req.Batch < 0 || req.MaxFailures < 0 || req.GraceSeconds < 0 {
		return RolloutView{}, userError(ErrBadRequest, "batch, max failures and grace must not be negative")
	}
	done, err := s.beginWork()
	if err != nil {
		return RolloutView{}, err
	}
	defer done()
	if req.Batch == 0 {
		req.Batch = DefaultRolloutBatch
	}
	if req.GraceSeconds == 0 {
		req.GraceSeconds = max(1, int(s.cfg.UpgradeGrace.Seconds()))
	}
	pkgs, err := s.store.AgentPackages(ctx)
	if err != nil {
		return RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	version := req.Version
	if version == "" {
		sortPackages(pkgs)
		if len(pkgs) == 0 {
			return RolloutView{}, userError(ErrBadRequest, "no agent package has been uploaded; run \"tendril-server agent-package push --version V --os OS --arch ARCH FILE\" first")
		}
		version = pkgs[0].Version
	}
	have := map[string]bool{}
	for _, p := range pkgs {
		if p.Version == version {
			have[p.OS+"/"+p.Arch] = true
		}
	}
	if len(have) == 0 {
		return RolloutView{}, userError(store.ErrNotFound, "no agent package of version %s is stored (see \"tendril-server agent-package list\")", version)
	}
	all, err := s.store.ListAgents(ctx)
	if err != nil {
		return RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	var agents []store.Agent
	for _, a := range all {
		if req.All || strings.EqualFold(a.Environment, req.Environment) {
			agents = append(agents, a)
		}
	}
	if len(agents) == 0 {
		if req.All {
			return RolloutView{}, userError(store.ErrNotFound, "no agents are registered")
		}
		return RolloutView{}, userError(store.ErrNotFound, "environment %q has no agents", req.Environment)
	}
	var missing, downgrades []string
	for _, a := range agents {
		if !have[a.OS+"/"+a.Arch] {
			plat := a.OS + "/" + a.Arch
			if a.OS == "" {
				plat = "platform unknown: never connected"
			}
			missing = append(missing, fmt.Sprintf("%s (%s)", a.Name, plat))
		}
		if !req.AllowDowngrade && a.Version != "" && bundle.CompareVersions(a.Version, version) > 0 {
			downgrades = append(downgrades, fmt.Sprintf("%s (at %s)", a.Name, a.Version))
		}
	}
	if len(missing) > 0 {
		return RolloutView{}, userError(ErrBadRequest, "no agent package %s for %s; push one for each platform with \"tendril-server agent-package push\"",
			version, strings.Join(missing, ", "))
	}
	if len(downgrades) > 0 {
		return RolloutView{}, userError(ErrBadRequest, "upgrading %s to %s would be a downgrade; use --allow-downgrade",
			strings.Join(downgrades, ", "), version)
	}

	s.upgrades.startMu.Lock()
	defer s.upgrades.startMu.Unlock()
	running, err := s.store.Rollouts(ctx, true, 1000)
	if err != nil {
		return RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	ids := make(map[string]bool, len(agents))
	for _, a := range agents {
		ids[a.ID] = true
	}
	for _, r := range running {
		ras, err := s.store.RolloutAgents(ctx, r.ID)
		if err != nil {
			return RolloutView{}, fmt.Errorf("start rollout: %w", err)
		}
		var shared []string
		for _, ra := range ras {
			if ids[ra.AgentID] {
				shared = append(shared, ra.AgentName)
			}
		}
		if len(shared) > 0 {
			return RolloutView{}, userError(ErrConflict, "rollout %s is still running on %s; wait for it to finish (tendril-server rollout show %s)",
				r.ID, strings.Join(shared, ", "), r.ID)
		}
	}
	now := time.Now().UTC()
	r := store.Rollout{ID: uuid.NewString(), Version: version, Batch: req.Batch, MaxFailures: req.MaxFailures,
		AllowDowngrade: req.AllowDowngrade, GraceSeconds: req.GraceSeconds, State: store.RolloutRunning, CreatedAt: now}
	if !req.All {
		r.Environment = req.Environment
	}
	rows := make([]store.RolloutAgent, len(agents))
	n := 0
	for i, a := range agents {
		rows[i] = store.RolloutAgent{AgentID: a.ID, AgentName: a.Name, FromVersion: a.Version, Position: i, UpdatedAt: now}
		if a.Version == version {
			rows[i].State, rows[i].Reason = store.UpgradeSucceeded, "already at "+version
			continue
		}
		rows[i].Batch = n/req.Batch + 1
		rows[i].State, rows[i].Reason = store.UpgradeQueued, fmt.Sprintf("waiting for batch %d", rows[i].Batch)
		n++
	}
	if err := s.store.CreateRollout(ctx, r, rows); err != nil {
		return RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	s.log.Info("rollout started", zap.String("rollout", r.ID), zap.String("version", version),
		zap.String("environment", r.Environment), zap.Int("agents", len(rows)), zap.Int("to_upgrade", n), zap.Int("batch", r.Batch))
	s.startRolloutEngine(r.ID)
	return rolloutView(r, rows, true), nil
}

// Rollout returns one rollout with its agents.
func (s *Server) Rollout(ctx context.Context, id string) (RolloutView, error) {
	r, err := s.store.Rollout(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return RolloutView{}, userError(store.ErrNotFound, "no rollout %q", id)
	}
	if err != nil {
		return RolloutView{}, err
	}
	agents, err := s.store.RolloutAgents(ctx, id)
	if err != nil {
		return RolloutView{}, err
	}
	return rolloutView(r, agents, true), nil
}

// Rollouts lists rollouts, newest first, with their counts but not their
// agents.
func (s *Server) Rollouts(ctx context.Context) ([]RolloutView, error) {
	rs, err := s.store.Rollouts(ctx, false, 100)
	if err != nil {
		return nil, err
	}
	out := make([]RolloutView, len(rs))
	for i, r := range rs {
		agents, err := s.store.RolloutAgents(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		out[i] = rolloutView(r, agents, false)
	}
	return out, nil
}

// resumeRollouts picks up the rollouts a previous coordinator process left
// running. A transfer it had in progress starts again (the agent resumes
// from what it holds; one that already swapped connects at the new
// version and succeeds); an agent awaiting its reconnect keeps its
// deadline, counted from when it started waiting.
func (s *Server) resumeRollouts(ctx context.Context) error {
	rs, err := s.store.Rollouts(ctx, true, 1000)
	if err != nil {
		return fmt.Errorf("resume rollouts: %w", err)
	}
	for _, r := range rs {
		agents, err := s.store.RolloutAgents(ctx, r.ID)
		if err != nil {
			return fmt.Errorf("resume rollouts: %w", err)
		}
		for _, a := range agents {
			if a.State == store.UpgradeSending || a.State == store.UpgradeInstalling {
				s.setUpgradeState(ctx, r.ID, a.AgentID, []string{a.State}, store.UpgradeWaitingForIdle,
					"the coordinator restarted; the transfer starts again when the agent is idle")
			}
		}
		s.log.Info("rollout resumed", zap.String("rollout", r.ID), zap.String("version", r.Version))
		s.startRolloutEngine(r.ID)
	}
	return nil
}

// startRolloutEngine runs a rollout's engine unless one already runs.
func (s *Server) startRolloutEngine(id string) {
	u := &s.upgrades
	u.mu.Lock()
	if u.running == nil {
		u.running = make(map[string]bool)
	}
	if u.running[id] {
		u.mu.Unlock()
		return
	}
	u.running[id] = true
	u.mu.Unlock()
	s.goFunc(func() {
		defer func() {
			u.mu.Lock()
			delete(u.running, id)
			u.mu.Unlock()
		}()
		s.runRollout(s.ctx, id)
	})
}

func failures(agents []store.RolloutAgent) int {
	n := 0
	for _, a := range agents {
		if a.State == store.UpgradeFailed || a.State == store.UpgradeRolledBack {
			n++
		}
	}
	return n
}

// runRollout upgrades a rollout's agents batch by batch: every agent of a
// batch at once, the next batch only once each of them is final, and
// nothing more once failures exceed the rollout's maximum. When ctx ends
// (the coordinator stops) it returns with the rollout still running, for
// the next coordinator process to resume.
func (s *Server) runRollout(ctx context.Context, id string) {
	log := s.log.With(zap.String("rollout", id))
	r, err := s.store.Rollout(ctx, id)
	if err != nil {
		log.Error("load rollout failed", zap.Error(err))
		return
	}
	agents, err := s.store.RolloutAgents(ctx, id)
	if err != nil {
		log.Error("load rollout agents failed", zap.Error(err))
		return
	}
	last := 0
	for _, a := range agents {
		last = max(last, a.Batch)
	}
	for b := 1; b <= last; b++ {
		if agents, err = s.store.RolloutAgents(ctx, id); err != nil {
			log.Error("load rollout agents failed", zap.Error(err))
			return
		}
		if n := failures(agents); n > r.MaxFailures {
			s.finishRollout(ctx, r, store.RolloutHalted, fmt.Sprintf("halted after %d failures", n))
			return
		}
		var wg sync.WaitGroup
		for _, a := range agents {
			if a.Batch != b || store.UpgradeFinal(a.State) {
				continue
			}
			wg.Add(1)
			s.goFunc(func() {
				defer wg.Done()
				s.upgradeAgent(ctx, r, a)
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
	}
	if agents, err = s.store.RolloutAgents(ctx, id); err != nil {
		log.Error("load rollout agents failed", zap.Error(err))
		return
	}
	if n := failures(agents); n > r.MaxFailures {
		s.finishRollout(ctx, r, store.RolloutHalted, fmt.Sprintf("halted after %d failures", n))
	} else if n > 0 {
		s.finishRollout(ctx, r, store.RolloutSucceeded, fmt.Sprintf("%d failures, within the maximum of %d", n, r.MaxFailures))
	} else {
		s.finishRollout(ctx, r, store.RolloutSucceeded, "every agent runs "+r.Version)
	}
}

func (s *Server) finishRollout(ctx context.Context, r store.Rollout, state, reason string) {
	if err := s.store.FinishRollout(context.WithoutCancel(ctx), r.ID, state, reason, time.Now().UTC()); err != nil {
		s.log.Error("record rollout result failed", zap.String("rollout", r.ID), zap.Error(err))
		return
	}
	s.log.Info("rollout finished", zap.String("rollout", r.ID), zap.String("state", state), zap.String("reason", reason))
	s.upgrades.notify()
}

// setUpgradeState records an agent's step (compare-and-set on from) and
// reports whether it changed.
func (s *Server) setUpgradeState(ctx context.Context, rolloutID, agentID string, from []string, to, reason string) bool {
	changed, err := s.store.SetRolloutAgentState(context.WithoutCancel(ctx), rolloutID, agentID, from, to, reason, time.Now().UTC())
	if err != nil {
		s.log.Error("record rollout agent state failed", zap.String("rollout", rolloutID), zap.String("agent", agentID), zap.Error(err))
		return false
	}
	if changed {
		s.log.Info("rollout agent state changed", zap.String("rollout", rolloutID), zap.String("agent", agentID),
			zap.String("state", to), zap.String("reason", reason))
		s.upgrades.notify()
	}
	return changed
}

var inFlight = []string{store.UpgradeSending, store.UpgradeInstalling}

// upgradeAgent takes one agent from queued to a final state. Success is
// never concluded here: only noteHello, seeing the new version connect,
// records it.
func (s *Server) upgradeAgent(ctx context.Context, r store.Rollout, a store.RolloutAgent) {
	log := s.log.With(zap.String("rollout", r.ID), zap.String("agent", a.AgentName))
	s.setUpgradeState(ctx, r.ID, a.AgentID, []string{store.UpgradeQueued}, store.UpgradeWaitingForIdle,
		"waiting for the agent to be connected and idle")
	grace := time.Duration(r.GraceSeconds) * time.Second
	attempts := 0
	for ctx.Err() == nil {
		// Take the change signal before reading, so a change between the
		// read and the wait is never missed.
		changed := s.upgrades.wait()
		cur, err := s.store.RolloutAgent(ctx, r.ID, a.AgentID)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("load rollout agent failed", zap.Error(err))
			}
			return
		}
		if store.UpgradeFinal(cur.State) {
			return
		}
		switch cur.State {
		case store.UpgradeQueued, store.UpgradeSending, store.UpgradeInstalling:
			// Left over from an earlier run of this engine.
			s.setUpgradeState(ctx, r.ID, a.AgentID, []string{cur.State}, store.UpgradeWaitingForIdle,
				"waiting for the agent to be connected and idle")
		case store.UpgradeWaitingForIdle:
			as, why := s.waitIdle(ctx, a.AgentID, cur.UpdatedAt.Add(s.cfg.UpgradeIdleTimeout))
			if ctx.Err() != nil {
				return
			}
			if as == nil {
				s.setUpgradeState(ctx, r.ID, a.AgentID, []string{store.UpgradeWaitingForIdle}, store.UpgradeFailed, why)
				continue
			}
			if !s.setUpgradeState(ctx, r.ID, a.AgentID, []string{store.UpgradeWaitingForIdle}, store.UpgradeSending,
				"sending agent "+r.Version) {
				continue
			}
			err := s.sendAgentPackage(ctx, as, r)
			var re *protocol.RemoteError
			switch {
			case err == nil:
				s.setUpgradeState(ctx, r.ID, a.AgentID, inFlight, store.UpgradeAwaitingReconnect,
					fmt.Sprintf("the agent installed %s and is restarting into it; waiting for it to connect", r.Version))
			case ctx.Err() != nil:
				return
			case protocol.IsCode(err, protocol.CodeUnavailable):
				// A task started between the idle check and the offer:
				// not a failure, the agent is simply not idle yet.
				s.upgrades.setBusy(a.AgentID, true)
				s.setUpgradeState(ctx, r.ID, a.AgentID, inFlight, store.UpgradeWaitingForIdle,
					"the agent became busy; waiting for its tasks to end")
			case errors.As(err, &re), errors.Is(err, errUpgradeRefused):
				msg := err.Error()
				if re != nil {
					msg = "the agent refused the upgrade: " + re.Message
				}
				s.setUpgradeState(ctx, r.ID, a.AgentID, inFlight, store.UpgradeFailed, msg)
			default:
				attempts++
				if attempts >= maxSendAttempts {
					s.setUpgradeState(ctx, r.ID, a.AgentID, inFlight, store.UpgradeFailed,
						fmt.Sprintf("sending the package failed %d times: %v", attempts, err))
					continue
				}
				log.Warn("agent upgrade transfer interrupted, will retry", zap.Error(err))
				s.setUpgradeState(ctx, r.ID, a.AgentID, inFlight, store.UpgradeWaitingForIdle,
					fmt.Sprintf("sending was interrupted (%v); it starts again when the agent is idle", err))
			}
		case store.UpgradeAwaitingReconnect:
			wait := grace + s.cfg.UpgradeReconnectMargin
			left := time.Until(cur.UpdatedAt.Add(wait))
			if left <= 0 {
				s.setUpgradeState(ctx, r.ID, a.AgentID, []string{store.UpgradeAwaitingReconnect}, store.UpgradeFailed,
					fmt.Sprintf("the agent did not come back within %ds", int(wait.Seconds())))
				continue
			}
			t := time.NewTimer(left)
			select {
			case <-changed:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		default:
			log.Error("unknown rollout agent state", zap.String("state", cur.State))
			return
		}
	}
}

// waitIdle waits until the agent is connected and runs no task, and
// returns its session; or, at the deadline, nil and why.
func (s *Server) waitIdle(ctx context.Context, agentID string, deadline time.Time) (*agentSession, string) {
	for {
		changed, added := s.upgrades.wait(), s.sessions.changed()
		as := s.sessions.get(agentID)
		if as != nil {
			busy, err := s.agentBusy(ctx, agentID)
			if err == nil && !busy {
				return as, ""
			}
			if busy && s.upgrades.isBusy(agentID) {
				// Its last report said busy: ask again rather than wait
				// for the next health interval.
				s.checkHealth(ctx, []*agentSession{as})
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			if as == nil {
				return nil, fmt.Sprintf("agent was not connected (waited %s)", s.cfg.UpgradeIdleTimeout)
			}
			return nil, fmt.Sprintf("agent stayed busy (waited %s for its tasks to end)", s.cfg.UpgradeIdleTimeout)
		}
		t := time.NewTimer(min(left, idleRecheck))
		select {
		case <-changed:
		case <-added:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ""
		}
		t.Stop()
	}
}

// agentBusy reports whether the agent runs tasks: by its own last report
// (Hello or health), or by the tasks this coordinator has not seen end.
func (s *Server) agentBusy(ctx context.Context, agentID string) (bool, error) {
	if s.upgrades.isBusy(agentID) {
		return true, nil
	}
	ts, err := s.store.ListTasks(ctx, store.TaskFilter{AgentID: agentID, Unfinished: true, Limit: 1})
	if err != nil {
		return true, err
	}
	return len(ts) > 0, nil
}

// errUpgradeRefused marks upgrade failures that retrying cannot fix.
var errUpgradeRefused = errors.New("upgrade refused")

// sendAgentPackage offers the rollout's package for the agent's platform
// and sends it; it returns once the agent answers that the new binary is
// verified, smoke-tested and in place.
func (s *Server) sendAgentPackage(ctx context.Context, as *agentSession, r store.Rollout) error {
	a, err := s.store.AgentByID(ctx, as.agentID)
	if err != nil {
		return userError(errUpgradeRefused, "agent record: %v", err)
	}
	p, err := s.store.AgentPackage(ctx, r.Version, a.OS, a.Arch)
	if errors.Is(err, store.ErrNotFound) {
		return userError(errUpgradeRefused, "no agent package %s for %s/%s", r.Version, a.OS, a.Arch)
	}
	if err != nil {
		return err
	}
	f, err := os.Open(s.agentPackagePath(p.Version, p.OS, p.Arch))
	if err != nil {
		return userError(errUpgradeRefused, "agent package %s %s/%s: %v", p.Version, p.OS, p.Arch, err)
	}
	defer f.Close()
	hdr := protocol.AgentUpgrade{
		RolloutID:      r.ID,
		Package:        protocol.AgentPackage{Version: p.Version, OS: p.OS, Arch: p.Arch, SHA256: p.SHA256, Size: p.Size},
		Signature:      p.Signature,
		AllowDowngrade: r.AllowDowngrade,
		GraceSeconds:   r.GraceSeconds,
	}
	var ready protocol.UpgradeReady
	_, err = s.transferNotify(ctx, as, protocol.TypeAgentUpgrade, hdr, f, p.Size, protocol.TypeUpgradeReady, &ready, func() {
		s.setUpgradeState(ctx, r.ID, as.agentID, []string{store.UpgradeSending}, store.UpgradeInstalling,
			fmt.Sprintf("the agent is verifying, smoke-testing and installing %s", r.Version))
	})
	// A receiver that already held every byte (done) answers no
	// UpgradeReady; the outcome is then judged, like every other, by the
	// agent's next Hello.
	return err
}

// noteHello tells the rollout engine about an agent's new session: whether
// it is busy, the outcome of its last upgrade if it reports one, and, if
// it now runs the version its running rollout installs, that the upgrade
// succeeded. It reports whether the upgrade report was recorded, which the
// Welcome acknowledges.
func (s *Server) noteHello(ctx context.Context, agentID, name string, h protocol.Hello) (acked bool) {
	s.upgrades.setBusy(agentID, h.Busy)
	if rep := h.Upgrade; rep != nil {
		s.log.Info("agent reported an upgrade result", zap.String("agent", name), zap.String("rollout", rep.RolloutID),
			zap.String("from", rep.From), zap.String("to", rep.To), zap.String("result", rep.Result), zap.String("reason", rep.Reason))
		if err := s.recordUpgradeReport(ctx, agentID, name, *rep); err != nil {
			s.log.Error("record upgrade report failed", zap.String("agent", name), zap.Error(err))
		} else {
			acked = true
		}
	}
	rows, err := s.store.RunningRolloutAgents(ctx, agentID)
	if err != nil {
		s.log.Error("look up agent's rollout failed", zap.String("agent", name), zap.Error(err))
		return acked
	}
	for _, ra := range rows {
		r, err := s.store.Rollout(ctx, ra.RolloutID)
		if err != nil {
			s.log.Error("look up rollout failed", zap.String("rollout", ra.RolloutID), zap.Error(err))
			continue
		}
		if h.Version == r.Version {
			s.setUpgradeState(ctx, r.ID, agentID, []string{store.UpgradeWaitingForIdle, store.UpgradeSending,
				store.UpgradeInstalling, store.UpgradeAwaitingReconnect}, store.UpgradeSucceeded, "the new version connected")
		}
	}
	return acked
}

// recordUpgradeReport applies an agent's report of a rolled back or failed
// upgrade to its rollout. Later evidence wins: an agent recorded as
// succeeded that reports a rollback counts as a failure, and a finished
// rollout it pushes over its maximum is marked halted.
func (s *Server) recordUpgradeReport(ctx context.Context, agentID, name string, rep protocol.UpgradeReport) error {
	if rep.RolloutID == "" || rep.Result == protocol.UpgradeCommitted {
		return nil // success is concluded from the version that connects
	}
	if rep.Result != protocol.UpgradeRolledBack && rep.Result != protocol.UpgradeFailed {
		s.log.Warn("unknown upgrade result reported", zap.String("agent", name), zap.String("result", rep.Result))
		return nil
	}
	r, err := s.store.Rollout(ctx, rep.RolloutID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // not one of ours (another coordinator's, or deleted): logged only
	}
	if err != nil {
		return err
	}
	cur, err := s.store.RolloutAgent(ctx, r.ID, agentID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	to := store.UpgradeRolledBack
	what := "the agent rolled back to its previous version"
	if rep.Result == protocol.UpgradeFailed {
		to, what = store.UpgradeFailed, "the agent reports the upgrade failed"
	}
	reason := what
	if rep.Reason != "" {
		reason += ": " + rep.Reason
	}
	if cur.State == to && cur.Reason == reason {
		return nil // the same report again: its Welcome was lost
	}
	from := []string{store.UpgradeWaitingForIdle, store.UpgradeSending, store.UpgradeInstalling,
		store.UpgradeAwaitingReconnect, store.UpgradeSucceeded, store.UpgradeFailed}
	if !s.setUpgradeState(ctx, r.ID, agentID, from, to, reason) {
		return nil
	}
	if cur.State == store.UpgradeSucceeded && r.State == store.RolloutSucceeded {
		agents, err := s.store.RolloutAgents(ctx, r.ID)
		if err != nil {
			return err
		}
		if n := failures(agents); n > r.MaxFailures {
			s.finishRollout(ctx, r, store.RolloutHalted, fmt.Sprintf("halted after %d failures (%s rolled back after its new version connected)", n, name))
		}
	}
	return nil
}
