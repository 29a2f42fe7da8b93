package server

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tendrildeploy/tendril/server/store"
)

// healthHistoryLen is how many health checks the machine page charts per
// agent. At the default one-minute interval that is the last hour.
const healthHistoryLen = 60

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

// HealthPoint is one recorded health check.
type HealthPoint struct {
	At     time.Time
	RTT    time.Duration
	Health string
}

// points returns an agent's recorded checks, oldest first.
func (h *healthHistory) points(agentID string) []HealthPoint {
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
	out := make([]HealthPoint, len(order))
	for i, s := range order {
		out[i] = HealthPoint{At: h.epoch.Add(time.Duration(s.at) * time.Second), RTT: time.Duration(s.rtt) * time.Microsecond, Health: healthName(s.health)}
	}
	return out
}

// Chart geometry, in the SVG's own units; CSS scales it to the page.
const (
	chartWidth  = 600
	chartHeight = 120
	chartPad    = 6
)

// healthChart is what the machine page draws: an SVG polyline of the
// round-trip times, a mark on each failed check, and the numbers beside.
type healthChart struct {
	Capacity int
	Points   []HealthPoint
	// Line is the polyline's points attribute.
	Line string
	// Marks are the failed (unhealthy) checks, drawn as dots.
	Marks []chartMark
	// Warnings are checks that answered with a warning.
	Warnings                  []chartMark
	Width, Height             int
	MaxMillis, LastMillis     float64
	MedianMillis, FirstMillis float64
	From, To                  time.Time
}

// chartMark is a point on the chart.
type chartMark struct {
	X, Y  string
	Title string
}

// chart lays out an agent's history for the machine page.
func (h *healthHistory) chart(agentID string) healthChart {
	return layoutHealthChart(h.points(agentID))
}

func layoutHealthChart(ps []HealthPoint) healthChart {
	c := healthChart{Capacity: healthHistoryLen, Points: ps, Width: chartWidth, Height: chartHeight}
	if len(ps) == 0 {
		return c
	}
	ms := make([]float64, len(ps))
	for i, p := range ps {
		ms[i] = float64(p.RTT.Microseconds()) / 1000
		c.MaxMillis = max(c.MaxMillis, ms[i])
	}
	sorted := slices.Clone(ms)
	slices.Sort(sorted)
	c.MedianMillis = sorted[len(sorted)/2]
	c.FirstMillis, c.LastMillis = ms[0], ms[len(ms)-1]
	c.From, c.To = ps[0].At, ps[len(ps)-1].At
	top := c.MaxMillis
	if top <= 0 {
		top = 1
	}
	// The x axis is the check's place in the ring rather than its time:
	// checks come at the interval, and a gap while the agent was away
	// would squeeze the rest into a corner.
	step := float64(chartWidth-2*chartPad) / float64(max(healthHistoryLen-1, 1))
	var line strings.Builder
	for i, p := range ps {
		x := chartPad + float64(i)*step
		y := chartHeight - chartPad - ms[i]/top*float64(chartHeight-2*chartPad)
		xs, ys := fmt.Sprintf("%.1f", x), fmt.Sprintf("%.1f", y)
		if i > 0 {
			line.WriteByte(' ')
		}
		line.WriteString(xs + "," + ys)
		title := fmt.Sprintf("%s: %s, %.1f ms", p.At.UTC().Format("15:04:05"), p.Health, ms[i])
		switch p.Health {
		case store.HealthUnhealthy:
			c.Marks = append(c.Marks, chartMark{X: xs, Y: ys, Title: title})
		case store.HealthWarning:
			c.Warnings = append(c.Warnings, chartMark{X: xs, Y: ys, Title: title})
		}
	}
	c.Line = line.String()
	return c
}
