package server

// High availability: several coordinator nodes share one PostgreSQL
// database. Each node registers itself in the nodes table and beats a
// heartbeat; each serves the agents connected to it. Tasks live in the
// database and are driven by the node holding their agent's session,
// which claims them with a compare-and-set (store.Store.ClaimTask): a task
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
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/store"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

const (
	// maxSweep bounds the unfinished tasks one sweep considers.
	maxSweep = 1 << 16
	// movePerSecond is how many agents a draining node sends away per
	// second of spread, as goAwayAll does.
	movePerSecond = 500
)

// errDraining refuses a session on a draining node.
var errDraining = errors.New("this coordinator node is draining")

// nodeState is what this node does about being one of several: waking
// its task sweeps, and the agents it is moving away while draining.
type nodeState struct {
	wake chan struct{} // buffered: a sweep for tasks to claim is due

	// callsPruned is when the heartbeat last pruned the calls between
	// nodes; only the heartbeat's goroutine uses it.
	callsPruned time.Time

	mu sync.Mutex
	// moving holds agents told to move that have not yet gone.
	moving map[string]bool
}

// nodeID is this node's ID.
func (s *Server) nodeID() string { return s.members.ID() }

// stopNode records a clean stop, so that the other nodes take over the
// tasks of this node's agents at once rather than after missed
// heartbeats.
func (s *Server) stopNode(ctx context.Context) {
	if err := s.members.Stop(ctx); err != nil {
		s.log.Warn("record this node's stop failed; the others count it dead after missed heartbeats", zap.Error(err))
	}
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
			// Kicks that come meanwhile wait for one sweep after the gap:
			// every welcome kicks, and in a connect ramp back-to-back
			// sweeps were 8% of the coordinator's CPU (its ramp profile).
			select {
			case <-ctx.Done():
				return
			case <-time.After(sweepGap):
			}
		}
	})
	s.goFunc(func() {
		t := time.NewTicker(s.members.Interval())
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
			s.policy.Refresh(ctx)
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
// the other nodes, prune the long dead, sweep for tasks, take the calls
// a lost notification would have announced and, while draining, move idle
// agents away. Once an hour it prunes the calls other nodes left behind.
func (s *Server) beat(ctx context.Context) error {
	if err := s.members.Beat(ctx); err != nil {
		return err
	}
	s.kickClaims()
	s.rollouts.Changed()
	s.purgeIdempotencyKeys(ctx)
	if clustered(s.store) {
		s.takeCalls(ctx)
		if time.Since(s.node.callsPruned) > callRetention {
			s.node.callsPruned = time.Now()
			s.pruneCalls(ctx)
		}
	}
	if s.members.Draining() {
		s.moveIdleAgents()
	}
	return nil
}

// idempotencyPurgeEvery is how often a node drops the expired records of
// create requests' Idempotency-Keys.
const idempotencyPurgeEvery = time.Hour

func (s *Server) purgeIdempotencyKeys(ctx context.Context) {
	now := time.Now()
	last := s.purged.Load()
	if now.Sub(time.Unix(0, last)) < idempotencyPurgeEvery || !s.purged.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	if n, err := s.idem.Purge(ctx); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("purge expired idempotency keys failed; trying again in an hour", zap.Error(err))
		}
	} else if n > 0 {
		s.log.Debug("expired idempotency keys purged", zap.Int("keys", n))
	}
}

// nodeAlive reports whether the node is known, and alive, as last read.
func (s *Server) nodeAlive(id string) (known, alive bool) { return s.members.Alive(id) }

// nodeGone reports whether a node other than this one is dead, or gone
// from the database.
func (s *Server) nodeGone(ctx context.Context, id string) bool { return s.members.Gone(ctx, id) }

