package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Fleet is what the coordinator knows of its sessions, agents and
// rollouts, counted at scrape time rather than kept up to date event by
// event: counts read from the source at each scrape cannot drift from it.
type Fleet interface {
	// Sessions counts this node's live sessions; it must not block.
	Sessions() []SessionCount
	// Counts counts the fleet's agents and rollouts, from the
	// coordinator's views of them (a few store queries, whatever the
	// fleet's size).
	Counts(ctx context.Context) (FleetCounts, error)
}

// SessionCount is the number of sessions in one mode (polling, listening)
// at one TLS version ("1.3").
type SessionCount struct {
	Mode, TLS string
	N         int
}

// AgentCount is the number of agents sharing one value of each label
// given; labels not given are "".
type AgentCount struct {
	Environment, Health string
	Version             string
	Calamari            string
	N                   int
}

// FleetCounts are the fleet's agents and rollouts, counted.
type FleetCounts struct {
	// ByHealth counts agents by environment and health; ByVersion by
	// agent version; ByCalamari by Calamari state (current, outdated,
	// none).
	ByHealth   map[[2]string]int
	ByVersion  map[string]int
	ByCalamari map[string]int
	// Rollouts counts the recent rollouts by state, RolloutAgents the
	// agents of the running rollouts by their state in it.
	Rollouts      map[string]int
	RolloutAgents map[string]int
}

// scrapeTimeout bounds the store queries of one scrape: Prometheus's
// default scrape timeout is 10 s.
const scrapeTimeout = 5 * time.Second

var (
	sessionsDesc = prometheus.NewDesc("tendril_sessions",
		"Live agent sessions on this node, by mode (polling: the agent dialed; listening: this node dialed it) and TLS version.",
		[]string{"mode", "tls_version"}, nil)
	healthDesc = prometheus.NewDesc("tendril_agents",
		"Registered agents by environment and health as the API shows it (healthy, warning, unhealthy, unavailable).",
		[]string{"environment", "health"}, nil)
	versionDesc = prometheus.NewDesc("tendril_agents_by_version",
		"Registered agents by the agent version they last reported (\"\" if never connected).",
		[]string{"version"}, nil)
	calamariDesc = prometheus.NewDesc("tendril_agents_by_calamari",
		"Registered agents by Calamari state: current (holds the latest bundle, or none was uploaded), outdated, none (holds no bundle).",
		[]string{"state"}, nil)
	rolloutsDesc = prometheus.NewDesc("tendril_rollouts",
		"Rollouts by state (running, succeeded, halted), among the most recent ones the store lists.",
		[]string{"state"}, nil)
	rolloutAgentsDesc = prometheus.NewDesc("tendril_rollout_agents",
		"Agents of the running rollouts by their state in the rollout.",
		[]string{"state"}, nil)
	connectedDesc = prometheus.NewDesc("tendril_agents_connected",
		"Agents with a live session to this coordinator.", nil, nil)
	scrapeErrorsDesc = prometheus.NewDesc("tendril_fleet_scrape_errors_total",
		"Scrapes whose agent and rollout counts could not be read (the store failed or was slow); those families were left out.",
		nil, nil)
)

// fleetCollector counts the fleet at scrape time, at most once per
// maxAge.
type fleetCollector struct {
	fleet  Fleet
	log    *zap.Logger
	errors atomic.Uint64
	// states are the label values always reported, at 0 if none.
	healths, calamari, rollouts, upgrades []string
	maxAge                                time.Duration

	// mu serializes counting, so that scrapes arriving together share
	// one count; counted and at are the last one.
	mu      sync.Mutex
	counted FleetCounts
	at      time.Time
}

// FleetStates are the label values reported even when no agent or
// rollout has them, so that a graph shows 0 rather than no data.
type FleetStates struct {
	Health, Calamari, Rollout, Upgrade []string
}

// RegisterFleet registers the scrape-time counts of f. Counting reads
// every agent, so a scrape within maxAge of the last count is answered
// from it: at 10,000 agents a count costs about 0.15 s of CPU, and a
// client scraping every 50 ms took a quarter of the coordinator's CPU
// during a reconnect storm (BENCHMARKS.md). Sessions are counted at every
// scrape; they are in memory.
func (m *Metrics) RegisterFleet(f Fleet, states FleetStates, maxAge time.Duration, log *zap.Logger) {
	m.Registry.MustRegister(&fleetCollector{fleet: f, log: log, maxAge: maxAge,
		healths: states.Health, calamari: states.Calamari, rollouts: states.Rollout, upgrades: states.Upgrade})
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{connectedDesc, sessionsDesc, healthDesc, versionDesc, calamariDesc, rolloutsDesc, rolloutAgentsDesc, scrapeErrorsDesc} {
		ch <- d
	}
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	connected := 0
	for _, s := range c.fleet.Sessions() {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(s.N), s.Mode, s.TLS)
		connected += s.N
	}
	ch <- prometheus.MustNewConstMetric(connectedDesc, prometheus.GaugeValue, float64(connected))
	if fc, ok := c.count(); ok {
		for k, n := range fc.ByHealth {
			ch <- prometheus.MustNewConstMetric(healthDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
		}
		for v, n := range fc.ByVersion {
			ch <- prometheus.MustNewConstMetric(versionDesc, prometheus.GaugeValue, float64(n), v)
		}
		emit(ch, calamariDesc, fc.ByCalamari, c.calamari)
		emit(ch, rolloutsDesc, fc.Rollouts, c.rollouts)
		emit(ch, rolloutAgentsDesc, fc.RolloutAgents, c.upgrades)
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrorsDesc, prometheus.CounterValue, float64(c.errors.Load()))
}

// count returns the fleet's counts, from the last count if it is younger
// than maxAge. The maps it returns are not written again: a newer count
// makes new ones.
func (c *fleetCollector) count() (FleetCounts, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < c.maxAge {
		return c.counted, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	fc, err := c.fleet.Counts(ctx)
	if err != nil {
		c.errors.Add(1)
		c.log.Warn("count agents and rollouts for metrics failed", zap.Error(err))
		return FleetCounts{}, false
	}
	envs := map[string]bool{}
	for k := range fc.ByHealth {
		envs[k[0]] = true
	}
	for env := range envs {
		for _, h := range c.healths {
			if _, ok := fc.ByHealth[[2]string{env, h}]; !ok {
				fc.ByHealth[[2]string{env, h}] = 0
			}
		}
	}
	c.counted, c.at = fc, time.Now()
	return fc, true
}

// emit sends one gauge per label value of counts, and 0 for each of
// always that counts lacks.
func emit(ch chan<- prometheus.Metric, d *prometheus.Desc, counts map[string]int, always []string) {
	for _, v := range always {
		if _, ok := counts[v]; !ok {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, 0, v)
		}
	}
	for v, n := range counts {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(n), v)
	}
}
