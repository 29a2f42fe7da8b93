package sqlstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/server/store"
)

func TestPolicy(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)

		got, err := s.Policy(ctx)
		if err != nil {
			t.Fatalf("Policy: %v", err)
		}
		want := store.Policy{HealthInterval: time.Minute, CalamariKeep: 3, UpgradeBatch: 10, UpgradeMaxFailures: 0, WorkKeep: 50, SetBy: store.PolicySetByDefault}
		if got != want {
			t.Fatalf("after migration: got %+v, want %+v", got, want)
		}

		set := store.Policy{HealthInterval: 90 * time.Second, CalamariKeep: 5, UpgradeBatch: 2, UpgradeMaxFailures: 1,
			WorkKeep: 0, WorkMinFree: 3 << 30, SetBy: store.PolicySetByOperator, UpdatedAt: time.Unix(1700000000, 123).UTC()}
		if err := s.SetPolicy(ctx, set); err != nil {
			t.Fatalf("SetPolicy: %v", err)
		}
		if got, err := s.Policy(ctx); err != nil || got != set {
			t.Fatalf("after SetPolicy: got %+v (%v), want %+v", got, err, set)
		}

		bad := []struct {
			name   string
			change func(*store.Policy)
		}{
			{"interval below 1s", func(p *store.Policy) { p.HealthInterval = 999 * time.Millisecond }},
			{"negative interval", func(p *store.Policy) { p.HealthInterval = -time.Minute }},
			{"keep 0", func(p *store.Policy) { p.CalamariKeep = 0 }},
			{"batch 0", func(p *store.Policy) { p.UpgradeBatch = 0 }},
			{"negative max failures", func(p *store.Policy) { p.UpgradeMaxFailures = -1 }},
			{"unknown set by", func(p *store.Policy) { p.SetBy = "someone" }},
			{"negative work keep", func(p *store.Policy) { p.WorkKeep = -1 }},
			{"negative work min free", func(p *store.Policy) { p.WorkMinFree = -1 }},
		}
		for _, tc := range bad {
			t.Run(tc.name, func(t *testing.T) {
				p := set
				p.UpgradeBatch, p.CalamariKeep = 7, 7 // would show if anything were written
				tc.change(&p)
				if err := s.SetPolicy(ctx, p); !errors.Is(err, store.ErrBadPolicy) {
					t.Fatalf("SetPolicy(%+v): got %v, want ErrBadPolicy", p, err)
				}
				if got, err := s.Policy(ctx); err != nil || got != set {
					t.Fatalf("after refused SetPolicy: got %+v (%v), want %+v unchanged", got, err, set)
				}
			})
		}
	})
}
