package server

import (
	"sync"
	"time"

	"github.com/tendrildeploy/tendril/server/console"
	"github.com/tendrildeploy/tendril/server/store"
)

// healthHistoryLen is how many health checks the machine page charts per
// agent.
const healthHistoryLen = console.HealthHistoryLen

// healthSample is one health check, packed small because every connected
// agent keeps healthHistoryLen of them: 12 bytes rather than the 40 of a
// time.Time, a duration and a string.
type healthSample struct {
	at  uint32 // seconds since the history's epoch
	rtt uint32 // microseconds, saturating at about 71 minutes
	// health is 0 healthy, 1 warning, 2 unhealthy.
	health uint8
}

// healthRing is one agent's last healthHistoryLen samples, oldest first
// from next once full.
type healthRing struct {
	samples [healthHistoryLen]healthSample
	next    uint8
	full    bool
}

// healthHistory keeps recent health checks in memory only: a chart of the
// last hour is worth nothing after a restart and not worth a database
// write per check. One lock covers the map and every ring, taken once per
// batch of results, so a sweep of 10,000 agents locks once, not 10,000
// times. The zero value is ready to use.
type healthHistory struct {
	mu sync.Mutex
	// epoch is the earliest check of the first batch recorded; samples
	// count seconds from it.
	epoch time.Time
	rings map[string]*healthRing // agent ID -> ring
}

func healthCode(h string) uint8 {
	switch h {
	case store.HealthHealthy:
		return 0
	case store.HealthWarning:
		return 1
	}
	return 2
}

func healthName(c uint8) string {
	switch c {
	case 0:
		return store.HealthHealthy
	case 1:
		return store.HealthWarning
	}
	return store.HealthUnhealthy
}

// record adds one batch of health results.
func (h *healthHistory) record(results []store.HealthResult) {
	if len(results) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rings == nil {
		h.rings = make(map[string]*healthRing)
		h.epoch = results[0].At
		for _, r := range results {
			if r.At.Before(h.epoch) {
				h.epoch = r.At
			}
		}
		h.epoch = h.epoch.Truncate(time.Second)
	}
	for _, r := range results {
		ring := h.rings[r.AgentID]
		if ring == nil {
			ring = new(healthRing)
			h.rings[r.AgentID] = ring
		}
		at := max(r.At.Sub(h.epoch), 0) / time.Second
		rtt := min(r.RTT.Microseconds(), 1<<32-1)
		ring.samples[ring.next] = healthSample{at: uint32(min(at, 1<<32-1)), rtt: uint32(max(rtt, 0)), health: healthCode(r.Health)}
		ring.next++
		if int(ring.next) == healthHistoryLen {
			ring.next, ring.full = 0, true
		}
	}
}

// forget drops a deleted agent's history.
func (h *healthHistory) forget(agentID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.rings, agentID)
}

// points returns an agent's recorded checks, oldest first.
func (h *healthHistory) points(agentID string) []console.HealthPoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	ring := h.rings[agentID]
	if ring == nil {
		return nil
	}
	var order []healthSample
	if ring.full {
		order = append(order, ring.samples[ring.next:]...)
	}
	order = append(order, ring.samples[:ring.next]...)
	out := make([]console.HealthPoint, len(order))
	for i, s := range order {
		out[i] = console.HealthPoint{At: h.epoch.Add(time.Duration(s.at) * time.Second), RTT: time.Duration(s.rtt) * time.Microsecond, Health: healthName(s.health)}
	}
	return out
}

// HealthHistory is an agent's recent health checks, oldest first, as the
// machine page charts them.
func (s *Server) HealthHistory(agentID string) []console.HealthPoint { return s.health.points(agentID) }
