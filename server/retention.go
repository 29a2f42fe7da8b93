package server

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
)

// Disk retention on agents: the machine policy's rule for agents' task
// folders reaches every agent in Welcome, and connected agents that
// understand it (protocol.FeatureWorkRetention) as a TypeWorkRetention
// request when the policy changes, on whichever node it was changed. A
// request that fails is retried at the agent's next health check.

// retentionConcurrency bounds the requests a policy change sends at once,
// so that a fleet of thousands hears it quickly without a burst of
// thousands of streams.
const retentionConcurrency = 32

// retentionTimeout bounds one TypeWorkRetention request.
const retentionTimeout = 10 * time.Second

// retentionRule is the machine policy's rule as agents get it.
func (s *Server) retentionRule() protocol.WorkRetention {
	p := s.policy.Current()
	return protocol.WorkRetention{Keep: p.WorkKeep, MinFree: p.WorkMinFree}
}

// spreadRetention tells connected agents the rule each time the machine
// policy changes (changed is the policy's Watch), until ctx is done.
func (s *Server) spreadRetention(ctx context.Context, changed <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		rule := s.retentionRule()
		sem := make(chan struct{}, retentionConcurrency)
		var wg sync.WaitGroup
		for _, as := range s.sessions.snapshot() {
			if !as.retains || as.retentionSent() == rule {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			wg.Go(func() {
				defer func() { <-sem }()
				s.sendRetention(ctx, as, rule)
			})
		}
		wg.Wait()
	}
}

// syncRetention sends the rule to an agent that understands it and was
// not told this one yet; a health check calls it, which retries a request
// that failed when the policy changed.
func (s *Server) syncRetention(ctx context.Context, as *agentSession) {
	if rule := s.retentionRule(); as.retains && as.retentionSent() != rule {
		s.sendRetention(ctx, as, rule)
	}
}

// sendRetention sends one agent the rule, and records it as the agent's
// on success. A failure is logged; the next health check retries.
func (s *Server) sendRetention(ctx context.Context, as *agentSession, rule protocol.WorkRetention) {
	ctx, cancel := context.WithTimeout(ctx, retentionTimeout)
	defer cancel()
	if err := protocol.CallSigned(ctx, as.sess, as.sign, protocol.TypeWorkRetention, rule, protocol.TypeAck, nil); err != nil {
		if !as.sess.IsClosed() && ctx.Err() == nil {
			s.log.Warn("could not tell an agent the work retention rule; its next health check tries again",
				zap.String("agent", as.name), zap.Error(err))
		}
		return
	}
	as.setRetentionSent(rule)
	s.log.Debug("agent told the work retention rule", zap.String("agent", as.name),
		zap.Int("keep", rule.Keep), zap.Int64("min_free", rule.MinFree))
}

// workView is an agent's work report as the API shows it; nil for an
// agent that sent none.
func workView(w *protocol.WorkReport, at time.Time) *api.AgentWork {
	if w == nil {
		return nil
	}
	v := &api.AgentWork{
		Tasks: w.Tasks, Running: w.Running, Bytes: w.Bytes,
		Keep: w.Rule.Keep, MinFreeBytes: w.Rule.MinFree,
		LastRemoved: w.LastRemoved, RemovedTotal: w.RemovedTotal, BelowFloor: w.BelowFloor,
		ReportedAt: at,
	}
	if !w.LastCleanup.IsZero() {
		t := w.LastCleanup.UTC()
		v.LastCleanup = &t
	}
	return v
}
