package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tendrildeploy/tendril/api"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// Rollout timing. The batch size and failure limit a rollout gets when
// its request names none are the machine policy's (see policy.go).
const (
	// idleRecheck is how often an agent waiting for idle is re-checked
	// even without a health result or session change: a task finishing is
	// not broadcast.
	idleRecheck = 2 * time.Second
	// maxSendAttempts bounds transfers of one package to one agent cut
	// short by the connection (not refused by the agent).
	maxSendAttempts = 3
)

func rolloutView(r store.Rollout, agents []store.RolloutAgent, withAgents bool) api.RolloutView {
	v := api.RolloutView{ID: r.ID, Environment: r.Environment, All: r.Environment == "" && !r.NamedAgents, Version: r.Version,
		Batch: r.Batch, MaxFailures: r.MaxFailures, AllowDowngrade: r.AllowDowngrade, GraceSeconds: r.GraceSeconds,
		State: r.State, Reason: r.Reason, CreatedAt: r.CreatedAt, Counts: map[string]int{}}
	byName := r.NamedAgents
	if byName {
		v.TargetAgents = []string{}
	}
	if !r.FinishedAt.IsZero() {
		v.FinishedAt = &r.FinishedAt
	}
	for _, a := range agents {
		if byName {
			v.TargetAgents = append(v.TargetAgents, a.AgentName)
		}
		v.Counts[a.State]++
		if withAgents {
			v.Agents = append(v.Agents, api.RolloutAgentView{Agent: a.AgentName, Batch: a.Batch, From: a.FromVersion,
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
	driving map[string]bool // agent IDs whose upgrade is driven here
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

// tryDrive records that this node drives an agent's upgrade, unless it
// already does, until the returned function is called.
func (u *upgradeState) tryDrive(agentID string) (done func(), ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.driving == nil {
		u.driving = make(map[string]bool)
	}
	if u.driving[agentID] {
		return nil, false
	}
	u.driving[agentID] = true
	return func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		delete(u.driving, agentID)
	}, true
}

// drivesFor reports whether this node drives an upgrade of the agent.
func (u *upgradeState) drivesFor(agentID string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.driving[agentID]
}

// StartRollout validates a request and starts upgrading its agents in the
// background. A request that cannot run as asked is refused whole: no
// agent is touched.
func (s *Server) StartRollout(ctx context.Context, req api.RolloutRequest) (api.RolloutView, error) {
	kinds := 0
	for _, given := range []bool{req.Environment != "", req.All, len(req.Agents) > 0} {
		if given {
			kinds++
		}
	}
	if kinds != 1 {
		return api.RolloutView{}, kind.Errorf(kind.ErrBadRequest, "give exactly one of an environment, all or a list of agents")
	}
	if req.Batch < 0 || req.MaxFailures != nil && *req.MaxFailures < 0 || req.GraceSeconds < 0 {
		return api.RolloutView{}, kind.Errorf(kind.ErrBadRequest, "batch, max failures and grace must not be negative")
	}
	done, err := s.beginWork()
	if err != nil {
		return api.RolloutView{}, err
	}
	defer done()
	// Read afresh rather than this node's copy: another node may have
	// changed the policy since the last health sweep.
	policy, err := s.store.Policy(ctx)
	if err != nil {
		return api.RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	if req.Batch == 0 {
		req.Batch = policy.UpgradeBatch
	}
	maxFailures := policy.UpgradeMaxFailures
	if req.MaxFailures != nil {
		maxFailures = *req.MaxFailures
	}
	if req.GraceSeconds == 0 {
		req.GraceSeconds = max(1, int(s.cfg.UpgradeGrace.Seconds()))
	}
	pkgs, err := s.store.AgentPackages(ctx)
	if err != nil {
		return api.RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	version := req.Version
	if version == "" {
		sortPackages(pkgs)
		if len(pkgs) == 0 {
			return api.RolloutView{}, kind.Errorf(kind.ErrBadRequest, "no agent package has been uploaded; run \"tendril-server agent-package push --version V --os OS --arch ARCH FILE\" first")
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
		return api.RolloutView{}, kind.Errorf(store.ErrNotFound, "no agent package of version %s is stored (see \"tendril-server agent-package list\")", version)
	}
	all, err := s.store.ListAgents(ctx)
	if err != nil {
		return api.RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	agents, err := rolloutTargets(all, req)
	if err != nil {
		return api.RolloutView{}, err
	}
	if len(agents) == 0 {
		if req.All {
			return api.RolloutView{}, kind.Errorf(store.ErrNotFound, "no agents are registered")
		}
		return api.RolloutView{}, kind.Errorf(store.ErrNotFound, "environment %q has no agents", req.Environment)
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
		return api.RolloutView{}, kind.Errorf(kind.ErrBadRequest, "no agent package %s for %s; push one for each platform with \"tendril-server agent-package push\"",
			version, strings.Join(missing, ", "))
	}
	if len(downgrades) > 0 {
		return api.RolloutView{}, kind.Errorf(kind.ErrBadRequest, "upgrading %s to %s would be a downgrade; use --allow-downgrade",
			strings.Join(downgrades, ", "), version)
	}

	s.upgrades.startMu.Lock()
	defer s.upgrades.startMu.Unlock()
	running, err := s.store.Rollouts(ctx, true, 1000)
	if err != nil {
		return api.RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	ids := make(map[string]bool, len(agents))
	for _, a := range agents {
		ids[a.ID] = true
	}
	for _, r := range running {
		ras, err := s.store.RolloutAgents(ctx, r.ID)
		if err != nil {
			return api.RolloutView{}, fmt.Errorf("start rollout: %w", err)
		}
		var shared []string
		for _, ra := range ras {
			if ids[ra.AgentID] {
				shared = append(shared, ra.AgentName)
			}
		}
		if len(shared) > 0 {
			return api.RolloutView{}, kind.Errorf(kind.ErrConflict, "rollout %s is still running on %s; wait for it to finish (tendril-server rollout show %s)",
				r.ID, strings.Join(shared, ", "), r.ID)
		}
	}
	now := time.Now().UTC()
	r := store.Rollout{ID: uuid.NewString(), Version: version, Batch: req.Batch, MaxFailures: maxFailures,
		AllowDowngrade: req.AllowDowngrade, GraceSeconds: req.GraceSeconds, State: store.RolloutRunning, CreatedAt: now}
	switch {
	case len(req.Agents) > 0:
		r.NamedAgents = true
	case !req.All:
		r.Environment = req.Environment
	}
	if !s.node.draining.Load() {
		r.Node = s.nodeID() // this node drives it, from the start
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
		if errors.Is(err, store.ErrInRollout) {
			// Another node started a rollout on these agents since the
			// check above.
			return api.RolloutView{}, kind.Errorf(kind.ErrConflict, "%v; wait for it to finish (tendril-server rollout list)", err)
		}
		return api.RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	s.log.Info("rollout started", zap.String("rollout", r.ID), zap.String("version", version),
		zap.String("environment", r.Environment), zap.Int("agents", len(rows)), zap.Int("to_upgrade", n), zap.Int("batch", r.Batch))
	if r.Node == s.nodeID() {
		s.startRolloutEngine(r.ID)
	} else {
		s.notifyCluster(notifyUpgrade, r.ID) // a node that is not draining takes it
	}
	return rolloutView(r, rows, true), nil
}

// rolloutTargets picks the agents a request names out of all registered
// agents, keeping their order (environment, then name). A name that is no
// agent refuses the whole request: upgrading the rest would leave the
// operator believing the typo was upgraded too.
func rolloutTargets(all []store.Agent, req api.RolloutRequest) ([]store.Agent, error) {
	var agents []store.Agent
	if len(req.Agents) == 0 {
		for _, a := range all {
			if req.All || strings.EqualFold(a.Environment, req.Environment) {
				agents = append(agents, a)
			}
		}
		return agents, nil
	}
	// Names match exactly, as everywhere else an agent is named: the store
	// keeps "Web-1" and "web-1" apart.
	want := make(map[string]bool, len(req.Agents))
	for _, n := range req.Agents {
		if n == "" {
			return nil, kind.Errorf(kind.ErrBadRequest, "an agent name is empty")
		}
		want[n] = true
	}
	found := make(map[string]bool, len(want))
	for _, a := range all {
		if want[a.Name] {
			found[a.Name] = true
			agents = append(agents, a)
		}
	}
	var unknown []string
	for _, n := range req.Agents {
		if !found[n] {
			found[n] = true // name each unknown one once
			unknown = append(unknown, fmt.Sprintf("%q", n))
		}
	}
	if len(unknown) > 0 {
		return nil, kind.Errorf(store.ErrNotFound, "no agent named %s (see \"tendril-server agents\")", strings.Join(unknown, ", "))
	}
	return agents, nil
}

// Rollout returns one rollout with its agents.
func (s *Server) Rollout(ctx context.Context, id string) (api.RolloutView, error) {
	r, err := s.store.Rollout(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return api.RolloutView{}, kind.Errorf(store.ErrNotFound, "no rollout %q", id)
	}
	if err != nil {
		return api.RolloutView{}, err
	}
	agents, err := s.store.RolloutAgents(ctx, id)
	if err != nil {
		return api.RolloutView{}, err
	}
	return s.withPause(ctx, rolloutView(r, agents, true))
}

// Rollouts lists rollouts, newest first, with their counts but not their
// agents.
func (s *Server) Rollouts(ctx context.Context) ([]api.RolloutView, error) {
	rs, err := s.store.Rollouts(ctx, false, 100)
	if err != nil {
		return nil, err
	}
	out := make([]api.RolloutView, len(rs))
	for i, r := range rs {
		agents, err := s.store.RolloutAgents(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		if out[i], err = s.withPause(ctx, rolloutView(r, agents, false)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// resumeRollouts takes over the running rollouts that no live node
// drives: those a previous run of this node, or a node that stopped or
// died, left running. Agents it was sending a package to start again
// when idle (the agent resumes from what it holds; one that already
// swapped connects at the new version and succeeds); an agent awaiting
// its reconnect keeps its deadline, counted from when it started
// waiting.
func (s *Server) resumeRollouts(ctx context.Context) error {
	rs, err := s.store.Rollouts(ctx, true, 1000)
	if err != nil {
		return fmt.Errorf("resume rollouts: %w", err)
	}
	for _, r := range rs {
		s.adoptRollout(ctx, r)
	}
	return nil
}

// adoptRollout claims a running rollout whose batches no live node
// drives, and drives them.
func (s *Server) adoptRollout(ctx context.Context, r store.Rollout) {
	me := s.nodeID()
	if s.upgrades.isRunning(r.ID) || s.node.draining.Load() {
		return
	}
	if r.Node != "" && r.Node != me && !s.nodeGone(ctx, r.Node) {
		return
	}
	ok, err := s.store.ClaimRollout(ctx, r.ID, r.Node, me)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("claim rollout failed", zap.String("rollout", r.ID), zap.Error(err))
		}
		return
	}
	if !ok {
		return
	}
	if r.Node != "" {
		s.log.Info("rollout resumed", zap.String("rollout", r.ID), zap.String("version", r.Version), zap.String("from_node", r.Node))
	}
	s.startRolloutEngine(r.ID)
}

// sweepRollouts adopts running rollouts no live node drives, and drives
// the upgrade of each agent connected here that a rollout waits to
// upgrade.
func (s *Server) sweepRollouts(ctx context.Context) {
	rs, err := s.store.Rollouts(ctx, true, 1000)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("look for rollouts to drive failed", zap.Error(err))
		}
		return
	}
	for _, r := range rs {
		s.adoptRollout(ctx, r)
		if s.node.draining.Load() {
			continue // its agents go to other nodes, which upgrade them
		}
		agents, err := s.store.RolloutAgents(ctx, r.ID)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("look for agents to upgrade failed", zap.String("rollout", r.ID), zap.Error(err))
			}
			continue
		}
		for _, a := range agents {
			if a.State != store.UpgradeWaitingForIdle || s.sessions.get(a.AgentID) == nil {
				continue
			}
			done, ok := s.upgrades.tryDrive(a.AgentID)
			if !ok {
				continue
			}
			s.goFunc(func() {
				defer done()
				s.upgradeAgent(s.ctx, r, a)
			})
		}
	}
}

// startRolloutEngine runs the batches of a rollout this node claimed,
// unless they already run here.
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

func (u *upgradeState) isRunning(id string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.running[id]
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

// runRollout drives a rollout's batches: every agent of a batch at once,
// the next batch only once each of them is final, and nothing more once
// failures exceed the rollout's maximum. It starts a batch by moving its
// agents to waiting_for_idle; the node each agent is connected to then
// upgrades it (sweepRollouts, upgradeAgent), and the agent's next Hello,
// on whichever node, concludes. What no node may be there to see is
// judged here: an agent not connected and idle within the idle timeout,
// one that does not come back within its grace period, and a transfer
// whose sending node is gone. It returns when the rollout ends, when
// another node took it over, when this node drains (another takes it
// over), or when ctx ends (the coordinator stops).
func (s *Server) runRollout(ctx context.Context, id string) {
	log := s.log.With(zap.String("rollout", id))
	me := s.nodeID()
	for ctx.Err() == nil {
		changed := s.upgrades.wait()
		r, err := s.store.Rollout(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("load rollout failed", zap.Error(err))
			}
			return
		}
		if r.State != store.RolloutRunning || r.Node != me {
			return
		}
		if s.node.draining.Load() {
			if ok, err := s.store.ClaimRollout(ctx, id, me, ""); err == nil && ok {
				log.Info("rollout handed over: this node is draining")
				s.notifyCluster(notifyUpgrade, id)
			}
			return
		}
		agents, err := s.store.RolloutAgents(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("load rollout agents failed", zap.Error(err))
			}
			return
		}
		cur, started := 0, false
		for _, a := range agents {
			if a.Batch > 0 && !store.UpgradeFinal(a.State) && (cur == 0 || a.Batch < cur) {
				cur = a.Batch
			}
		}
		for _, a := range agents {
			if a.Batch == cur && a.State != store.UpgradeQueued {
				started = true
			}
		}
		n := failures(agents)
		switch {
		case cur == 0 && n > r.MaxFailures, cur != 0 && !started && n > r.MaxFailures:
			s.finishRollout(ctx, r, store.RolloutHalted, fmt.Sprintf("halted after %d failures", n))
			return
		case cur == 0 && n > 0:
			s.finishRollout(ctx, r, store.RolloutSucceeded, fmt.Sprintf("%d failures, within the maximum of %d", n, r.MaxFailures))
			return
		case cur == 0:
			s.finishRollout(ctx, r, store.RolloutSucceeded, "every agent runs "+r.Version)
			return
		}
		if !started && s.batchHeld(ctx, id, agents, cur) {
			waitHeld(ctx, changed)
			continue
		}
		next := s.judgeBatch(ctx, r, agents, cur)
		if next.IsZero() {
			continue // something changed: look again
		}
		t := time.NewTimer(min(time.Until(next), idleRecheck))
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// judgeBatch starts batch cur and ends what no node will: agents never
// idle, never back, or whose sender is gone. It returns when next to
// look, or the zero time if it changed something.
func (s *Server) judgeBatch(ctx context.Context, r store.Rollout, agents []store.RolloutAgent, cur int) time.Time {
	me := s.nodeID()
	now := time.Now()
	next := now.Add(idleRecheck)
	moved, changed := false, false
	for _, a := range agents {
		if a.Batch != cur || store.UpgradeFinal(a.State) {
			continue
		}
		switch a.State {
		case store.UpgradeQueued:
			if s.setUpgradeState(ctx, r.ID, a.AgentID, []string{store.UpgradeQueued}, store.UpgradeWaitingForIdle,
				"waiting for the agent to be connected and idle") {
				moved = true
			}
		case store.UpgradeWaitingForIdle:
			deadline := a.UpdatedAt.Add(s.cfg.UpgradeIdleTimeout)
			if now.Before(deadline) {
				next = minTime(next, deadline)
				continue
			}
			why := fmt.Sprintf("agent was not connected (waited %s)", s.cfg.UpgradeIdleTimeout)
			if ag, err := s.store.AgentByID(ctx, a.AgentID); err == nil && s.connectedAnywhere(ag) {
				why = fmt.Sprintf("agent stayed busy (waited %s for its tasks to end)", s.cfg.UpgradeIdleTimeout)
			}
			changed = s.setUpgradeState(ctx, r.ID, a.AgentID, []string{store.UpgradeWaitingForIdle}, store.UpgradeFailed, why) || changed
		case store.UpgradeSending, store.UpgradeInstalling:
			if a.Node == me && s.upgrades.drivesFor(a.AgentID) || a.Node != me && !s.nodeGone(ctx, a.Node) {
				continue
			}
			changed = s.setUpgradeNode(ctx, r.ID, a.AgentID, []string{a.State}, a.Node, store.UpgradeWaitingForIdle, "",
				"the coordinator node sending it stopped; the transfer starts again when the agent is idle") || changed
		case store.UpgradeAwaitingReconnect:
			wait := time.Duration(r.GraceSeconds)*time.Second + s.cfg.UpgradeReconnectMargin
			deadline := a.UpdatedAt.Add(wait)
			if now.Before(deadline) {
				next = minTime(next, deadline)
				continue
			}
			changed = s.setUpgradeState(ctx, r.ID, a.AgentID, []string{store.UpgradeAwaitingReconnect}, store.UpgradeFailed,
				fmt.Sprintf("the agent did not come back within %ds", int(wait.Seconds()))) || changed
		}
	}
	if moved || changed {
		return time.Time{}
	}
	return next
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
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
		s.notifyUpgradeState(rolloutID, to)
	}
	return changed
}

// notifyUpgradeState tells every node that an agent of a rollout moved to
// state to: the rollout's driver looks again, and, for an agent now
// waiting to be upgraded, the node holding it starts.
func (s *Server) notifyUpgradeState(rolloutID, to string) {
	kind := notifyRollout
	if to == store.UpgradeWaitingForIdle {
		kind = notifyUpgrade
	}
	s.notifyCluster(kind, rolloutID)
}

// setUpgradeNode is setUpgradeState that also moves the agent's sending
// node from fromNode to toNode, only if it is fromNode.
func (s *Server) setUpgradeNode(ctx context.Context, rolloutID, agentID string, from []string, fromNode, to, toNode, reason string) bool {
	changed, err := s.store.SetRolloutAgentNode(context.WithoutCancel(ctx), rolloutID, agentID, from, fromNode, to, toNode, reason, time.Now().UTC())
	if err != nil {
		s.log.Error("record rollout agent state failed", zap.String("rollout", rolloutID), zap.String("agent", agentID), zap.Error(err))
		return false
	}
	if changed {
		s.log.Info("rollout agent state changed", zap.String("rollout", rolloutID), zap.String("agent", agentID),
			zap.String("state", to), zap.String("reason", reason))
		s.upgrades.notify()
		s.notifyUpgradeState(rolloutID, to)
	}
	return changed
}

var inFlight = []string{store.UpgradeSending, store.UpgradeInstalling}

// upgradeAgent upgrades an agent connected to this node that its rollout
// waits for: once the agent is idle it sends the package, and leaves the
// agent awaiting its reconnect, failed, or waiting again. It returns
// early if the agent leaves this node (the node it connects to next takes
// over). Success is never concluded here: only noteHello, seeing the new
// version connect, records it.
func (s *Server) upgradeAgent(ctx context.Context, r store.Rollout, a store.RolloutAgent) {
	log := s.log.With(zap.String("rollout", r.ID), zap.String("agent", a.AgentName))
	me := s.nodeID()
	attempts := 0
	for ctx.Err() == nil {
		cur, err := s.store.RolloutAgent(ctx, r.ID, a.AgentID)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("load rollout agent failed", zap.Error(err))
			}
			return
		}
		if cur.State != store.UpgradeWaitingForIdle {
			return // its batch's driver, or another node, takes it from here
		}
		as, why := s.waitIdle(ctx, a.AgentID, cur.UpdatedAt.Add(s.cfg.UpgradeIdleTimeout))
		if ctx.Err() != nil {
			return
		}
		if as == nil {
			if why == "" {
				return // the agent left: the node it joins upgrades it
			}
			s.setUpgradeState(ctx, r.ID, a.AgentID, []string{store.UpgradeWaitingForIdle}, store.UpgradeFailed, why)
			return
		}
		if !s.setUpgradeNode(ctx, r.ID, a.AgentID, []string{store.UpgradeWaitingForIdle}, "", store.UpgradeSending, me,
			"sending agent "+r.Version) {
			continue
		}
		err = s.sendAgentPackage(ctx, as, r)
		var re *protocol.RemoteError
		switch {
		case err == nil:
			s.setUpgradeNode(ctx, r.ID, a.AgentID, inFlight, me, store.UpgradeAwaitingReconnect, "",
				fmt.Sprintf("the agent installed %s and is restarting into it; waiting for it to connect", r.Version))
			return
		case ctx.Err() != nil:
			return
		case protocol.IsCode(err, protocol.CodeUnavailable):
			// A task started between the idle check and the offer:
			// not a failure, the agent is simply not idle yet.
			s.upgrades.setBusy(a.AgentID, true)
			s.setUpgradeNode(ctx, r.ID, a.AgentID, inFlight, me, store.UpgradeWaitingForIdle, "",
				"the agent became busy; waiting for its tasks to end")
		case errors.As(err, &re), errors.Is(err, errUpgradeRefused):
			msg := err.Error()
			if re != nil {
				msg = "the agent refused the upgrade: " + re.Message
			}
			s.setUpgradeNode(ctx, r.ID, a.AgentID, inFlight, me, store.UpgradeFailed, "", msg)
			return
		default:
			attempts++
			if attempts >= maxSendAttempts {
				s.setUpgradeNode(ctx, r.ID, a.AgentID, inFlight, me, store.UpgradeFailed, "",
					fmt.Sprintf("sending the package failed %d times: %v", attempts, err))
				return
			}
			log.Warn("agent upgrade transfer interrupted, will retry", zap.Error(err))
			s.setUpgradeNode(ctx, r.ID, a.AgentID, inFlight, me, store.UpgradeWaitingForIdle, "",
				fmt.Sprintf("sending was interrupted (%v); it starts again when the agent is idle", err))
		}
	}
}

// waitIdle waits until the agent, connected here, runs no task, and
// returns its session; or nil and "" once it is no longer connected here;
// or, at the deadline, nil and why.
func (s *Server) waitIdle(ctx context.Context, agentID string, deadline time.Time) (*agentSession, string) {
	for {
		changed, added := s.upgrades.wait(), s.sessions.changed()
		as := s.sessions.get(agentID)
		if as == nil {
			return nil, ""
		}
		busy, err := s.agentBusy(ctx, agentID)
		if err == nil && !busy {
			return as, ""
		}
		if busy && s.upgrades.isBusy(agentID) {
			// Its last report said busy: ask again rather than wait
			// for the next health interval.
			s.checkHealth(ctx, []*agentSession{as})
		}
		left := time.Until(deadline)
		if left <= 0 {
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
// (Hello or health), or by the tasks no node has seen end.
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
		return kind.Errorf(errUpgradeRefused, "agent record: %v", err)
	}
	p, err := s.store.AgentPackage(ctx, r.Version, a.OS, a.Arch)
	if errors.Is(err, store.ErrNotFound) {
		return kind.Errorf(errUpgradeRefused, "no agent package %s for %s/%s", r.Version, a.OS, a.Arch)
	}
	if err != nil {
		return err
	}
	path := s.agentPackagePath(p.Version, p.OS, p.Arch)
	if err := s.uploads.Fetch(ctx, cluster.AgentPackageBlob(p.Version, p.OS, p.Arch), path, p.SHA256); err != nil {
		return kind.Errorf(errUpgradeRefused, "agent package %s %s/%s: %v", p.Version, p.OS, p.Arch, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return kind.Errorf(errUpgradeRefused, "agent package %s %s/%s: %v", p.Version, p.OS, p.Arch, err)
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
