package server

// High availability: several coordinator nodes share one PostgreSQL
// database. Each node registers itself in the nodes table and beats a
// heartbeat; each serves the agents connected to it. Tasks live in the
// database and are driven by the node holding their agent's session,
// which claims them with a compare-and-set (store.ClaimTask): a task
// created through any node reaches its agent wherever it is connected,
// and exactly one node drives it. Nodes wake each other with
// LISTEN/NOTIFY; every heartbeat also sweeps for work a missed
// notification would have announced. With SQLite the one node is the
// whole cluster and notifies itself in process.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/store"
)

// DefaultHeartbeatInterval is how often a node records that it is alive
// unless told otherwise; the others count it dead after store.DeadAfter
// missed beats.
const DefaultHeartbeatInterval = 5 * time.Second

// Notifications between nodes: a kind, then its arguments, space
// separated. "" (from the store) means some may have been missed.
const (
	notifyTasks       = "tasks"       // tasks wait for a driver
	notifyCancel      = "cancel"      // cancel TASK: its driver stops it
	notifyDrop        = "drop"        // drop AGENT: deleted, end its session
	notifyMoved       = "moved"       // moved AGENT NODE: it connected to NODE
	notifyDrain       = "drain"       // drain NODE: its draining flag changed
	notifyMaintenance = "maintenance" // maintenance mode changed
	notifyRollout     = "rollout"     // rollout ID: a rollout's state changed
	notifyUpgrade     = "upgrade"     // upgrade ID: a rollout's agents wait to be upgraded
)

const (
	// maxSweep bounds the unfinished tasks one sweep considers.
	maxSweep = 1 << 16
	// pruneAfter is how long the row of a node that stopped beating is
	// kept, so that nodes list can say what happened to it.
	pruneAfter = 24 * time.Hour
	// pruneEvery is how often a node prunes.
	pruneEvery = time.Hour
	// movePerSecond is how many agents a draining node sends away per
	// second of spread, as goAwayAll does.
	movePerSecond = 500
)

// errDraining refuses a session on a draining node.
var errDraining = errors.New("this coordinator node is draining")

// nodeState is this coordinator's place among the nodes sharing its
// database.
type nodeState struct {
	self     store.Node    // as registered
	draining atomic.Bool   // refuse sessions, claim no queued task
	wake     chan struct{} // buffered: a sweep for tasks to claim is due

	mu     sync.Mutex
	nodes  map[string]store.Node // every node as last read, by ID
	pruned time.Time
	// moving holds agents told to move that have not yet gone.
	moving map[string]bool
}

// id is this node's ID.
func (s *Server) nodeID() string { return s.node.self.ID }

// registerNode records this node in the database. A previous run of the
// same name that was killed is still counted alive for a few heartbeats:
// the registration waits that long, then refuses a name another running
// node uses.
func (s *Server) registerNode(ctx context.Context) error {
	n := store.Node{
		ID: uuid.NewString(), Name: s.cfg.NodeName, Advertise: s.advertiseAddr(), HTTP: s.HTTPAddr(),
		Version: s.cfg.Version, StartedAt: time.Now().UTC(), HeartbeatEvery: s.cfg.HeartbeatInterval,
	}
	deadline := time.Now().Add((store.DeadAfter+1)*s.cfg.HeartbeatInterval + 2*time.Second)
	waited := false
	for {
		got, err := s.store.RegisterNode(ctx, n)
		if err == nil {
			s.node.self = got
			s.node.draining.Store(got.Draining)
			s.node.nodes = map[string]store.Node{got.ID: got}
			if got.Draining {
				s.log.Warn("this node starts draining, as it was when it stopped: it takes no agents until undrained (tendril-server node undrain)",
					zap.String("node", got.Name))
			}
			return nil
		}
		if !errors.Is(err, store.ErrNodeAlive) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: another coordinator runs with node name %q; give each node its own --node-name", err, n.Name)
		}
		if !waited {
			s.log.Warn("a previous run of this node still counts as alive; waiting for its heartbeat to go stale",
				zap.String("node", n.Name), zap.Error(err))
			waited = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("register node %s: %w", n.Name, ctx.Err())
		case <-time.After(min(s.cfg.HeartbeatInterval, 500*time.Millisecond)):
		}
	}
}

