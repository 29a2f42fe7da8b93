// Package rollout is the agent upgrade engine: staged rollouts of a
// signed agent package, in batches that wait for idle agents, halt past a
// failure budget, can be halted and resumed by an operator, and conclude
// only from what the agents themselves report (the new version's Hello, a
// rollback report).
//
// A rollout's batches are driven by one coordinator node and each agent is
// upgraded by the node it is connected to; the engine reaches live agents
// and the other nodes through the Fleet interface, which the coordinator
// core implements, and keeps everything else in the store, so that a
// restarted or another node takes over where one stopped.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/idempotency"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// Fleet is what the engine needs of the coordinator core: its agents'
// sessions on this node, and the other nodes.
type Fleet interface {
	// NodeID is this node's ID in the store.
	NodeID() string
	// Draining reports whether this node is draining: it hands its
	// rollouts over and upgrades no agent.
	Draining() bool
	// NodeGone reports whether a node counts as dead or stopped.
	NodeGone(ctx context.Context, id string) bool
	// ConnectedAnywhere reports whether an agent has a session on any
	// live node.
	ConnectedAnywhere(a store.Agent) bool
	// NotifyRollout tells every node that a rollout changed (its driver
	// looks again); NotifyUpgrade that agents of it wait to be upgraded
	// (the nodes holding them start).
	NotifyRollout(id string)
	NotifyUpgrade(id string)
	// BeginWork admits new work unless the coordinator is in
	// maintenance mode; done ends it.
	BeginWork() (done func(), err error)
	// Connected reports whether the agent has a session on this node;
	// SessionsChanged is closed at the next session change.
	Connected(agentID string) bool
	SessionsChanged() <-chan struct{}
	// CheckHealth checks an agent connected here now, which reports
	// whether it is busy (see SetBusy).
	CheckHealth(ctx context.Context, agentID string)
	// SendAgentPackage streams an upgrade to an agent connected here. It
	// calls sent once every byte is sent, and returns when the agent
	// answers that the new binary is in place (or refuses).
	SendAgentPackage(ctx context.Context, agentID string, hdr protocol.AgentUpgrade, src io.ReaderAt, size int64, sent func()) error
}

// Config configures an Engine. Store, Fleet, Uploads, Signing and DataDir
// are required; zero durations take the defaults.
type Config struct {
	Store   store.Store
	Fleet   Fleet
	Uploads *cluster.Uploads
	// Signing signs uploaded agent packages; agents check the signature
	// against the coordinator key they pinned.
	Signing *certs.SigningKey
	// DataDir is the coordinator's data folder, where packages are kept.
	DataDir string
	// Grace is how long, by default, a new agent version has to connect
	// and commit before its watchdog restores the previous one. Default 2
	// minutes.
	Grace time.Duration
	// IdleTimeout bounds the wait for an agent to be connected and idle.
	// Default 30 minutes.
	IdleTimeout time.Duration
	// ReconnectMargin is added to the grace period when waiting for an
	// upgraded agent to come back. Default 60 seconds.
	ReconnectMargin time.Duration
	Logger          *zap.Logger
}