// notifyCluster wakes every node, this one included.
func (s *Server) notifyCluster(kind string, args ...string) {
	s.members.Notify(s.ctx, kind, args...)
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
		s.goFunc(func() { s.maint.Reload(s.ctx) })
		if clustered(s.store) {
			s.goFunc(func() { s.takeCalls(s.ctx) })
		}
	case cluster.NotifyTasks:
		s.kickClaims()
	case cluster.NotifyCancel:
		s.goFunc(func() { s.cancelHere(s.ctx, rest) })
	case cluster.NotifyDrop:
		s.goFunc(func() {
			s.dropAgent(rest, "this agent was deleted from the coordinator")
			s.abandonHere(rest)
		})
	case cluster.NotifyMoved:
		agentID, node, _ := strings.Cut(rest, " ")
		if node != s.nodeID() && s.sessions.get(agentID) != nil {
			s.goFunc(func() { s.endStaleSession(s.ctx, agentID) })
		}
	case cluster.NotifyDrain:
		if rest == s.nodeID() {
			s.goFunc(func() {
				if _, err := s.members.Refresh(s.ctx); err != nil && s.ctx.Err() == nil {
					s.log.Error("read this node's draining flag failed", zap.Error(err))
				}
			})
		}
	case cluster.NotifyMaintenance:
		s.goFunc(func() { s.maint.Reload(s.ctx) })
	case cluster.NotifyRollout:
		s.rollouts.Changed()
	case cluster.NotifyUpgrade:
		s.rollouts.Changed()
		s.kickClaims()
	case cluster.NotifyRedial:
		s.dialer.Redial(rest)
	case cluster.NotifyCall:
		if node, _, _ := strings.Cut(rest, " "); node == s.nodeID() {
			s.goFunc(func() { s.takeCalls(s.ctx) })
		}
	case cluster.NotifyAnswer:
		s.calls.wake(rest)
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

// sweepGap is the least time between two sweeps for tasks to claim: a
// reconnected agent's tasks are driven within it, and a fleet connecting
// at once costs ten sweeps a second at most.
const sweepGap = 100 * time.Millisecond

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
	holds := make(map[string]bool) // by agent: its record says this node holds its session
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
		takeover := t.Node != "" && t.Node != me
		if takeover && !s.nodeGone(ctx, t.Node) && !s.holdsSession(ctx, t.AgentID, holds) {
			continue // its driver lets go once it loses the agent
		}
		if t.State == api.TaskQueued && t.Node != me && s.members.Draining() {
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
		if takeover {
			s.log.Info("task adopted from another node: its agent connected here, or that node is gone", zap.String("task", t.ID),
				zap.String("agent", t.AgentName), zap.String("from", t.Node), zap.String("state", t.State))
		}
		t.Node = me
		s.startTask(t, nil)
	}
	if released {
		s.notifyCluster(cluster.NotifyTasks)
	}
}

// holdsSession reports whether this node holds the agent's session as
// its record says: the last Hello, which the agent sent here, recorded
// this node, so no other node can still follow its tasks: an agent has
// one session at a time, and the one it had on the node driving them
// ended before it connected here. Taking its tasks over then need not
// wait for that node to count as dead. The agent knows its tasks by
// ticket: the new driver follows a running one's log from where the store
// left off and records its end; a queued one the agent already has is
// not started twice. held caches the answer per agent for one sweep.
func (s *Server) holdsSession(ctx context.Context, agentID string, held map[string]bool) bool {
	if h, ok := held[agentID]; ok {
		return h
	}
	a, err := s.store.AgentByID(ctx, agentID)
	h := err == nil && a.Node == s.nodeID() && s.sessions.get(agentID) != nil
	held[agentID] = h
	return h
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

// cancelHere stops a task this node drives, or whose agent is connected
// here, for a cancellation asked through another node.
func (s *Server) cancelHere(ctx context.Context, id string) {
	t, err := s.store.Task(ctx, id)
	if err != nil || t.Finished() {
		return
	}
	if run := s.tasks.get(id); run != nil {
		if t.State == api.TaskQueued {
			run.cancelStart()
		}
		run.kick() // see CancelTask
	}
	if as := s.sessions.get(t.AgentID); as != nil {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := protocol.CallSigned(cctx, as.sess, as.sign, protocol.TypeTaskCancel, protocol.TaskCancel{Ticket: id}, protocol.TypeAck, nil)
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
	if !s.members.SetDraining(on) {
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
			protocol.CallSigned(ctx, as.sess, as.sign, protocol.TypeGoAway, protocol.GoAway{
				Reason:           fmt.Sprintf("coordinator node %s is draining; connect to another node", s.members.Name()),
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
		Reason:           fmt.Sprintf("coordinator node %s is draining; connect to another node", s.members.Name()),
		Reconnect:        true,
		RetryAfterMillis: rand.Int64N(1000),
	}, protocol.TypeAck, nil)
	protocol.WriteError(st, protocol.CodeUnavailable, fmt.Sprintf("coordinator node %s is draining; connect to another node", s.members.Name()))
}

// clustered reports whether a node with this store shares its database
// with other nodes: with SQLite it is the only one.
func clustered(st store.Store) bool {
	_, single := unwrapStore(st).(*sqlstore.SQLite)
	return !single
}

// unwrapStore returns the store under the metrics' timing, for what
// asks which store it is.
func unwrapStore(st store.Store) store.Store {
	if u, ok := st.(interface{ Unwrap() store.Store }); ok {
		return u.Unwrap()
	}
	return st
}