// stopNode records a clean stop, so that the other nodes take over the
// tasks of this node's agents at once rather than after missed
// heartbeats.
func (s *Server) stopNode(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.store.StopNode(ctx, s.nodeID(), time.Now().UTC()); err != nil {
		s.log.Warn("record this node's stop failed; the others count it dead after missed heartbeats", zap.Error(err))
		return
	}
	s.notifyCluster(notifyTasks)
}

// runCluster beats the heartbeat, listens for the other nodes and sweeps
// for tasks to claim until ctx ends.
func (s *Server) runCluster(ctx context.Context) {
	s.goFunc(func() {
		s.store.Listen(ctx, s.onNotify, func(err error, wait time.Duration) {
			s.log.Warn("lost the database connection that listens for other nodes; retrying", zap.Error(err), zap.Duration("retry_in", wait))
		})
	})
	s.goFunc(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.node.wake:
			}
			s.sweepTasks(ctx)
			s.rollouts.Sweep(ctx)
		}
	})
	s.goFunc(func() {
		t := time.NewTicker(s.cfg.HeartbeatInterval)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			err := s.beat(ctx)
			// Another node may have changed the machine policy.
			s.refreshPolicy(ctx)
			switch {
			case err != nil && ctx.Err() == nil && !failing:
				s.log.Error("heartbeat failed; the other nodes count this one dead if it goes on", zap.Error(err))
				failing = true
			case err == nil && failing:
				s.log.Info("heartbeat recorded again")
				failing = false
			}
		}
	})
}

// beat records the heartbeat, then does what is due on every beat: read
// the other nodes, prune the long dead, sweep for tasks and, while
// draining, move idle agents away.
func (s *Server) beat(ctx context.Context) error {
	err := s.store.HeartbeatNode(ctx, s.nodeID())
	if errors.Is(err, store.ErrNotFound) {
		// Pruned while this node could not reach the database for a day,
		// or marked stopped by mistake: record it again.
		n := s.node.self
		n.StartedAt = time.Now().UTC()
		if _, rerr := s.store.RegisterNode(ctx, n); rerr != nil {
			return fmt.Errorf("register again after the node's record was lost: %w", rerr)
		}
		s.log.Warn("this node's record had gone from the database; registered it again")
		err = nil
	}
	if err != nil {
		return err
	}
	if _, err := s.refreshNodes(ctx); err != nil {
		return err
	}
	s.node.mu.Lock()
	prune := time.Since(s.node.pruned) > pruneEvery
	if prune {
		s.node.pruned = time.Now()
	}
	s.node.mu.Unlock()
	if prune {
		if n, err := s.store.PruneNodes(ctx, pruneAfter); err != nil {
			s.log.Warn("prune dead nodes failed", zap.Error(err))
		} else if n > 0 {
			s.log.Info("forgot nodes dead for a day", zap.Int("nodes", n))
		}
	}
	s.kickClaims()
	s.rollouts.Changed()
	if s.node.draining.Load() {
		s.moveIdleAgents()
	}
	return nil
}

// refreshNodes reads every node, and applies this node's draining flag
// should a notification of it have been missed.
func (s *Server) refreshNodes(ctx context.Context) ([]store.Node, error) {
	all, err := s.store.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	m := make(map[string]store.Node, len(all))
	for _, n := range all {
		m[n.ID] = n
	}
	s.node.mu.Lock()
	s.node.nodes = m
	s.node.mu.Unlock()
	if self, ok := m[s.nodeID()]; ok {
		s.applyDraining(self.Draining)
	}
	return all, nil
}

// nodeAlive reports whether the node is known, and alive, as last read.
func (s *Server) nodeAlive(id string) (known, alive bool) {
	if id == s.nodeID() {
		return true, true
	}
	s.node.mu.Lock()
	defer s.node.mu.Unlock()
	n, ok := s.node.nodes[id]
	return ok, ok && n.Alive()
}

