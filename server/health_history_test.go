package server

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/tendrildeploy/tendril/server/store"
)

func TestHealthHistoryRing(t *testing.T) {
	var h healthHistory
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const n = healthHistoryLen + 10
	for i := range n {
		health := store.HealthHealthy
		if i%7 == 0 {
			health = store.HealthUnhealthy
		}
		h.record([]store.HealthResult{
			{AgentID: "a", At: start.Add(time.Duration(i) * time.Minute), RTT: time.Duration(i+1) * time.Millisecond, Health: health},
			{AgentID: "b", At: start.Add(time.Duration(i) * time.Minute), RTT: time.Hour * 2, Health: store.HealthWarning},
		})
	}
	ps := h.points("a")
	if len(ps) != healthHistoryLen {
		t.Fatalf("points kept: got %d, want the last %d", len(ps), healthHistoryLen)
	}
	first := n - healthHistoryLen
	for i, p := range ps {
		want := first + i
		if p.RTT != time.Duration(want+1)*time.Millisecond || !p.At.Equal(start.Add(time.Duration(want)*time.Minute)) {
			t.Fatalf("point %d: got %s at %s, want %s at %s", i, p.RTT, p.At, time.Duration(want+1)*time.Millisecond, start.Add(time.Duration(want)*time.Minute))
		}
		if wantHealth := map[bool]string{true: store.HealthUnhealthy, false: store.HealthHealthy}[want%7 == 0]; p.Health != wantHealth {
			t.Fatalf("point %d: got %s, want %s", i, p.Health, wantHealth)
		}
	}
	// A round trip beyond what 32 bits of microseconds hold saturates.
	if got := h.points("b")[0]; got.RTT != time.Duration(1<<32-1)*time.Microsecond || got.Health != store.HealthWarning {
		t.Fatalf("saturated sample: got %s %s, want %s warning", got.RTT, got.Health, time.Duration(1<<32-1)*time.Microsecond)
	}
	h.forget("a")
	if got := h.points("a"); got != nil {
		t.Fatalf("after forget: got %d points, want none", len(got))
	}
	if got := h.points("never"); got != nil {
		t.Fatalf("unknown agent: got %d points, want none", len(got))
	}
}

// TestHealthHistoryMemory measures what the history adds per agent with
// a full ring each, and keeps it under a bound. It fills one history for
// 10,000 agents, then a second: the heap's growth over the second is the
// cost, free of whatever the first measurement's baseline held.
func TestHealthHistoryMemory(t *testing.T) {
	const agents = 10000
	now := time.Now()
	fill := func(prefix string) (*healthHistory, []string) {
		ids := make([]string, agents)
		for i := range ids {
			// Like the sessions' agent IDs: the map keys share these strings.
			ids[i] = fmt.Sprintf("%s%07x-0000-4000-8000-%012x", prefix, i, i)
		}
		return &healthHistory{}, ids
	}
	record := func(h *healthHistory, ids []string) {
		batch := make([]store.HealthResult, len(ids))
		for round := range healthHistoryLen {
			for i := range batch {
				batch[i] = store.HealthResult{AgentID: ids[i], At: now.Add(time.Duration(round) * time.Minute), RTT: time.Millisecond, Health: store.HealthHealthy}
			}
			h.record(batch)
		}
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	h1, ids1 := fill("a")
	record(h1, ids1)
	h2, ids2 := fill("b")
	before := heap()
	record(h2, ids2)
	after := heap()
	runtime.KeepAlive(h1)
	runtime.KeepAlive(h2)
	runtime.KeepAlive(ids2)
	perAgent := float64(after-before) / agents
	t.Logf("health history: %.0f bytes of heap per agent with %d checks kept (ring %d bytes, sample %d bytes)",
		perAgent, healthHistoryLen, unsafe.Sizeof(healthRing{}), unsafe.Sizeof(healthSample{}))
	if perAgent > 2048 {
		t.Fatalf("got %.0f bytes per agent, want at most 2048", perAgent)
	}
}

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
	want := len(ts.health.points(ts.agentView(t, "web-1").ID))
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
