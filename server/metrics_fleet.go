package server

import (
	"context"
	"fmt"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/metrics"
)

// recentRollouts is how many of the latest rollouts tendril_rollouts
// counts: the history grows without bound, the scrape must not.
const recentRollouts = 1000

// fleetCountsMaxAge is how old the agent and rollout counts on /metrics
// may be: well under Prometheus's usual scrape intervals (15 s to a
// minute), and long enough that a client scraping in a loop costs the
// coordinator one count of its agents per interval, not one per scrape.
const fleetCountsMaxAge = 5 * time.Second

// Calamari states of an agent, the label of tendril_agents_by_calamari.
const (
	calamariCurrent  = "current"
	calamariOutdated = "outdated"
	calamariNone     = "none"
)

// fleetStates are reported at 0 when nothing has them.
var fleetStates = metrics.FleetStates{
	Health:   []string{api.HealthHealthy, api.HealthWarning, api.HealthUnhealthy, api.HealthUnavailable},
	Calamari: []string{calamariCurrent, calamariOutdated, calamariNone},
	Rollout:  []string{api.RolloutRunning, api.RolloutSucceeded, api.RolloutHalted},
	Upgrade: []string{api.UpgradeQueued, api.UpgradeWaitingForIdle, api.UpgradeSending, api.UpgradeInstalling,
		api.UpgradeAwaitingReconnect, api.UpgradeSucceeded, api.UpgradeRolledBack, api.UpgradeFailed},
}

// fleetMetrics is the coordinator as its scrape-time metrics see it.
type fleetMetrics struct{ s *Server }

// Sessions counts this node's sessions from its registry, in memory.
func (f fleetMetrics) Sessions() []metrics.SessionCount {
	type key struct{ mode, tls string }
	counts := map[key]int{}
	for _, as := range f.s.sessions.snapshot() {
		mode := api.ModePolling
		if as.listening {
			mode = api.ModeListening
		}
		counts[key{mode, protocol.TLSVersionName(as.tlsVersion)}]++
	}
	out := make([]metrics.SessionCount, 0, len(counts))
	for k, n := range counts {
		out = append(out, metrics.SessionCount{Mode: k.mode, TLS: k.tls, N: n})
	}
	return out
}

// Counts counts the agents from the API's views of them (so a graph says
// what the agents page says: an agent no node holds is unavailable), and
// the rollouts. Its store queries are the agents page's plus two per
// running rollout, whatever the fleet's size.
func (f fleetMetrics) Counts(ctx context.Context) (metrics.FleetCounts, error) {
	fc := metrics.FleetCounts{ByHealth: map[[2]string]int{}, ByVersion: map[string]int{}, ByCalamari: map[string]int{},
		Rollouts: map[string]int{}, RolloutAgents: map[string]int{}}
	err := f.s.eachAgentView(ctx, func(_ int, v api.AgentView) {
		fc.ByHealth[[2]string{v.Environment, v.Health}]++
		fc.ByVersion[v.Version]++
		switch {
		case v.CalamariVersion == "":
			fc.ByCalamari[calamariNone]++
		case v.CalamariCurrent:
			fc.ByCalamari[calamariCurrent]++
		default:
			fc.ByCalamari[calamariOutdated]++
		}
	})
	if err != nil {
		return fc, fmt.Errorf("count agents: %w", err)
	}
	rs, err := f.s.store.Rollouts(ctx, false, recentRollouts)
	if err != nil {
		return fc, fmt.Errorf("count rollouts: %w", err)
	}
	for _, r := range rs {
		fc.Rollouts[r.State]++
		if r.State != api.RolloutRunning {
			continue
		}
		agents, err := f.s.store.RolloutAgents(ctx, r.ID)
		if err != nil {
			return fc, fmt.Errorf("count agents of rollout %s: %w", r.ID, err)
		}
		for _, a := range agents {
			fc.RolloutAgents[a.State]++
		}
	}
	return fc, nil
}