// nodeGone reports whether a node other than this one is dead, or gone
// from the database. A node unknown here may have started since the last
// beat: the nodes are read again before it is taken for gone.
func (s *Server) nodeGone(ctx context.Context, id string) bool {
	if id == s.nodeID() {
		return false
	}
	known, alive := s.nodeAlive(id)
	if !known {
		if _, err := s.refreshNodes(ctx); err != nil {
			return false // when in doubt, it lives
		}
		_, alive = s.nodeAlive(id)
	}
	return !alive
}

// notifyCluster wakes every node, this one included.
func (s *Server) notifyCluster(kind string, args ...string) {
	payload := strings.Join(append([]string{kind}, args...), " ")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 10*time.Second)
	defer cancel()
	if err := s.store.Notify(ctx, payload); err != nil {
		// Every beat sweeps anyway: the others learn it late, not never.
		s.log.Warn("notify the other nodes failed", zap.String("notification", payload), zap.Error(err))
	}
}

// onNotify handles a notification. It runs on the listener's goroutine
// (with SQLite, on the notifier's), so anything slow runs in a goroutine
// of its own.
func (s *Server) onNotify(payload string) {
	kind, rest, _ := strings.Cut(payload, " ")
	switch kind {
	case "":
		s.kickClaims()
		s.rollouts.Changed()
		s.goFunc(func() { s.reloadMaintenance(s.ctx) })
	case notifyTasks:
		s.kickClaims()
	case notifyCancel:
		s.goFunc(func() { s.cancelHere(s.ctx, rest) })
	case notifyDrop:
		s.goFunc(func() {
			s.dropAgent(rest, "this agent was deleted from the coordinator")
			s.abandonHere(rest)
		})
	case notifyMoved:
		agentID, node, _ := strings.Cut(rest, " ")
		if node != s.nodeID() && s.sessions.get(agentID) != nil {
			s.goFunc(func() { s.endStaleSession(s.ctx, agentID) })
		}
	case notifyDrain:
		if rest == s.nodeID() {
			s.goFunc(func() {
				if _, err := s.refreshNodes(s.ctx); err != nil && s.ctx.Err() == nil {
					s.log.Error("read this node's draining flag failed", zap.Error(err))
				}
			})
		}
	case notifyMaintenance:
		s.goFunc(func() { s.reloadMaintenance(s.ctx) })
	case notifyRollout:
		s.rollouts.Changed()
	case notifyUpgrade:
		s.rollouts.Changed()
		s.kickClaims()
	default:
		s.log.Debug("unknown notification", zap.String("notification", payload))
	}
}

// endStaleSession closes this node's session of an agent that connected
// to another node since: it is dead or dying, and would keep the agent's
// tasks from the new node. The database says which session is newer: the
// later Hello recorded its node last.
func (s *Server) endStaleSession(ctx context.Context, agentID string) {
	as := s.sessions.get(agentID)
	if as == nil {
		return
	}
	a, err := s.store.AgentByID(ctx, agentID)
	if err != nil || a.Node == s.nodeID() {
		return
	}
	s.log.Info("agent connected to another node; closing its session here", zap.String("agent", as.name))
	as.sess.Close()
}

// kickClaims asks for a sweep for tasks to claim; kicks during a sweep
// coalesce into one more.
func (s *Server) kickClaims() {
	select {
	case s.node.wake <- struct{}{}:
	default:
	}
}

