// Package metrics is what the coordinator exposes to Prometheus at
// /metrics: sessions, handshakes by outcome, health checks and sweeps,
// and the Go runtime's and process's own figures.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Handshake outcomes, the label of tendril_handshakes_total.
const (
	OutcomeOK      = "ok"      // TLS done, session started
	OutcomeFailed  = "failed"  // TLS handshake failed or timed out
	OutcomeRefused = "refused" // revoked certificate or protocol refusal
	OutcomeShed    = "shed"    // dropped before TLS by the accept limiter, a full queue or a wait run out
	// OutcomeSilent: closed before TLS for sending nothing within the
	// first-byte deadline, or to make room for a newer connection while
	// it still had sent nothing.
	OutcomeSilent = "silent"
)

// Metrics are the coordinator's, in their own registry.
type Metrics struct {
	Registry       *prometheus.Registry
	connected      prometheus.GaugeFunc
	Handshakes     *prometheus.CounterVec // by outcome
	HealthDuration prometheus.Histogram
	HealthChecks   *prometheus.CounterVec // by resulting health
	// SweepSeconds and SweepAgents describe the last periodic health
	// sweep (checks plus the batched write); Sweeps counts them.
	SweepSeconds prometheus.Gauge
	SweepAgents  prometheus.Gauge
	Sweeps       prometheus.Counter
}

// New registers the coordinator's metrics; connected reports the agents
// with a live session.
func New(connected func() float64) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.connected = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tendril_agents_connected",
		Help: "Agents with a live session to this coordinator.",
	}, connected)
	m.Handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tendril_handshakes_total",
		Help: "Agent connections by outcome: ok, failed (TLS), refused (revoked or protocol), shed (accept limiter).",
	}, []string{"outcome"})
	m.HealthDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tendril_health_check_duration_seconds",
		Help:    "Round trip of one agent health check.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	m.HealthChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tendril_health_checks_total",
		Help: "Agent health checks by resulting health.",
	}, []string{"health"})
	m.SweepSeconds = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tendril_health_sweep_seconds",
		Help: "Duration of the last periodic health sweep: every connected agent checked and the results stored.",
	})
	m.SweepAgents = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tendril_health_sweep_agents",
		Help: "Agents checked by the last periodic health sweep.",
	})
	m.Sweeps = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tendril_health_sweeps_total",
		Help: "Periodic health sweeps completed.",
	})
	m.Registry.MustRegister(m.connected, m.Handshakes, m.HealthDuration, m.HealthChecks,
		m.SweepSeconds, m.SweepAgents, m.Sweeps,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range []string{OutcomeOK, OutcomeFailed, OutcomeRefused, OutcomeShed, OutcomeSilent} {
		m.Handshakes.WithLabelValues(o)
	}
	return m
}