// Engine runs rollouts. Create it with New; Close ends its goroutines.
type Engine struct {
	cfg   Config
	st    store.Store
	fleet Fleet
	log   *zap.Logger
	state upgradeState

	// ctx is cancelled by Close; the goroutines that drive rollouts and
	// upgrade agents derive from it, and wg tracks them.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New returns an engine over cfg. It drives nothing until rollouts are
// started, resumed (Resume) or found by Sweep.
func New(cfg Config) *Engine {
	if cfg.Grace <= 0 {
		cfg.Grace = 2 * time.Minute
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.ReconnectMargin <= 0 {
		cfg.ReconnectMargin = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	e := &Engine{cfg: cfg, st: cfg.Store, fleet: cfg.Fleet, log: cfg.Logger}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e
}

// Close stops driving rollouts and waits for the engine's goroutines. The
// rollouts stay running in the store, for the next start or another node.
// It is idempotent.
func (e *Engine) Close() {
	e.closeOnce.Do(func() {
		e.cancel()
		e.wg.Wait()
	})
}

func (e *Engine) goFunc(f func()) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
}

// Changed wakes everything that waits on agents: a Hello, a health
// result, a session or node change.
func (e *Engine) Changed() { e.state.notify() }

// SetBusy records whether an agent runs tasks, from its Hello or health
// report; a busy agent is not offered an upgrade.
func (e *Engine) SetBusy(agentID string, busy bool) { e.state.setBusy(agentID, busy) }

// Busy reports whether the agent's last report said it runs tasks.
func (e *Engine) Busy(agentID string) bool { return e.state.isBusy(agentID) }

// DrivesFor reports whether this node is upgrading the agent now.
func (e *Engine) DrivesFor(agentID string) bool { return e.state.drivesFor(agentID) }

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
	// retryAfterCut is the longest wait, after a transfer was cut, for
	// its session to be gone before the next attempt.
	retryAfterCut = 5 * time.Second
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
func (e *Engine) StartRollout(ctx context.Context, req api.RolloutRequest) (api.RolloutView, error) {
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
	done, err := e.fleet.BeginWork()
	if err != nil {
		return api.RolloutView{}, err
	}
	defer done()
	// Read afresh rather than this node's copy: another node may have
	// changed the policy since the last health sweep.
	policy, err := e.st.Policy(ctx)
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
		req.GraceSeconds = max(1, int(e.cfg.Grace.Seconds()))
	}
	pkgs, err := e.st.AgentPackages(ctx)
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
		return api.RolloutView{}, kind.Errorf(kind.ErrNotFound, "no agent package of version %s is stored (see \"tendril-server agent-package list\")", version)
	}
	all, err := e.st.ListAgents(ctx)
	if err != nil {
		return api.RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	agents, err := rolloutTargets(all, req)
	if err != nil {
		return api.RolloutView{}, err
	}
	if len(agents) == 0 {
		if req.All {
			return api.RolloutView{}, kind.Errorf(kind.ErrNotFound, "no agents are registered")
		}
		return api.RolloutView{}, kind.Errorf(kind.ErrNotFound, "environment %q has no agents", req.Environment)
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

	e.state.startMu.Lock()
	defer e.state.startMu.Unlock()
	running, err := e.st.Rollouts(ctx, true, 1000)
	if err != nil {
		return api.RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	ids := make(map[string]bool, len(agents))
	for _, a := range agents {
		ids[a.ID] = true
	}
	for _, r := range running {
		ras, err := e.st.RolloutAgents(ctx, r.ID)
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
	// Under an Idempotency-Key the rollout's id is the key's ref: a retry
	// of a request whose answer was lost finds the rollout by it.
	id := idempotency.Ref(ctx)
	if id == "" {
		id = uuid.NewString()
	}
	r := store.Rollout{ID: id, Version: version, Batch: req.Batch, MaxFailures: maxFailures,
		AllowDowngrade: req.AllowDowngrade, GraceSeconds: req.GraceSeconds, State: api.RolloutRunning, CreatedAt: now}
	switch {
	case len(req.Agents) > 0:
		r.NamedAgents = true
	case !req.All:
		r.Environment = req.Environment
	}
	if !e.fleet.Draining() {
		r.Node = e.fleet.NodeID() // this node drives it, from the start
	}
	rows := make([]store.RolloutAgent, len(agents))
	n := 0
	for i, a := range agents {
		rows[i] = store.RolloutAgent{AgentID: a.ID, AgentName: a.Name, FromVersion: a.Version, Position: i, UpdatedAt: now}
		if a.Version == version {
			rows[i].State, rows[i].Reason = api.UpgradeSucceeded, "already at "+version
			continue
		}
		rows[i].Batch = n/req.Batch + 1
		rows[i].State, rows[i].Reason = api.UpgradeQueued, fmt.Sprintf("waiting for batch %d", rows[i].Batch)
		n++
	}
	if err := e.st.CreateRollout(ctx, r, rows); err != nil {
		if errors.Is(err, store.ErrInRollout) {
			// Another node started a rollout on these agents since the
			// check above.
			return api.RolloutView{}, kind.Errorf(kind.ErrConflict, "%v; wait for it to finish (tendril-server rollout list)", err)
		}
		return api.RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	e.log.Info("rollout started", zap.String("rollout", r.ID), zap.String("version", version),
		zap.String("environment", r.Environment), zap.Int("agents", len(rows)), zap.Int("to_upgrade", n), zap.Int("batch", r.Batch))
	if r.Node == e.fleet.NodeID() {
		e.startRolloutEngine(r.ID)
	} else {
		e.fleet.NotifyUpgrade(r.ID) // a node that is not draining takes it
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
		return nil, kind.Errorf(kind.ErrNotFound, "no agent named %s (see \"tendril-server agents\")", strings.Join(unknown, ", "))
	}
	return agents, nil
}

// Rollout returns one rollout with its agents.
func (e *Engine) Rollout(ctx context.Context, id string) (api.RolloutView, error) {
	r, err := e.st.Rollout(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return api.RolloutView{}, kind.Errorf(kind.ErrNotFound, "no rollout %q", id)
	}
	if err != nil {
		return api.RolloutView{}, err
	}
	agents, err := e.st.RolloutAgents(ctx, id)
	if err != nil {
		return api.RolloutView{}, err
	}
	return e.withPause(ctx, rolloutView(r, agents, true))
}

// Rollouts lists rollouts, newest first, with their counts but not their
// agents.
func (e *Engine) Rollouts(ctx context.Context) ([]api.RolloutView, error) {
	rs, err := e.st.Rollouts(ctx, false, 100)
	if err != nil {
		return nil, err
	}
	out := make([]api.RolloutView, len(rs))
	for i, r := range rs {
		agents, err := e.st.RolloutAgents(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		if out[i], err = e.withPause(ctx, rolloutView(r, agents, false)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Resume takes over the running rollouts that no live node
// drives: those a previous run of this node, or a node that stopped or
// died, left running. Agents it was sending a package to start again
// when idle (the agent resumes from what it holds; one that already
// swapped connects at the new version and succeeds); an agent awaiting
// its reconnect keeps its deadline, counted from when it started
// waiting.
func (e *Engine) Resume(ctx context.Context) error {
	rs, err := e.st.Rollouts(ctx, true, 1000)
	if err != nil {
		return fmt.Errorf("resume rollouts: %w", err)
	}
	for _, r := range rs {
		e.adoptRollout(ctx, r)
	}
	return nil
}

// adoptRollout claims a running rollout whose batches no live node
// drives, and drives them.
func (e *Engine) adoptRollout(ctx context.Context, r store.Rollout) {
	me := e.fleet.NodeID()
	if e.state.isRunning(r.ID) || e.fleet.Draining() {
		return
	}
	if r.Node != "" && r.Node != me && !e.fleet.NodeGone(ctx, r.Node) {
		return
	}
	ok, err := e.st.ClaimRollout(ctx, r.ID, r.Node, me)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Error("claim rollout failed", zap.String("rollout", r.ID), zap.Error(err))
		}
		return
	}
	if !ok {
		return
	}
	if r.Node != "" {
		e.log.Info("rollout resumed", zap.String("rollout", r.ID), zap.String("version", r.Version), zap.String("from_node", r.Node))
	}
	e.startRolloutEngine(r.ID)
}

// Sweep adopts running rollouts no live node drives, and drives
// the upgrade of each agent connected here that a rollout waits to
// upgrade.
func (e *Engine) Sweep(ctx context.Context) {
	rs, err := e.st.Rollouts(ctx, true, 1000)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Error("look for rollouts to drive failed", zap.Error(err))
		}
		return
	}
	for _, r := range rs {
		e.adoptRollout(ctx, r)
		if e.fleet.Draining() {
			continue // its agents go to other nodes, which upgrade them
		}
		agents, err := e.st.RolloutAgents(ctx, r.ID)
		if err != nil {
			if ctx.Err() == nil {
				e.log.Error("look for agents to upgrade failed", zap.String("rollout", r.ID), zap.Error(err))
			}
			continue
		}
		for _, a := range agents {
			if a.State != api.UpgradeWaitingForIdle || !e.fleet.Connected(a.AgentID) {
				continue
			}
			done, ok := e.state.tryDrive(a.AgentID)
			if !ok {
				continue
			}
			e.goFunc(func() {
				defer done()
				e.upgradeAgent(e.ctx, r, a)
			})
		}
	}
}

// startRolloutEngine runs the batches of a rollout this node claimed,
// unless they already run here.
func (e *Engine) startRolloutEngine(id string) {
	u := &e.state
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
	e.goFunc(func() {
		defer func() {
			u.mu.Lock()
			delete(u.running, id)
			u.mu.Unlock()
		}()
		e.runRollout(e.ctx, id)
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
		if a.State == api.UpgradeFailed || a.State == api.UpgradeRolledBack {
			n++
		}
	}
	return n
}

// runRollout drives a rollout's batches: every agent of a batch at once,
// the next batch only once each of them is final, and nothing more once
// failures exceed the rollout's maximum. It starts a batch by moving its
// agents to waiting_for_idle; the node each agent is connected to then
// upgrades it (Sweep, upgradeAgent), and the agent's next Hello,
// on whichever node, concludes. What no node may be there to see is
// judged here: an agent not connected and idle within the idle timeout,
// one that does not come back within its grace period, and a transfer
// whose sending node is gone. It returns when the rollout ends, when
// another node took it over, when this node drains (another takes it
// over), or when ctx ends (the coordinator stops).
func (e *Engine) runRollout(ctx context.Context, id string) {
	log := e.log.With(zap.String("rollout", id))
	me := e.fleet.NodeID()
	for ctx.Err() == nil {
		changed := e.state.wait()
		r, err := e.st.Rollout(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("load rollout failed", zap.Error(err))
			}
			return
		}
		if r.State != api.RolloutRunning || r.Node != me {
			return
		}
		if e.fleet.Draining() {
			if ok, err := e.st.ClaimRollout(ctx, id, me, ""); err == nil && ok {
				log.Info("rollout handed over: this node is draining")
				e.fleet.NotifyUpgrade(id)
			}
			return
		}
		agents, err := e.st.RolloutAgents(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("load rollout agents failed", zap.Error(err))
			}
			return
		}
		cur, started := 0, false
		for _, a := range agents {
			if a.Batch > 0 && !api.UpgradeFinal(a.State) && (cur == 0 || a.Batch < cur) {
				cur = a.Batch
			}
		}
		for _, a := range agents {
			if a.Batch == cur && a.State != api.UpgradeQueued {
				started = true
			}
		}
		n := failures(agents)
		switch {
		case cur == 0 && n > r.MaxFailures, cur != 0 && !started && n > r.MaxFailures:
			e.finishRollout(ctx, r, api.RolloutHalted, fmt.Sprintf("halted after %d failures", n))
			return
		case cur == 0 && n > 0:
			e.finishRollout(ctx, r, api.RolloutSucceeded, fmt.Sprintf("%d failures, within the maximum of %d", n, r.MaxFailures))
			return
		case cur == 0:
			e.finishRollout(ctx, r, api.RolloutSucceeded, "every agent runs "+r.Version)
			return
		}
		if !started && e.batchHeld(ctx, id, agents, cur) {
			waitHeld(ctx, changed)
			continue
		}
		next := e.judgeBatch(ctx, r, agents, cur)
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
func (e *Engine) judgeBatch(ctx context.Context, r store.Rollout, agents []store.RolloutAgent, cur int) time.Time {
	me := e.fleet.NodeID()
	now := time.Now()
	next := now.Add(idleRecheck)
	moved, changed := false, false
	for _, a := range agents {
		if a.Batch != cur || api.UpgradeFinal(a.State) {
			continue
		}
		switch a.State {
		case api.UpgradeQueued:
			if e.setUpgradeState(ctx, r.ID, a.AgentID, []string{api.UpgradeQueued}, api.UpgradeWaitingForIdle,
				"waiting for the agent to be connected and idle") {
				moved = true
			}
		case api.UpgradeWaitingForIdle:
			deadline := a.UpdatedAt.Add(e.cfg.IdleTimeout)
			if now.Before(deadline) {
				next = minTime(next, deadline)
				continue
			}
			why := fmt.Sprintf("agent was not connected (waited %s)", e.cfg.IdleTimeout)
			if ag, err := e.st.AgentByID(ctx, a.AgentID); err == nil && e.fleet.ConnectedAnywhere(ag) {
				why = fmt.Sprintf("agent stayed busy (waited %s for its tasks to end)", e.cfg.IdleTimeout)
			}
			changed = e.setUpgradeState(ctx, r.ID, a.AgentID, []string{api.UpgradeWaitingForIdle}, api.UpgradeFailed, why) || changed
		case api.UpgradeSending, api.UpgradeInstalling:
			if a.Node == me && e.state.drivesFor(a.AgentID) || a.Node != me && !e.fleet.NodeGone(ctx, a.Node) {
				continue
			}
			changed = e.setUpgradeNode(ctx, r.ID, a.AgentID, []string{a.State}, a.Node, api.UpgradeWaitingForIdle, "",
				"the coordinator node sending it stopped; the transfer starts again when the agent is idle") || changed
		case api.UpgradeAwaitingReconnect:
			wait := time.Duration(r.GraceSeconds)*time.Second + e.cfg.ReconnectMargin
			deadline := a.UpdatedAt.Add(wait)
			if now.Before(deadline) {
				next = minTime(next, deadline)
				continue
			}
			changed = e.setUpgradeState(ctx, r.ID, a.AgentID, []string{api.UpgradeAwaitingReconnect}, api.UpgradeFailed,
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

func (e *Engine) finishRollout(ctx context.Context, r store.Rollout, state, reason string) {
	if err := e.st.FinishRollout(context.WithoutCancel(ctx), r.ID, state, reason, time.Now().UTC()); err != nil {
		e.log.Error("record rollout result failed", zap.String("rollout", r.ID), zap.Error(err))
		return
	}
	e.log.Info("rollout finished", zap.String("rollout", r.ID), zap.String("state", state), zap.String("reason", reason))
	e.state.notify()
}

// setUpgradeState records an agent's step (compare-and-set on from) and
// reports whether it changed.
func (e *Engine) setUpgradeState(ctx context.Context, rolloutID, agentID string, from []string, to, reason string) bool {
	changed, err := e.st.SetRolloutAgentState(context.WithoutCancel(ctx), rolloutID, agentID, from, to, reason, time.Now().UTC())
	if err != nil {
		e.log.Error("record rollout agent state failed", zap.String("rollout", rolloutID), zap.String("agent", agentID), zap.Error(err))
		return false
	}
	if changed {
		e.log.Info("rollout agent state changed", zap.String("rollout", rolloutID), zap.String("agent", agentID),
			zap.String("state", to), zap.String("reason", reason))
		e.state.notify()
		e.notifyUpgradeState(rolloutID, to)
	}
	return changed
}

// notifyUpgradeState tells every node that an agent of a rollout moved to
// state to: the rollout's driver looks again, and, for an agent now
// waiting to be upgraded, the node holding it starts.
func (e *Engine) notifyUpgradeState(rolloutID, to string) {
	if to == api.UpgradeWaitingForIdle {
		e.fleet.NotifyUpgrade(rolloutID)
		return
	}
	e.fleet.NotifyRollout(rolloutID)
}

// setUpgradeNode is setUpgradeState that also moves the agent's sending
// node from fromNode to toNode, only if it is fromNode.
func (e *Engine) setUpgradeNode(ctx context.Context, rolloutID, agentID string, from []string, fromNode, to, toNode, reason string) bool {
	changed, err := e.st.SetRolloutAgentNode(context.WithoutCancel(ctx), rolloutID, agentID, from, fromNode, to, toNode, reason, time.Now().UTC())
	if err != nil {
		e.log.Error("record rollout agent state failed", zap.String("rollout", rolloutID), zap.String("agent", agentID), zap.Error(err))
		return false
	}
	if changed {
		e.log.Info("rollout agent state changed", zap.String("rollout", rolloutID), zap.String("agent", agentID),
			zap.String("state", to), zap.String("reason", reason))
		e.state.notify()
		e.notifyUpgradeState(rolloutID, to)
	}
	return changed
}

var inFlight = []string{api.UpgradeSending, api.UpgradeInstalling}

// upgradeAgent upgrades an agent connected to this node that its rollout
// waits for: once the agent is idle it sends the package, and leaves the
// agent awaiting its reconnect, failed, or waiting again. It returns
// early if the agent leaves this node (the node it connects to next takes
// over). Success is never concluded here: only NoteHello, seeing the new
// version connect, records it.
func (e *Engine) upgradeAgent(ctx context.Context, r store.Rollout, a store.RolloutAgent) {
	log := e.log.With(zap.String("rollout", r.ID), zap.String("agent", a.AgentName))
	me := e.fleet.NodeID()
	attempts := 0
	for ctx.Err() == nil {
		cur, err := e.st.RolloutAgent(ctx, r.ID, a.AgentID)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("load rollout agent failed", zap.Error(err))
			}
			return
		}
		if cur.State != api.UpgradeWaitingForIdle {
			return // its batch's driver, or another node, takes it from here
		}
		idle, why := e.waitIdle(ctx, a.AgentID, cur.UpdatedAt.Add(e.cfg.IdleTimeout))
		if ctx.Err() != nil {
			return
		}
		if !idle {
			if why == "" {
				return // the agent left: the node it joins upgrades it
			}
			e.setUpgradeState(ctx, r.ID, a.AgentID, []string{api.UpgradeWaitingForIdle}, api.UpgradeFailed, why)
			return
		}
		if !e.setUpgradeNode(ctx, r.ID, a.AgentID, []string{api.UpgradeWaitingForIdle}, "", api.UpgradeSending, me,
			"sending agent "+r.Version) {
			continue
		}
		err = e.sendAgentPackage(ctx, a.AgentID, r)
		var re *protocol.RemoteError
		switch {
		case err == nil:
			e.setUpgradeNode(ctx, r.ID, a.AgentID, inFlight, me, api.UpgradeAwaitingReconnect, "",
				fmt.Sprintf("the agent installed %s and is restarting into it; waiting for it to connect", r.Version))
			return
		case ctx.Err() != nil:
			return
		case protocol.IsCode(err, protocol.CodeUnavailable):
			// A task started between the idle check and the offer:
			// not a failure, the agent is simply not idle yet.
			e.state.setBusy(a.AgentID, true)
			e.setUpgradeNode(ctx, r.ID, a.AgentID, inFlight, me, api.UpgradeWaitingForIdle, "",
				"the agent became busy; waiting for its tasks to end")
		case errors.As(err, &re), errors.Is(err, errUpgradeRefused):
			msg := err.Error()
			if re != nil {
				msg = "the agent refused the upgrade: " + re.Message
			}
			e.setUpgradeNode(ctx, r.ID, a.AgentID, inFlight, me, api.UpgradeFailed, "", msg)
			return
		default:
			attempts++
			if attempts >= maxSendAttempts {
				e.setUpgradeNode(ctx, r.ID, a.AgentID, inFlight, me, api.UpgradeFailed, "",
					fmt.Sprintf("sending the package failed %d times: %v", attempts, err))
				return
			}
			log.Warn("agent upgrade transfer interrupted, will retry", zap.Error(err))
			e.setUpgradeNode(ctx, r.ID, a.AgentID, inFlight, me, api.UpgradeWaitingForIdle, "",
				fmt.Sprintf("sending was interrupted (%v); it starts again when the agent is idle", err))
			// The next attempt goes over a new session: a session that
			// broke is still listed for a moment, and an attempt on it
			// fails at once, so three would be spent in a millisecond.
			e.waitSessionGone(ctx, a.AgentID, retryAfterCut)
		}
	}
}

// waitSessionGone waits, at most max, until the agent has no session on
// this node: a session cut mid-transfer is dropped from the list a
// moment after the transfer fails. A session that survived the failure
// (a stream error only) costs the wait, which then serves as a pause
// between attempts.
func (e *Engine) waitSessionGone(ctx context.Context, agentID string, max time.Duration) {
	t := time.NewTimer(max)
	defer t.Stop()
	for {
		changed := e.fleet.SessionsChanged()
		if !e.fleet.Connected(agentID) {
			return
		}
		select {
		case <-changed:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// waitIdle waits until the agent, connected here, runs no task, and
// reports true; or false and "" once it is no longer connected here; or,
// at the deadline, false and why.
func (e *Engine) waitIdle(ctx context.Context, agentID string, deadline time.Time) (bool, string) {
	for {
		changed, added := e.state.wait(), e.fleet.SessionsChanged()
		if !e.fleet.Connected(agentID) {
			return false, ""
		}
		busy, err := e.agentBusy(ctx, agentID)
		if err == nil && !busy {
			return true, ""
		}
		if busy && e.state.isBusy(agentID) {
			// Its last report said busy: ask again rather than wait
			// for the next health interval.
			e.fleet.CheckHealth(ctx, agentID)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, fmt.Sprintf("agent stayed busy (waited %s for its tasks to end)", e.cfg.IdleTimeout)
		}
		t := time.NewTimer(min(left, idleRecheck))
		select {
		case <-changed:
		case <-added:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false, ""
		}
		t.Stop()
	}
}

// agentBusy reports whether the agent runs tasks: by its own last report
// (Hello or health), or by the tasks no node has seen end.
func (e *Engine) agentBusy(ctx context.Context, agentID string) (bool, error) {
	if e.state.isBusy(agentID) {
		return true, nil
	}
	ts, err := e.st.ListTasks(ctx, store.TaskFilter{AgentID: agentID, Unfinished: true, Limit: 1})
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
func (e *Engine) sendAgentPackage(ctx context.Context, agentID string, r store.Rollout) error {
	a, err := e.st.AgentByID(ctx, agentID)
	if err != nil {
		return kind.Errorf(errUpgradeRefused, "agent record: %v", err)
	}
	p, err := e.st.AgentPackage(ctx, r.Version, a.OS, a.Arch)
	if errors.Is(err, store.ErrNotFound) {
		return kind.Errorf(errUpgradeRefused, "no agent package %s for %s/%s", r.Version, a.OS, a.Arch)
	}
	if err != nil {
		return err
	}
	f, err := e.OpenAgentPackage(ctx, p)
	if err != nil {
		return kind.Errorf(errUpgradeRefused, "%v", err)
	}
	defer f.Close()
	hdr := protocol.AgentUpgrade{
		RolloutID:      r.ID,
		Package:        protocol.AgentPackage{Version: p.Version, OS: p.OS, Arch: p.Arch, SHA256: p.SHA256, Size: p.Size},
		Signature:      p.Signature,
		AllowDowngrade: r.AllowDowngrade,
		GraceSeconds:   r.GraceSeconds,
	}
	err = e.fleet.SendAgentPackage(ctx, agentID, hdr, f, p.Size, func() {
		e.setUpgradeState(ctx, r.ID, agentID, []string{api.UpgradeSending}, api.UpgradeInstalling,
			fmt.Sprintf("the agent is verifying, smoke-testing and installing %s", r.Version))
	})
	return err
}

// NoteHello tells the rollout engine about an agent's new session: whether
// it is busy, the outcome of its last upgrade if it reports one, and, if
// it now runs the version its running rollout installs, that the upgrade
// succeeded. It reports whether the upgrade report was recorded, which the
// Welcome acknowledges.
func (e *Engine) NoteHello(ctx context.Context, agentID, name string, h protocol.Hello) (acked bool) {
	e.state.setBusy(agentID, h.Busy)
	if rep := h.Upgrade; rep != nil {
		e.log.Info("agent reported an upgrade result", zap.String("agent", name), zap.String("rollout", rep.RolloutID),
			zap.String("from", rep.From), zap.String("to", rep.To), zap.String("result", rep.Result), zap.String("reason", rep.Reason))
		if err := e.recordUpgradeReport(ctx, agentID, name, *rep); err != nil {
			e.log.Error("record upgrade report failed", zap.String("agent", name), zap.Error(err))
		} else {
			acked = true
		}
	}
	rows, err := e.st.RunningRolloutAgents(ctx, agentID)
	if err != nil {
		e.log.Error("look up agent's rollout failed", zap.String("agent", name), zap.Error(err))
		return acked
	}
	for _, ra := range rows {
		r, err := e.st.Rollout(ctx, ra.RolloutID)
		if err != nil {
			e.log.Error("look up rollout failed", zap.String("rollout", ra.RolloutID), zap.Error(err))
			continue
		}
		if h.Version == r.Version {
			e.setUpgradeState(ctx, r.ID, agentID, []string{api.UpgradeWaitingForIdle, api.UpgradeSending,
				api.UpgradeInstalling, api.UpgradeAwaitingReconnect}, api.UpgradeSucceeded, "the new version connected")
		}
	}
	return acked
}

// recordUpgradeReport applies an agent's report of a rolled back or failed
// upgrade to its rollout. Later evidence wins: an agent recorded as
// succeeded that reports a rollback counts as a failure, and a finished
// rollout it pushes over its maximum is marked halted.
func (e *Engine) recordUpgradeReport(ctx context.Context, agentID, name string, rep protocol.UpgradeReport) error {
	if rep.RolloutID == "" || rep.Result == protocol.UpgradeCommitted {
		return nil // success is concluded from the version that connects
	}
	if rep.Result != protocol.UpgradeRolledBack && rep.Result != protocol.UpgradeFailed {
		e.log.Warn("unknown upgrade result reported", zap.String("agent", name), zap.String("result", rep.Result))
		return nil
	}
	r, err := e.st.Rollout(ctx, rep.RolloutID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // not one of ours (another coordinator's, or deleted): logged only
	}
	if err != nil {
		return err
	}
	cur, err := e.st.RolloutAgent(ctx, r.ID, agentID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	to := api.UpgradeRolledBack
	what := "the agent rolled back to its previous version"
	if rep.Result == protocol.UpgradeFailed {
		to, what = api.UpgradeFailed, "the agent reports the upgrade failed"
	}
	reason := what
	if rep.Reason != "" {
		reason += ": " + rep.Reason
	}
	if cur.State == to && cur.Reason == reason {
		return nil // the same report again: its Welcome was lost
	}
	from := []string{api.UpgradeWaitingForIdle, api.UpgradeSending, api.UpgradeInstalling,
		api.UpgradeAwaitingReconnect, api.UpgradeSucceeded, api.UpgradeFailed}
	if !e.setUpgradeState(ctx, r.ID, agentID, from, to, reason) {
		return nil
	}
	if cur.State == api.UpgradeSucceeded && r.State == api.RolloutSucceeded {
		agents, err := e.st.RolloutAgents(ctx, r.ID)
		if err != nil {
			return err
		}
		if n := failures(agents); n > r.MaxFailures {
			e.finishRollout(ctx, r, api.RolloutHalted, fmt.Sprintf("halted after %d failures (%s rolled back after its new version connected)", n, name))
		}
	}
	return nil
}
