package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestMachinePageHealthChart: the machine page draws the checks made since
// the coordinator started, as inline SVG.
func TestMachinePageHealthChart(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "web-1")
	eventually(t, "web-1's first health check recorded", func() bool { return ts.agentView(t, "web-1").LastHealthAt != "" })
	ts.checkAllHealth()
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	resp, body := c.get("/machines/web-1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("machine page: got %d, want 200", resp.StatusCode)
	}
	want := len(ts.health.Points(ts.agentView(t, "web-1").ID))
	if want < 2 {
		t.Fatalf("recorded checks: got %d, want at least 2", want)
	}
	for _, s := range []string{`<svg class="chart" id="health-chart"`, "since this coordinator started", fmt.Sprintf("last %d health checks", want)} {
		if !strings.Contains(body, s) {
			t.Fatalf("machine page: want %q in:\n%s", s, body)
		}
	}
	i := strings.Index(body, `points="`)
	if i < 0 {
		t.Fatal("machine page: no polyline points")
	}
	pts := body[i+len(`points="`):]
	pts = pts[:strings.IndexByte(pts, '"')]
	if got := len(strings.Fields(pts)); got != want {
		t.Fatalf("polyline: got %d points, want %d", got, want)
	}
	// The fragment the page refreshes from carries the chart too.
	if _, frag := c.get("/ui/fragments/machines/web-1"); !strings.Contains(frag, `id="health-chart"`) {
		t.Fatal("machine fragment: no chart")
	}
}
