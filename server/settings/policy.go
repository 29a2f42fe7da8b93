package settings

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// PolicyStore is the part of the store the machine policy needs.
type PolicyStore interface {
	Policy(ctx context.Context) (store.Policy, error)
	SetPolicy(ctx context.Context, p store.Policy) error
}

// Policy is a node's copy of the stored machine policy. Other nodes may
// change the stored one: Refresh reads it again.
type Policy struct {
	st  PolicyStore
	log *zap.Logger

	mu  sync.Mutex
	cur store.Policy
	// changed wakes the health poller after the copy changed, so a new
	// health interval applies without waiting out the old one.
	changed chan struct{}
	// watchers are woken like changed, one channel each for the other
	// readers of the copy (Watch).
	watchers []chan struct{}
}

// LoadPolicy reads the machine policy, after writing into it
// flagInterval, the deprecated --health-interval, if one was given and no
// operator has set the policy.
func LoadPolicy(ctx context.Context, st PolicyStore, flagInterval time.Duration, log *zap.Logger) (*Policy, error) {
	if log == nil {
		log = zap.NewNop()
	}
	p, err := st.Policy(ctx)
	if err != nil {
		return nil, err
	}
	if flag := flagInterval; flag != 0 {
		switch {
		case p.SetBy == store.PolicySetByOperator:
			log.Warn("--health-interval ignored: an operator set the machine policy in the database; change it with: tendril-server policy set --health-interval D",
				zap.Duration("flag", flag), zap.Duration("policy", p.HealthInterval))
		case p.SetBy == store.PolicySetByFlag && p.HealthInterval == flag:
			log.Warn("--health-interval is deprecated: the value is in the database already; drop the flag and change it with: tendril-server policy set --health-interval D",
				zap.Duration("health_interval", flag))
		default:
			p.HealthInterval, p.SetBy, p.UpdatedAt = flag, store.PolicySetByFlag, time.Now()
			if err := st.SetPolicy(ctx, p); err != nil {
				return nil, fmt.Errorf("copy --health-interval into the machine policy: %w", err)
			}
			log.Warn("--health-interval is deprecated: the value now lives in the database; drop the flag and change it with: tendril-server policy set --health-interval D",
				zap.Duration("health_interval", flag))
		}
	}
	return &Policy{st: st, log: log, cur: p, changed: make(chan struct{}, 1)}, nil
}

// Current returns this node's copy of the machine policy.
func (p *Policy) Current() store.Policy {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

// Changed receives after the copy changed; a wake-up pending is not
// repeated, and its receiver reads the newest copy.
func (p *Policy) Changed() <-chan struct{} { return p.changed }

// Watch returns a channel of its own that receives after the copy
// changed, as Changed does, for a reader other than the health poller:
// one channel has one receiver, and each reader must hear every change.
func (p *Policy) Watch() <-chan struct{} {
	ch := make(chan struct{}, 1)
	p.mu.Lock()
	p.watchers = append(p.watchers, ch)
	p.mu.Unlock()
	return ch
}

// use replaces this node's copy and wakes Changed and every Watch if it
// changed.
func (p *Policy) use(np store.Policy) {
	p.mu.Lock()
	changed := p.cur != np
	p.cur = np
	wake := append([]chan struct{}{p.changed}, p.watchers...)
	p.mu.Unlock()
	if changed {
		for _, ch := range wake {
			select {
			case ch <- struct{}{}:
			default: // a wake-up is already pending; it will read the newest copy
			}
		}
	}
}

// Refresh reads the stored policy again, so that a change made through
// another node applies here too; every heartbeat calls it.
func (p *Policy) Refresh(ctx context.Context) {
	np, err := p.st.Policy(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Error("read machine policy failed", zap.Error(err))
		}
		return
	}
	p.use(np)
}

// View returns the stored machine policy.
func (p *Policy) View(ctx context.Context) (api.PolicyView, error) {
	np, err := p.st.Policy(ctx)
	if err != nil {
		return api.PolicyView{}, err
	}
	p.use(np)
	return policyView(np), nil
}

// Set changes the fields of the machine policy given in req, as an
// operator: deprecated flags no longer override it. Invalid values change
// nothing.
func (p *Policy) Set(ctx context.Context, req api.PolicyRequest) (api.PolicyView, error) {
	np, err := p.st.Policy(ctx)
	if err != nil {
		return api.PolicyView{}, err
	}
	if req.HealthInterval != nil {
		d, err := time.ParseDuration(*req.HealthInterval)
		if err != nil {
			return api.PolicyView{}, kind.Errorf(kind.ErrBadRequest, "health_interval %q: not a duration such as 30s or 2m", *req.HealthInterval)
		}
		np.HealthInterval = d
	}
	if req.CalamariKeep != nil {
		np.CalamariKeep = *req.CalamariKeep
	}
	if req.UpgradeBatch != nil {
		np.UpgradeBatch = *req.UpgradeBatch
	}
	if req.UpgradeMaxFailures != nil {
		np.UpgradeMaxFailures = *req.UpgradeMaxFailures
	}
	if req.WorkKeep != nil {
		np.WorkKeep = *req.WorkKeep
	}
	if req.WorkMinFree != nil {
		n, err := api.ParseSize(*req.WorkMinFree)
		if err != nil {
			return api.PolicyView{}, kind.Errorf(kind.ErrBadRequest, "work_min_free: %s", err)
		}
		np.WorkMinFree = n
	}
	np.SetBy, np.UpdatedAt = store.PolicySetByOperator, time.Now()
	if err := np.Validate(); err != nil {
		return api.PolicyView{}, kind.Errorf(kind.ErrBadRequest, "%s", err)
	}
	if err := p.st.SetPolicy(ctx, np); err != nil {
		return api.PolicyView{}, err
	}
	p.use(np)
	p.log.Info("machine policy set", zap.Duration("health_interval", np.HealthInterval), zap.Int("calamari_keep", np.CalamariKeep),
		zap.Int("upgrade_batch", np.UpgradeBatch), zap.Int("upgrade_max_failures", np.UpgradeMaxFailures),
		zap.Int("work_keep", np.WorkKeep), zap.Int64("work_min_free", np.WorkMinFree))
	return policyView(np), nil
}

func policyView(p store.Policy) api.PolicyView {
	v := api.PolicyView{HealthInterval: p.HealthInterval.String(), HealthIntervalSeconds: p.HealthInterval.Seconds(),
		CalamariKeep: p.CalamariKeep, UpgradeBatch: p.UpgradeBatch, UpgradeMaxFailures: p.UpgradeMaxFailures,
		WorkKeep: p.WorkKeep, WorkMinFree: api.FormatSize(p.WorkMinFree), WorkMinFreeBytes: p.WorkMinFree, SetBy: p.SetBy}
	if !p.UpdatedAt.IsZero() {
		t := p.UpdatedAt
		v.UpdatedAt = &t
	}
	return v
}
