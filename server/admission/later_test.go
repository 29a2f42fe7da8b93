package admission

import (
	"context"
	"testing"
	"time"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// serve makes g have released perSecond slots a second over the last two
// seconds (0: none ever).
func serve(g *Gate, now time.Time, perSecond int) {
	if perSecond == 0 {
		return
	}
	g.served.first = now.Add(-time.Minute)
	g.served.advance(now)
	// The window: the buckets before the newest, which has just begun
	// (now is on a bucket's edge).
	for i := range g.served.n {
		g.served.n[i] = perSecond * int(servedBucket) / int(time.Second)
	}
	g.served.n[g.served.at%servedBuckets] = 0
}

// TestLater: the moments a shed connection is told to come back follow
// each other at the measured rate, after the queue, from no sooner than
// the floor, within the bound.
func TestLater(t *testing.T) {
	tests := []struct {
		name    string
		rate    int           // slots released a second lately; 0: none yet
		waiting int           // connections in the queue
		calls   int           // Later calls at the same moment
		advance time.Duration // then the clock moves on by this
		// want: the i-th call's wait is in [want[i], want[i]+step].
		want []time.Duration
		step time.Duration
	}{
		{
			name: "no rate measured: the reconnect rate", calls: 3,
			want: []time.Duration{laterFloor, laterFloor + 2*time.Millisecond, laterFloor + 4*time.Millisecond},
			step: 2 * time.Millisecond,
		},
		{
			name: "measured: 160 a second, scheduled at 200", rate: 160, calls: 3,
			want: []time.Duration{laterFloor, laterFloor + 5*time.Millisecond, laterFloor + 10*time.Millisecond},
			step: 5 * time.Millisecond,
		},
		{
			name: "after the queue", rate: 160, waiting: 400, calls: 2,
			want: []time.Duration{laterFloor + 2*time.Second, laterFloor + 2005*time.Millisecond},
			step: 5 * time.Millisecond,
		},
		{
			name: "a clock left behind starts again from now", rate: 160, calls: 2, advance: time.Minute,
			want: []time.Duration{laterFloor, laterFloor + 5*time.Millisecond, laterFloor},
			step: 10 * time.Millisecond,
		},
		{
			name: "a rate below the floor: the floor", rate: 4, calls: 2,
			want: []time.Duration{laterFloor, laterFloor + 10*time.Millisecond},
			step: 10 * time.Millisecond,
		},
		{
			name: "at most the bound, without a reservation", rate: 160, waiting: 11920, calls: 3,
			want: []time.Duration{laterMax / 2, laterMax / 2, laterMax / 2},
			step: 5 * time.Millisecond,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(1e9, 0)}
			g := New(Config{Slots: 1000, Queue: 1000, Wait: time.Hour})
			g.now = clock.now
			serve(g, clock.t, tc.rate)
			for range tc.waiting {
				g.waiting.PushBack(&Ticket{})
			}
			var got []time.Duration
			for range tc.calls {
				got = append(got, g.Later())
			}
			if tc.advance > 0 {
				clock.t = clock.t.Add(tc.advance)
				got = append(got, g.Later())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d waits, want %d", len(got), len(tc.want))
			}
			for i, w := range tc.want {
				hi := w + tc.step
				if w == laterMax/2 {
					hi = laterMax
				}
				if got[i] < w || got[i] > hi {
					t.Errorf("call %d: got wait %s, want within [%s, %s]", i+1, got[i], w, hi)
				}
			}
		})
	}
}

// TestQueueLimit: the queue holds no more than the rate serves within
// most of the wait, never fewer than the slots, never more than Queue.
func TestQueueLimit(t *testing.T) {
	tests := []struct {
		name  string
		slots int
		rate  int
		want  int
	}{
		{"no rate measured: the reconnect rate", 256, 0, 2000},
		{"fast enough for the whole queue", 256, 1000, 2048},
		{"256 a second, scheduled at 320, for 4s", 256, 256, 1280},
		{"never fewer than the slots", 1024, 160, 1024},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(1e9, 0)}
			g := New(Config{Slots: tc.slots, Queue: 2048, Wait: 5 * time.Second})
			g.now = clock.now
			serve(g, clock.t, tc.rate)
			if got := g.queueLimit(g.cfg.Wait); got != tc.want {
				t.Errorf("got queue limit %d, want %d", got, tc.want)
			}
		})
	}
}

// TestRateMeasured: the rate is the slots released a second over the
// last two seconds, the reconnect rate until they were counted for long
// enough, and the floor when few were.
func TestRateMeasured(t *testing.T) {
	tests := []struct {
		name     string
		releases []time.Duration // when slots are released, from the start
		at       time.Duration   // when the rate is read
		want     float64
	}{
		{"none", nil, time.Second, reconnectRate},
		{"too soon to tell", []time.Duration{0, 100 * time.Millisecond}, 200 * time.Millisecond, reconnectRate},
		{"200 in a second, scheduled at 250", spaced(200, 5*time.Millisecond), time.Second, 250},
		{"400 in two seconds", spaced(400, 5*time.Millisecond), 2 * time.Second, 250},
		{"long after the start", spaced(1000, 5*time.Millisecond), 5 * time.Second, 250},
		{"the last two seconds only", spaced(400, 5*time.Millisecond), 3 * time.Second, 85.7 * rateOptimism},
		{"few: the floor", spaced(10, 100*time.Millisecond), 2 * time.Second, rateFloor},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(1e9, 0)}
			start := clock.t
			g := New(Config{Slots: 1, Queue: 1, Wait: time.Hour})
			g.now = clock.now
			for _, at := range tc.releases {
				clock.t = start.Add(at)
				tk := g.Arrive("", func() {})
				if !tk.Spoke() || !tk.Acquire(context.Background(), 0, nil) {
					t.Fatal("got no slot")
				}
				tk.Release()
			}
			clock.t = start.Add(tc.at)
			g.mu.Lock()
			got := g.rate()
			g.mu.Unlock()
			if got < tc.want*0.85 || got > tc.want*1.15 {
				t.Errorf("got rate %.1f/s, want about %.1f/s", got, tc.want)
			}
		})
	}
}

// spaced returns n moments step apart from 0.
func spaced(n int, step time.Duration) []time.Duration {
	var ds []time.Duration
	for i := range n {
		ds = append(ds, time.Duration(i)*step)
	}
	return ds
}

// TestSaturated: the gate is saturated with every slot taken, or with
// connections waiting (for a source at its cap).
func TestSaturated(t *testing.T) {
	tests := []struct {
		name          string
		busy, waiting int
		want          bool
	}{
		{"idle", 0, 0, false},
		{"a slot free", 1, 0, false},
		{"every slot taken", 2, 0, true},
		{"waiting with a slot free", 1, 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := New(Config{Slots: 2, Queue: 4, Wait: time.Hour})
			g.busy = tc.busy
			for range tc.waiting {
				g.waiting.PushBack(&Ticket{})
			}
			if got := g.Saturated(); got != tc.want {
				t.Errorf("got saturated %v, want %v", got, tc.want)
			}
		})
	}
}