// sweepTasks claims and drives the unfinished tasks of agents connected
// here that no live node drives, and lets go of those of agents that are
// not (the node that holds them claims them).
func (s *Server) sweepTasks(ctx context.Context) {
	ts, err := s.store.ListTasks(ctx, store.TaskFilter{Unfinished: true, Limit: maxSweep})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("look for tasks to drive failed", zap.Error(err))
		}
		return
	}
	me := s.nodeID()
	released := false
	for _, t := range ts {
		if ctx.Err() != nil {
			return
		}
		if s.tasks.get(t.ID) != nil {
			continue // driven here already
		}
		if s.sessions.get(t.AgentID) == nil {
			if t.Node == me {
				if ok, err := s.store.ClaimTask(ctx, t.ID, me, ""); err == nil && ok {
					released = true
				}
			}
			continue
		}
		if t.Node != "" && t.Node != me && !s.nodeGone(ctx, t.Node) {
			continue // its driver lets go once it loses the agent
		}
		if t.State == store.TaskQueued && t.Node != me && s.node.draining.Load() {
			continue // a draining node starts nothing new
		}
		ok, err := s.store.ClaimTask(ctx, t.ID, t.Node, me)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("claim task failed", zap.String("task", t.ID), zap.Error(err))
			}
			continue
		}
		if !ok {
			continue // another node got there first
		}
		if t.Node != "" && t.Node != me {
			s.log.Info("task adopted from a node that is gone", zap.String("task", t.ID), zap.String("agent", t.AgentName),
				zap.String("from", t.Node), zap.String("state", t.State))
		}
		t.Node = me
		s.startTask(t)
	}
	if released {
		s.notifyCluster(notifyTasks)
	}
}

// releaseTask lets go of a task this node drives but whose agent is no
// longer connected here, and wakes the nodes so that the one holding the
// agent claims it. It reports whether the task was released.
func (s *Server) releaseTask(id string) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 10*time.Second)
	defer cancel()
	ok, err := s.store.ClaimTask(ctx, id, s.nodeID(), "")
	if err != nil {
		// The next sweep tries again.
		s.log.Error("release task failed", zap.String("task", id), zap.Error(err))
		return false
	}
	return ok
}

// connectedAnywhere reports whether an agent has a session on this node
// or on another live one.
func (s *Server) connectedAnywhere(a store.Agent) bool {
	if s.sessions.get(a.ID) != nil {
		return true
	}
	if a.Node == "" || a.Node == s.nodeID() {
		return false
	}
	_, alive := s.nodeAlive(a.Node)
	return alive
}

// liveAddrs are the agent addresses of every live node, this one first:
// what join strings carry.
func (s *Server) liveAddrs(ctx context.Context) []string {
	addrs := []string{s.advertiseAddr()}
	all, err := s.refreshNodes(ctx)
	if err != nil {
		s.log.Warn("read nodes for a join string failed; it names this node only", zap.Error(err))
		return addrs
	}
	for _, n := range all {
		if n.ID != s.nodeID() && n.Alive() && n.Advertise != "" && !slices.Contains(addrs, n.Advertise) {
			addrs = append(addrs, n.Advertise)
		}
	}
	return addrs
}

// welcomeServers is what a Welcome tells an agent of the nodes, as last
// read: every live node's address, this one's first, when the database is
// shared; nothing with SQLite, whose one node is the one the agent knows.
func (s *Server) welcomeServers() []string {
	if _, single := s.store.(*store.SQLite); single {
		return nil
	}
	s.node.mu.Lock()
	others := make([]store.Node, 0, len(s.node.nodes))
	for _, n := range s.node.nodes {
		if n.ID != s.nodeID() && n.Alive() && n.Advertise != "" {
			others = append(others, n)
		}
	}
	s.node.mu.Unlock()
	slices.SortFunc(others, func(a, b store.Node) int { return strings.Compare(a.Name, b.Name) })
	addrs := []string{s.advertiseAddr()}
	for _, n := range others {
		if !slices.Contains(addrs, n.Advertise) {
			addrs = append(addrs, n.Advertise)
		}
	}
	return addrs
}

// cancelHere stops a task this node drives, or whose agent is connected
// here, for a cancellation asked through another node.
func (s *Server) cancelHere(ctx context.Context, id string) {
	t, err := s.store.Task(ctx, id)
	if err != nil || t.Finished() {
		return
	}
	if run := s.tasks.get(id); run != nil && t.State == store.TaskQueued {
		run.cancelStart()
	}
	if as := s.sessions.get(t.AgentID); as != nil {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := protocol.Call(cctx, as.sess, protocol.TypeTaskCancel, protocol.TaskCancel{Ticket: id}, protocol.TypeAck, nil)
		if err != nil && !protocol.IsCode(err, protocol.CodeBadRequest) {
			s.log.Warn("cancel task on agent failed", zap.String("task", id), zap.Error(err))
		}
	}
}

