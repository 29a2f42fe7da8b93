// Package healthlog keeps each agent's recent health checks in memory, for
// the console's machine page to chart.
package healthlog

import (
	"sync"
	"time"

	"github.com/tendrildeploy/tendril/api"
)

// Len is how many health checks are kept per agent: at the default
// one-minute interval, the last hour.
const Len = 60

// Point is one recorded health check.
type Point struct {
	At     time.Time
	RTT    time.Duration
	Health string // an api.Health value
}

// Check is one health check to record.
type Check struct {
	AgentID string
	At      time.Time
	RTT     time.Duration
	Health  string // an api.Health value
}

// sample is one health check, packed small because every connected
// agent keeps Len of them: 8 bytes rather than the 40 of a time.Time, a
// duration and a string, so that a full ring fits a 512-byte allocation
// (at 12 bytes a sample it took 768).
type sample struct {
	// at is the seconds since the history's epoch (atBits of them,
	// saturating at about 34 years) and, in the top two bits, the
	// health: 0 healthy, 1 warning, 2 unhealthy.
	at  uint32
	rtt uint32 // microseconds, saturating at about 71 minutes
}

const (
	atBits = 30
	atMax  = 1<<atBits - 1
)

func (s sample) seconds() uint32 { return s.at & atMax }
func (s sample) health() uint8   { return uint8(s.at >> atBits) }

// agentRing is one agent's last Len samples, oldest first
// from next once full.
type agentRing struct {
	samples [Len]sample
	next    uint8
	full    bool
}

// Log keeps recent health checks in memory only: a chart of the
// last hour is worth nothing after a restart and not worth a database
// write per check. One lock covers the map and every ring, taken once per
// batch of results, so a sweep of 10,000 agents locks once, not 10,000
// times. The zero value is ready to use.
type Log struct {
	mu sync.Mutex
	// epoch is the earliest check of the first batch recorded; samples
	// count seconds from it.
	epoch time.Time
	rings map[string]*agentRing // agent ID -> ring
}

func healthCode(h string) uint8 {
	switch h {
	case api.HealthHealthy:
		return 0
	case api.HealthWarning:
		return 1
	}
	return 2
}

func healthName(c uint8) string {
	switch c {
	case 0:
		return api.HealthHealthy
	case 1:
		return api.HealthWarning
	}
	return api.HealthUnhealthy
}

// Record adds one batch of health checks.
func (h *Log) Record(results []Check) {
	if len(results) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rings == nil {
		h.rings = make(map[string]*agentRing)
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
			ring = new(agentRing)
			h.rings[r.AgentID] = ring
		}
		at := max(r.At.Sub(h.epoch), 0) / time.Second
		rtt := min(r.RTT.Microseconds(), 1<<32-1)
		ring.samples[ring.next] = sample{at: uint32(min(at, atMax)) | uint32(healthCode(r.Health))<<atBits, rtt: uint32(max(rtt, 0))}
		ring.next++
		if int(ring.next) == Len {
			ring.next, ring.full = 0, true
		}
	}
}

// Forget drops a deleted agent's history.
func (h *Log) Forget(agentID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.rings, agentID)
}

// Points returns an agent's recorded checks, oldest first.
func (h *Log) Points(agentID string) []Point {
	h.mu.Lock()
	defer h.mu.Unlock()
	ring := h.rings[agentID]
	if ring == nil {
		return nil
	}
	var order []sample
	if ring.full {
		order = append(order, ring.samples[ring.next:]...)
	}
	order = append(order, ring.samples[:ring.next]...)
	out := make([]Point, len(order))
	for i, s := range order {
		out[i] = Point{At: h.epoch.Add(time.Duration(s.seconds()) * time.Second), RTT: time.Duration(s.rtt) * time.Microsecond, Health: healthName(s.health())}
	}
	return out
}
