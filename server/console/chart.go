package console

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/healthlog"
)

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
	Points   []healthlog.Point
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

func layoutHealthChart(ps []healthlog.Point) healthChart {
	c := healthChart{Capacity: healthlog.Len, Points: ps, Width: chartWidth, Height: chartHeight}
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
	step := float64(chartWidth-2*chartPad) / float64(max(healthlog.Len-1, 1))
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
		case api.HealthUnhealthy:
			c.Marks = append(c.Marks, chartMark{X: xs, Y: ys, Title: title})
		case api.HealthWarning:
			c.Warnings = append(c.Warnings, chartMark{X: xs, Y: ys, Title: title})
		}
	}
	c.Line = line.String()
	return c
}
