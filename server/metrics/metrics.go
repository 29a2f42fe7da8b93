// Package metrics is what the coordinator exposes to Prometheus at
// /metrics: sessions, agents, handshakes by outcome, tasks, pushes,
// rollouts, health checks and sweeps, HTTP requests, store queries, the
// build, and the Go runtime's and process's own figures. Every name and
// label is listed in README.md ("Metrics"); no label holds an agent's name
// or ID, so that the series stay few whatever the fleet's size.
package metrics

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tendrildeploy/tendril/api"
)

// Handshake outcomes, the label of tendril_handshakes_total.
const (
	OutcomeOK      = "ok"      // TLS done, session started: the handshake was accepted
	OutcomeFailed  = "failed"  // TLS handshake failed or timed out
	OutcomeRefused = "refused" // revoked certificate or protocol refusal
	OutcomeShed    = "shed"    // dropped before TLS by the accept limiter (told when to come back, not waited on)
	// OutcomeBusy: turned away before TLS from the handshake queue (full,
	// or its wait ran out) with the busy answer, which tells the agent
	// when to come back (protocol.WriteBusy).
	OutcomeBusy = "busy"
	// OutcomeSilent: closed before TLS for sending nothing within the
	// first-byte deadline, or to make room for a newer connection while
	// it still had sent nothing.
	OutcomeSilent = "silent"
)

// Kinds of bytes pushed to agents, the label of tendril_pushed_bytes_total.
const (
	PushCalamari     = "calamari"
	PushAgentPackage = "agent_package"
)

// Metrics are the coordinator's, in their own registry.
type Metrics struct {
	Registry *prometheus.Registry
	// Handshakes counts connections by outcome; HandshakesQueued those
	// that waited in the handshake queue for a slot, whatever their
	// outcome.
	Handshakes       *prometheus.CounterVec
	HandshakesQueued prometheus.Counter
	HealthDuration   prometheus.Histogram
	HealthChecks     *prometheus.CounterVec // by resulting health
	// SweepSeconds and SweepAgents describe the last periodic health
	// sweep (checks plus the batched write); Sweeps counts them.
	SweepSeconds prometheus.Gauge
	SweepAgents  prometheus.Gauge
	Sweeps       prometheus.Counter
	// TasksStarted counts the tasks this node saw start running;
	// TasksFinished those it recorded in a final state, by that state,
	// and TaskDuration how long they took, by the same state.
	TasksStarted  prometheus.Counter
	TasksFinished *prometheus.CounterVec
	TaskDuration  *prometheus.HistogramVec
	// Pushed counts the bytes this node sent to agents, by kind.
	Pushed *prometheus.CounterVec
	// HTTPDuration is the time the API, the console and /metrics took
	// to answer, by route pattern, method and status code.
	HTTPDuration *prometheus.HistogramVec
	// StoreDuration is the time each store operation took, by method.
	StoreDuration *prometheus.HistogramVec
}

// Build names what runs, for tendril_build_info.
type Build struct {
	Version string
}

// New registers the coordinator's metrics but the fleet's, which
// RegisterFleet adds once the coordinator exists.
func New(build Build) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.Handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tendril_handshakes_total",
		Help: "Agent connections by outcome: ok (accepted), failed (TLS), refused (revoked or protocol), shed (accept limiter, full queue or wait run out), silent (nothing sent).",
	}, []string{"outcome"})
	m.HandshakesQueued = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tendril_handshakes_queued_total",
		Help: "Agent connections that waited in the handshake queue for a slot, whatever their outcome.",
	})
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
	m.TasksStarted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tendril_tasks_started_total",
		Help: "Tasks this node recorded as started running on their agent.",
	})
	m.TasksFinished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tendril_tasks_finished_total",
		Help: "Tasks this node recorded in a final state, by that state: succeeded, failed or cancelled.",
	}, []string{"state"})
	m.TaskDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tendril_task_duration_seconds",
		Help: "Time from a task's start (its creation if it never started) to its final state, by that state.",
		// From a script that does nothing to a deployment of an hour.
		Buckets: prometheus.ExponentialBuckets(0.01, 3, 12),
	}, []string{"state"})
	m.Pushed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tendril_pushed_bytes_total",
		Help: "Bytes this node sent to agents, by kind: calamari (bundles) or agent_package (upgrades).",
	}, []string{"kind"})
	m.HTTPDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tendril_http_request_duration_seconds",
		Help:    "Time to answer an HTTP request, by the route pattern it matched (\"unmatched\" if none) and status code.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
	}, []string{"route", "code"})
	m.StoreDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tendril_store_query_duration_seconds",
		Help:    "Time of one store operation, by its method name, failed ones included.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	}, []string{"operation"})
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "tendril_build_info",
		Help:        "Always 1; its labels say which coordinator version, built with which Go, runs.",
		ConstLabels: prometheus.Labels{"version": build.Version, "goversion": runtime.Version()},
	})
	info.Set(1)
	m.Registry.MustRegister(m.Handshakes, m.HandshakesQueued, m.HealthDuration, m.HealthChecks,
		m.SweepSeconds, m.SweepAgents, m.Sweeps, m.TasksStarted, m.TasksFinished, m.TaskDuration,
		m.Pushed, m.HTTPDuration, m.StoreDuration, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range []string{OutcomeOK, OutcomeFailed, OutcomeRefused, OutcomeShed, OutcomeBusy, OutcomeSilent} {
		m.Handshakes.WithLabelValues(o)
	}
	for _, st := range []string{api.TaskSucceeded, api.TaskFailed, api.TaskCancelled} {
		m.TasksFinished.WithLabelValues(st)
	}
	for _, k := range []string{PushCalamari, PushAgentPackage} {
		m.Pushed.WithLabelValues(k)
	}
	return m
}

// CountPushed returns src counting into tendril_pushed_bytes_total{kind}
// every byte read from it, which is what is sent: a resumed transfer
// reads only what the receiver lacks.
func (m *Metrics) CountPushed(kind string, src ReaderAt) ReaderAt {
	return countingReaderAt{src: src, c: m.Pushed.WithLabelValues(kind)}
}

// ReaderAt is io.ReaderAt, named here so that the package's callers need
// no second import for it.
type ReaderAt interface {
	ReadAt(p []byte, off int64) (int, error)
}

type countingReaderAt struct {
	src ReaderAt
	c   prometheus.Counter
}

func (r countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.src.ReadAt(p, off)
	if n > 0 {
		r.c.Add(float64(n))
	}
	return n, err
}
