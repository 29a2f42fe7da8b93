package healthlog

import (
	"fmt"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/tendrildeploy/tendril/api"
)

func TestHealthHistoryRing(t *testing.T) {
	var h Log
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const n = Len + 10
	for i := range n {
		health := api.HealthHealthy
		if i%7 == 0 {
			health = api.HealthUnhealthy
		}
		h.Record([]Check{
			{AgentID: "a", At: start.Add(time.Duration(i) * time.Minute), RTT: time.Duration(i+1) * time.Millisecond, Health: health},
			{AgentID: "b", At: start.Add(time.Duration(i) * time.Minute), RTT: time.Hour * 2, Health: api.HealthWarning},
		})
	}
	ps := h.Points("a")
	if len(ps) != Len {
		t.Fatalf("points kept: got %d, want the last %d", len(ps), Len)
	}
	first := n - Len
	for i, p := range ps {
		want := first + i
		if p.RTT != time.Duration(want+1)*time.Millisecond || !p.At.Equal(start.Add(time.Duration(want)*time.Minute)) {
			t.Fatalf("point %d: got %s at %s, want %s at %s", i, p.RTT, p.At, time.Duration(want+1)*time.Millisecond, start.Add(time.Duration(want)*time.Minute))
		}
		if wantHealth := map[bool]string{true: api.HealthUnhealthy, false: api.HealthHealthy}[want%7 == 0]; p.Health != wantHealth {
			t.Fatalf("point %d: got %s, want %s", i, p.Health, wantHealth)
		}
	}
	// A round trip beyond what 32 bits of microseconds hold saturates.
	if got := h.Points("b")[0]; got.RTT != time.Duration(1<<32-1)*time.Microsecond || got.Health != api.HealthWarning {
		t.Fatalf("saturated sample: got %s %s, want %s warning", got.RTT, got.Health, time.Duration(1<<32-1)*time.Microsecond)
	}
	h.Forget("a")
	if got := h.Points("a"); got != nil {
		t.Fatalf("after forget: got %d points, want none", len(got))
	}
	if got := h.Points("never"); got != nil {
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
	fill := func(prefix string) (*Log, []string) {
		ids := make([]string, agents)
		for i := range ids {
			// Like the sessions' agent IDs: the map keys share these strings.
			ids[i] = fmt.Sprintf("%s%07x-0000-4000-8000-%012x", prefix, i, i)
		}
		return &Log{}, ids
	}
	record := func(h *Log, ids []string) {
		batch := make([]Check, len(ids))
		for round := range Len {
			for i := range batch {
				batch[i] = Check{AgentID: ids[i], At: now.Add(time.Duration(round) * time.Minute), RTT: time.Millisecond, Health: api.HealthHealthy}
			}
			h.Record(batch)
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
		perAgent, Len, unsafe.Sizeof(agentRing{}), unsafe.Sizeof(sample{}))
	if perAgent > 2048 {
		t.Fatalf("got %.0f bytes per agent, want at most 2048", perAgent)
	}
}

// TestHealthHistoryPacking checks that a sample's time and health, which
// share 32 bits, come back apart: each health at offsets up to where the
// time saturates.
func TestHealthHistoryPacking(t *testing.T) {
	epoch := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		after  time.Duration
		health string
		want   time.Duration
	}{
		{"healthy at the epoch", 0, api.HealthHealthy, 0},
		{"warning a minute on", time.Minute, api.HealthWarning, time.Minute},
		{"unhealthy a year on", 365 * 24 * time.Hour, api.HealthUnhealthy, 365 * 24 * time.Hour},
		{"unhealthy at the last second held", atMax * time.Second, api.HealthUnhealthy, atMax * time.Second},
		{"warning beyond it, saturated", 40 * 365 * 24 * time.Hour, api.HealthWarning, atMax * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Log
			h.Record([]Check{{AgentID: "a", At: epoch, Health: api.HealthHealthy}})
			h.Record([]Check{{AgentID: "a", At: epoch.Add(tt.after), RTT: time.Second, Health: tt.health}})
			ps := h.Points("a")
			if len(ps) != 2 {
				t.Fatalf("got %d points, want 2", len(ps))
			}
			got := ps[1]
			if !got.At.Equal(epoch.Add(tt.want)) || got.Health != tt.health || got.RTT != time.Second {
				t.Fatalf("got %s %s %s, want %s %s %s", got.At, got.Health, got.RTT, epoch.Add(tt.want), tt.health, time.Second)
			}
		})
	}
}
