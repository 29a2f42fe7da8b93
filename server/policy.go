package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tendrildeploy/tendril/api"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

func policyView(p store.Policy) api.PolicyView {
	v := api.PolicyView{HealthInterval: p.HealthInterval.String(), HealthIntervalSeconds: p.HealthInterval.Seconds(),
		CalamariKeep: p.CalamariKeep, UpgradeBatch: p.UpgradeBatch, UpgradeMaxFailures: p.UpgradeMaxFailures, SetBy: p.SetBy}
	if !p.UpdatedAt.IsZero() {
		t := p.UpdatedAt
		v.UpdatedAt = &t
	}
	return v
}

// policyState is this node's copy of the stored machine policy. Other
// nodes may change the stored one: refreshPolicy reads it again.
type policyState struct {
	mu  sync.Mutex
	cur store.Policy
	// changed wakes pollHealth after the copy changed, so a new health
	// interval applies without waiting out the old one.
	changed chan struct{}
	// polling is closed once pollHealth has its ticker, so that a test
	// changing the interval knows the change is what resets it.
	polling chan struct{}
}

// currentPolicy returns this node's copy of the machine policy.
func (s *Server) currentPolicy() store.Policy {
	s.policy.mu.Lock()
	defer s.policy.mu.Unlock()
	return s.policy.cur
}

// usePolicy replaces this node's copy and wakes pollHealth if it changed.
func (s *Server) usePolicy(p store.Policy) {
	s.policy.mu.Lock()
	changed := s.policy.cur != p
	s.policy.cur = p
	s.policy.mu.Unlock()
	if changed {
		select {
		case s.policy.changed <- struct{}{}:
		default: // a wake-up is already pending; it will read the newest copy
		}
	}
}

// loadPolicy reads the machine policy at start, after writing into it the
// deprecated Config.HealthInterval if one was given and no operator has
// set the policy.
func (s *Server) loadPolicy(ctx context.Context) error {
	s.policy.changed = make(chan struct{}, 1)
	s.policy.polling = make(chan struct{})
	p, err := s.store.Policy(ctx)
	if err != nil {
		return err
	}
	if flag := s.cfg.HealthInterval; flag != 0 {
		switch {
		case p.SetBy == store.PolicySetByOperator:
			s.log.Warn("--health-interval ignored: an operator set the machine policy in the database; change it with: tendril-server policy set --health-interval D",
				zap.Duration("flag", flag), zap.Duration("policy", p.HealthInterval))
		case p.SetBy == store.PolicySetByFlag && p.HealthInterval == flag:
			s.log.Warn("--health-interval is deprecated: the value is in the database already; drop the flag and change it with: tendril-server policy set --health-interval D",
				zap.Duration("health_interval", flag))
		default:
			p.HealthInterval, p.SetBy, p.UpdatedAt = flag, store.PolicySetByFlag, time.Now()
			if err := s.store.SetPolicy(ctx, p); err != nil {
				return fmt.Errorf("copy --health-interval into the machine policy: %w", err)
			}
			s.log.Warn("--health-interval is deprecated: the value now lives in the database; drop the flag and change it with: tendril-server policy set --health-interval D",
				zap.Duration("health_interval", flag))
		}
	}
	s.policy.cur = p
	return nil
}

// refreshPolicy reads the stored policy again, so that a change made
// through another node applies here too; every heartbeat calls it.
func (s *Server) refreshPolicy(ctx context.Context) {
	p, err := s.store.Policy(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("read machine policy failed", zap.Error(err))
		}
		return
	}
	s.usePolicy(p)
}

// Policy returns the stored machine policy.
func (s *Server) Policy(ctx context.Context) (api.PolicyView, error) {
	p, err := s.store.Policy(ctx)
	if err != nil {
		return api.PolicyView{}, err
	}
	s.usePolicy(p)
	return policyView(p), nil
}

// SetPolicy changes the fields of the machine policy given in req, as an
// operator: deprecated flags no longer override it. Invalid values change
// nothing.
func (s *Server) SetPolicy(ctx context.Context, req api.PolicyRequest) (api.PolicyView, error) {
	p, err := s.store.Policy(ctx)
	if err != nil {
		return api.PolicyView{}, err
	}
	if req.HealthInterval != nil {
		d, err := time.ParseDuration(*req.HealthInterval)
		if err != nil {
			return api.PolicyView{}, kind.Errorf(kind.ErrBadRequest, "health_interval %q: not a duration such as 30s or 2m", *req.HealthInterval)
		}
		p.HealthInterval = d
	}
	if req.CalamariKeep != nil {
		p.CalamariKeep = *req.CalamariKeep
	}
	if req.UpgradeBatch != nil {
		p.UpgradeBatch = *req.UpgradeBatch
	}
	if req.UpgradeMaxFailures != nil {
		p.UpgradeMaxFailures = *req.UpgradeMaxFailures
	}
	p.SetBy, p.UpdatedAt = store.PolicySetByOperator, time.Now()
	if err := p.Validate(); err != nil {
		return api.PolicyView{}, kind.Errorf(kind.ErrBadRequest, "%s", err)
	}
	if err := s.store.SetPolicy(ctx, p); err != nil {
		return api.PolicyView{}, err
	}
	s.usePolicy(p)
	s.log.Info("machine policy set", zap.Duration("health_interval", p.HealthInterval), zap.Int("calamari_keep", p.CalamariKeep),
		zap.Int("upgrade_batch", p.UpgradeBatch), zap.Int("upgrade_max_failures", p.UpgradeMaxFailures))
	return policyView(p), nil
}
