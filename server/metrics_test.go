package server

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tendrildeploy/tendril/api"
)

// scrape reads /metrics as Prometheus would, and returns its text and
// its families by name.
func (ts *testServer) scrape(t *testing.T) ([]byte, map[string]*dto.MetricFamily) {
	t.Helper()
	resp, err := http.Get("http://" + ts.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: got %d, %v, want 200\n%s", resp.StatusCode, err, text)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, text)
	}
	return text, fams
}

// sample is the value of the family's series with exactly labels (name,
// value pairs), and whether there is one. A histogram's value is its
// sample count.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if got[labels[i]] != labels[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// promtool returns promtool's path; it fails under CI, where
// scripts/deps.sh installs it, and skips elsewhere.
func promtool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	msg := "promtool is not installed; install it with: apt-get install -y prometheus (scripts/deps.sh does it)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func TestMetricsFamiliesAfterATaskAndAPush(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Version = "9.8.7" })
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	ts.checkAllHealth()
	bv := ts.upload(t, packBundle(t, "1.0.0", 4096))
	// The task pushes Calamari first, then runs.
	task, lines := ts.runTaskOn(t, "web-1", "run-script", "--inline", "echo hello")
	if task.State != api.TaskSucceeded {
		t.Fatalf("task: got %s, want succeeded\n%s", task.State, logText(lines))
	}
	ts.api(t, "GET", "/api/agents", adminKey(t, ts), nil)

	text, fams := ts.scrape(t)
	for _, c := range []struct {
		name   string
		labels []string
		min    float64 // the value is at least this
		exact  bool    // and exactly this
	}{
		{"tendril_agents_connected", nil, 1, true},
		{"tendril_sessions", []string{"mode", "polling", "tls_version", "1.3"}, 1, true},
		{"tendril_agents", []string{"environment", "Test", "health", "healthy"}, 1, true},
		{"tendril_agents", []string{"environment", "Test", "health", "unhealthy"}, 0, true},
		{"tendril_agents_by_version", []string{"version", "1.2.3"}, 1, true},
		{"tendril_agents_by_calamari", []string{"state", "current"}, 1, true},
		{"tendril_agents_by_calamari", []string{"state", "outdated"}, 0, true},
		{"tendril_handshakes_total", []string{"outcome", "ok"}, 1, false},
		{"tendril_handshakes_queued_total", nil, 0, true},
		{"tendril_tasks_started_total", nil, 1, true},
		{"tendril_tasks_finished_total", []string{"state", "succeeded"}, 1, true},
		{"tendril_tasks_finished_total", []string{"state", "failed"}, 0, true},
		{"tendril_task_duration_seconds", []string{"state", "succeeded"}, 1, true},
		{"tendril_pushed_bytes_total", []string{"kind", "calamari"}, float64(bv.Size), false},
		{"tendril_pushed_bytes_total", []string{"kind", "agent_package"}, 0, true},
		{"tendril_rollouts", []string{"state", "running"}, 0, true},
		{"tendril_rollout_agents", []string{"state", "sending"}, 0, true},
		{"tendril_http_request_duration_seconds", []string{"route", "GET /api/agents", "code", "200"}, 1, false},
		{"tendril_store_query_duration_seconds", []string{"operation", "UpdateTask"}, 2, false},
		{"tendril_store_query_duration_seconds", []string{"operation", "ListAgents"}, 1, false},
		{"tendril_build_info", []string{"version", "9.8.7"}, 1, true},
		{"tendril_fleet_scrape_errors_total", nil, 0, true},
		{"tendril_health_checks_total", []string{"health", "healthy"}, 1, false},
	} {
		got, ok := sample(fams, c.name, c.labels...)
		switch {
		case !ok:
			t.Errorf("%s%v: no such series", c.name, c.labels)
		case c.exact && got != c.min:
			t.Errorf("%s%v: got %v, want %v", c.name, c.labels, got, c.min)
		case got < c.min:
			t.Errorf("%s%v: got %v, want at least %v", c.name, c.labels, got, c.min)
		}
	}
	// Routes are patterns: no series names an agent or a task.
	for _, leak := range []string{"web-1", task.ID} {
		if bytes.Contains(text, []byte(leak)) {
			t.Errorf("/metrics names %q: labels must stay bounded", leak)
		}
	}

	cmd := exec.Command(promtool(t), "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	} else if s := strings.TrimSpace(string(out)); s != "" {
		t.Logf("promtool: %s", s)
	}
}
