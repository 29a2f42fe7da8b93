package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Handshake outcomes, the label of tendril_handshakes_total.
const (
	outcomeOK      = "ok"      // TLS done, session started
	outcomeFailed  = "failed"  // TLS handshake failed or timed out
	outcomeRefused = "refused" // revoked certificate or protocol refusal
	outcomeShed    = "shed"    // dropped before TLS by the accept limiter
)

type metrics struct {
	registry       *prometheus.Registry
	connected      prometheus.GaugeFunc
	handshakes     *prometheus.CounterVec
	healthDuration prometheus.Histogram
	healthChecks   *prometheus.CounterVec
	// sweepSeconds and sweepAgents describe the last periodic health
	// sweep (checks plus the batched write); sweeps counts them.
	sweepSeconds prometheus.Gauge
	sweepAgents  prometheus.Gauge
	sweeps       prometheus.Counter
}

func newMetrics(connected func() float64) *metrics {
	m := &metrics{registry: prometheus.NewRegistry()}
	m.connected = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tendril_agents_connected",
		Help: "Agents with a live session to this coordinator.",
	}, connected)
	m.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tendril_handshakes_total",
		Help: "Agent connections by outcome: ok, failed (TLS), refused (revoked or protocol), shed (accept limiter).",
	}, []string{"outcome"})
	m.healthDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tendril_health_check_duration_seconds",
		Help:    "Round trip of one agent health check.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	m.healthChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tendril_health_checks_total",
		Help: "Agent health checks by resulting health.",
	}, []string{"health"})
	m.sweepSeconds = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tendril_health_sweep_seconds",
		Help: "Duration of the last periodic health sweep: every connected agent checked and the results stored.",
	})
	m.sweepAgents = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tendril_health_sweep_agents",
		Help: "Agents checked by the last periodic health sweep.",
	})
	m.sweeps = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tendril_health_sweeps_total",
		Help: "Periodic health sweeps completed.",
	})
	m.registry.MustRegister(m.connected, m.handshakes, m.healthDuration, m.healthChecks,
		m.sweepSeconds, m.sweepAgents, m.sweeps,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range []string{outcomeOK, outcomeFailed, outcomeRefused, outcomeShed} {
		m.handshakes.WithLabelValues(o)
	}
	return m
}
