package metrics

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// countingFleet counts how often the collector counted it.
type countingFleet struct {
	calls int
	err   error
}

func (f *countingFleet) Sessions() []SessionCount { return nil }

func (f *countingFleet) Counts(context.Context) (FleetCounts, error) {
	f.calls++
	if f.err != nil {
		return FleetCounts{}, f.err
	}
	return FleetCounts{ByHealth: map[[2]string]int{{"prod", "healthy"}: f.calls},
		ByVersion: map[string]int{}, ByCalamari: map[string]int{}, Rollouts: map[string]int{}, RolloutAgents: map[string]int{}}, nil
}

func TestFleetCountsKeptForMaxAge(t *testing.T) {
	for _, tc := range []struct {
		name      string
		maxAge    time.Duration
		err       error
		scrapes   int
		wantCalls int
	}{
		{"scrapes within max age share one count", time.Hour, nil, 3, 1},
		{"no max age counts at each scrape", 0, nil, 3, 3},
		{"a failed count is not kept", time.Hour, errors.New("store down"), 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &countingFleet{err: tc.err}
			c := &fleetCollector{fleet: f, log: zap.NewNop(), maxAge: tc.maxAge, healths: []string{"healthy", "unhealthy"}}
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(c)
			for range tc.scrapes {
				if _, err := reg.Gather(); err != nil {
					t.Fatalf("gather: %v", err)
				}
			}
			if f.calls != tc.wantCalls {
				t.Errorf("got %d counts for %d scrapes, want %d", f.calls, tc.scrapes, tc.wantCalls)
			}
			wantErrors := uint64(0)
			if tc.err != nil {
				wantErrors = uint64(tc.scrapes)
			}
			if got := c.errors.Load(); got != wantErrors {
				t.Errorf("got %d scrape errors, want %d", got, wantErrors)
			}
		})
	}
}
