package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/calamari"
	"github.com/tendrildeploy/tendril/server/healthlog"
	"github.com/tendrildeploy/tendril/server/store"
)

// pollHealth checks every connected agent each machine policy's health
// interval. One ticker drives the whole fleet: no per-agent timers. A
// changed interval resets the ticker at once, without a restart.
func (s *Server) pollHealth(ctx context.Context) {
	interval := s.policy.Current().HealthInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	close(s.polling)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.policy.Changed():
			if iv := s.policy.Current().HealthInterval; iv != interval {
				interval = iv
				t.Reset(iv)
				s.log.Info("health interval changed", zap.Duration("health_interval", iv))
			}
		case <-t.C:
			start := time.Now()
			n := s.checkHealth(ctx, s.sessions.snapshot())
			took := time.Since(start)
			if ctx.Err() == nil {
				s.metrics.SweepSeconds.Set(took.Seconds())
				s.metrics.SweepAgents.Set(float64(n))
				s.metrics.Sweeps.Inc()
			}
			s.log.Debug("health sweep done", zap.Int("agents", n), zap.Duration("took", took))
		}
	}
}

// checkHealth checks the given sessions with bounded concurrency and
// persists all results in one batch. It returns how many were checked.
func (s *Server) checkHealth(ctx context.Context, sessions []*agentSession) int {
	if len(sessions) == 0 {
		return 0
	}
	latest, err := s.latestCalamari(ctx)
	if err != nil {
		s.log.Error("look up latest calamari failed", zap.Error(err))
	}
	results := make([]store.HealthResult, len(sessions))
	sem := make(chan struct{}, s.cfg.HealthConcurrency)
	var wg sync.WaitGroup
	for i, as := range sessions {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return 0
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i] = s.checkOne(ctx, as, latest.Version)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return 0
	}
	// Use a fresh context: results already gathered are worth keeping even
	// if the session that triggered the check has just ended.
	wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.store.RecordHealth(wctx, results); err != nil {
		s.log.Error("record health failed", zap.Int("agents", len(results)), zap.Error(err))
	}
	checks := make([]healthlog.Check, len(results))
	for i, r := range results {
		checks[i] = healthlog.Check{AgentID: r.AgentID, At: r.At, RTT: r.RTT, Health: r.Health}
	}
	s.health.Record(checks)
	s.autoUpdate(results)
	return len(results)
}

func (s *Server) checkOne(ctx context.Context, as *agentSession, latestCalamari string) store.HealthResult {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HealthTimeout)
	defer cancel()
	start := time.Now()
	var h protocol.Health
	err := protocol.CallSigned(ctx, as.sess, as.sign, protocol.TypeHealthRequest, protocol.HealthRequest{}, protocol.TypeHealth, &h)
	rtt := time.Since(start)
	s.metrics.HealthDuration.Observe(rtt.Seconds())
	r := store.HealthResult{AgentID: as.agentID, RTT: rtt, At: time.Now().UTC(), DiskFree: -1}
	if err != nil {
		r.Health = api.HealthUnhealthy
		r.Detail = fmt.Sprintf("health check failed: %v", err)
	} else {
		r.Version, r.CalamariVersions, r.DiskFree = h.Version, h.Calamari, h.DiskFree
		r.Work = workView(h.Work, r.At)
		// A rollout waiting for this agent to be idle re-checks now.
		s.rollouts.SetBusy(as.agentID, h.RunningTasks > 0)
		r.Health, r.Detail = s.judge(as, h, latestCalamari)
	}
	s.metrics.HealthChecks.WithLabelValues(r.Health).Inc()
	if err == nil {
		// Retries a work retention rule the agent missed.
		s.syncRetention(ctx, as)
	}
	return r
}

// judge turns an agent's report into a health value and the reasons for
// it.
func (s *Server) judge(as *agentSession, h protocol.Health, latestCalamari string) (string, string) {
	var warnings []string
	for _, p := range h.CalamariProblems {
		warnings = append(warnings, "Calamari "+p)
	}
	if !calamari.Current(latestCalamari, h.Calamari) {
		warnings = append(warnings, fmt.Sprintf("Calamari out of date: latest is %s", latestCalamari))
	}
	if protocol.LegacyTLS(as.tlsVersion) {
		warnings = append(warnings, fmt.Sprintf("connected with TLS %s, which is deprecated; enable TLS 1.2 on the agent's host", protocol.TLSVersionName(as.tlsVersion)))
	}
	if as.upgradeOnly {
		warnings = append(warnings, "agent protocol is below the coordinator's minimum; upgrade required")
	}
	if h.DiskFree >= 0 && h.DiskFree < s.cfg.DiskWarning {
		warnings = append(warnings, fmt.Sprintf("low disk space in agent home: %d MiB free", h.DiskFree>>20))
	}
	if h.Work != nil && h.Work.BelowFloor {
		warnings = append(warnings, fmt.Sprintf("free space in agent home below the work retention floor of %s with no finished task folder left to remove",
			api.FormatSize(h.Work.Rule.MinFree)))
	}
	if len(warnings) > 0 {
		return api.HealthWarning, strings.Join(warnings, "; ")
	}
	return api.HealthHealthy, ""
}

// First health checks of fresh sessions are batched. Checked one by one, a
// reconnect storm of 10,000 agents meant 10,000 single-row write
// transactions and as many lookups of the latest Calamari; batched, the
// sessions that connect while earlier checks run are checked together and
// written in one transaction. An idle coordinator checks a lone newcomer
// at once.
const (
	// newcomerQueue is how many fresh sessions may wait for a check; a
	// session that finds it full is checked on its own.
	newcomerQueue = 4096
	// newcomerBatches bounds first-check batches in progress.
	newcomerBatches = 4
	// maxNewcomerBatch bounds one batch.
	maxNewcomerBatch = 1024
)

// welcome queues a fresh session's first check, so a new or returning
// agent does not wait a whole interval to show its health, and learns the
// coordinator's certificates if a rotation happened while it was away.
func (s *Server) welcome(ctx context.Context, as *agentSession) {
	select {
	case s.newcomers <- as:
	default:
		s.goFunc(func() { s.checkFirst(ctx, []*agentSession{as}) })
	}
}

// checkNewcomers runs the first checks of queued sessions until ctx ends.
// While every batch slot is busy newcomers accumulate, and the next batch
// takes them all.
func (s *Server) checkNewcomers(ctx context.Context) {
	slots := make(chan struct{}, newcomerBatches)
	for {
		var batch []*agentSession
		select {
		case as := <-s.newcomers:
			batch = append(batch, as)
		case <-ctx.Done():
			return
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
	gather:
		for len(batch) < maxNewcomerBatch {
			select {
			case as := <-s.newcomers:
				batch = append(batch, as)
			default:
				break gather
			}
		}
		s.goFunc(func() {
			defer func() { <-slots }()
			s.checkFirst(ctx, batch)
		})
	}
}

// checkFirst checks sessions that just connected, skipping those that
// already ended, then brings each up to date with the coordinator's
// certificates.
func (s *Server) checkFirst(ctx context.Context, batch []*agentSession) {
	live := batch[:0]
	for _, as := range batch {
		if !as.sess.IsClosed() {
			live = append(live, as)
		}
	}
	s.checkHealth(ctx, live)
	for _, as := range live {
		s.syncServerCertificates(ctx, as)
	}
}

// HealthHistory is an agent's recent health checks, oldest first, as the
// machine page charts them.
func (s *Server) HealthHistory(agentID string) []healthlog.Point { return s.health.Points(agentID) }