// abandonHere stops this node's runners of a deleted agent's tasks; the
// node that deleted it recorded their end.
func (s *Server) abandonHere(agentID string) {
	s.tasks.mu.Lock()
	defer s.tasks.mu.Unlock()
	for _, run := range s.tasks.runs {
		if run.agentID == agentID {
			run.abandon()
		}
	}
}

// drivesFor reports whether this node drives a task of the agent.
func (r *taskRuns) drivesFor(agentID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, run := range r.runs {
		if run.agentID == agentID {
			return true
		}
	}
	return false
}

// applyDraining switches draining on or off here.
func (s *Server) applyDraining(on bool) {
	if s.node.draining.Swap(on) == on {
		return
	}
	if on {
		s.log.Info("node draining: it takes no new agents or tasks, and moves its agents to other nodes as they become idle")
		s.moveIdleAgents()
		s.rollouts.Changed() // its rollouts' drivers hand them over
		return
	}
	s.log.Info("node undrained: it takes agents and tasks again")
	s.kickClaims()
}

// moveIdleAgents tells the agents connected here that this node drives
// no task for to connect to another node, spread over about a second per
// 500 agents so the other nodes are not hit by one storm.
func (s *Server) moveIdleAgents() {
	var idle []*agentSession
	s.node.mu.Lock()
	if s.node.moving == nil {
		s.node.moving = make(map[string]bool)
	}
	for _, as := range s.sessions.snapshot() {
		if !s.node.moving[as.agentID] && !s.tasks.drivesFor(as.agentID) && !s.rollouts.DrivesFor(as.agentID) {
			s.node.moving[as.agentID] = true
			idle = append(idle, as)
		}
	}
	s.node.mu.Unlock()
	if len(idle) == 0 {
		return
	}
	spread := min(time.Duration(len(idle)/movePerSecond+1)*time.Second, time.Minute)
	s.log.Info("asking idle agents to move to another node", zap.Int("agents", len(idle)), zap.Duration("spread", spread))
	for _, as := range idle {
		s.goFunc(func() {
			defer func() {
				s.node.mu.Lock()
				delete(s.node.moving, as.agentID)
				s.node.mu.Unlock()
			}()
			ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
			defer cancel()
			protocol.Call(ctx, as.sess, protocol.TypeGoAway, protocol.GoAway{
				Reason:           fmt.Sprintf("coordinator node %s is draining; connect to another node", s.node.self.Name),
				Reconnect:        true,
				RetryAfterMillis: rand.Int64N(spread.Milliseconds()),
			}, protocol.TypeAck, nil)
			as.sess.Close()
		})
	}
}

// refuseDraining answers a Hello on a draining node: a GoAway first, so
// that the agent tries its next address rather than back off, then the
// refusal on the Hello's stream.
func (s *Server) refuseDraining(ctx context.Context, sess *yamux.Session, st *yamux.Stream) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	protocol.Call(cctx, sess, protocol.TypeGoAway, protocol.GoAway{
		Reason:           fmt.Sprintf("coordinator node %s is draining; connect to another node", s.node.self.Name),
		Reconnect:        true,
		RetryAfterMillis: rand.Int64N(1000),
	}, protocol.TypeAck, nil)
	protocol.WriteError(st, protocol.CodeUnavailable, fmt.Sprintf("coordinator node %s is draining; connect to another node", s.node.self.Name))
}

// advertised is the agent address of this node as given or derived.
func advertised(listen, given string) string {
	if given != "" {
		return given
	}
	host, port, _ := net.SplitHostPort(listen)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = hostname()
	}
	return net.JoinHostPort(host, port)
}

// clustered reports whether a node with this store shares its database
// with other nodes: with SQLite it is the only one.
func clustered(st store.Store) bool {
	_, single := st.(*store.SQLite)
	return !single
}
