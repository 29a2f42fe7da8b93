package admission

import (
	"context"
	"testing"
	"time"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// TestLater: the moments a shed connection is told to come back follow
// each other at the measured rate, after the queue, from no sooner than
// the floor, within the bound.
func TestLater(t *testing.T) {
	tests := []struct {
		name    string
		hold    time.Duration // mean slot hold; 0: none measured yet
		busy    int           // slots taken
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
			name: "measured: 4 slots held 1s each is 4 a second", hold: time.Second, busy: 4, calls: 3,
			want: []time.Duration{laterFloor, laterFloor + 250*time.Millisecond, laterFloor + 500*time.Millisecond},
			step: 250 * time.Millisecond,
		},
		{
			name: "after the queue", hold: time.Second, busy: 10, waiting: 20, calls: 2,
			want: []time.Duration{laterFloor + 2*time.Second, laterFloor + 2100*time.Millisecond},
			step: 100 * time.Millisecond,
		},
		{
			name: "a clock left behind starts again from now", hold: time.Second, busy: 1, calls: 2, advance: time.Minute,
			want: []time.Duration{laterFloor, laterFloor + time.Second, laterFloor},
			step: time.Second,
		},
		{
			name: "at most the bound, without a reservation", hold: 20 * time.Second, busy: 1, calls: 5,
			want: []time.Duration{laterFloor, laterFloor + 20*time.Second, laterFloor + 40*time.Second, laterMax - laterMax/10, laterMax - laterMax/10},
			step: 20 * time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(1e9, 0)}
			g := New(Config{Slots: 1000, Queue: 1000, Wait: time.Hour})
			g.now = clock.now
			g.hold, g.busy = tc.hold, tc.busy
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
				if w >= laterMax-laterMax/10 {
					hi = laterMax
				}
				if got[i] < w || got[i] > hi {
					t.Errorf("call %d: got wait %s, want within [%s, %s]", i+1, got[i], w, hi)
				}
			}
		})
	}
}

// TestQueueLimit: the queue holds no more than the measured rate serves
// within most of the wait, never fewer than the slots, never more than
// Queue.
func TestQueueLimit(t *testing.T) {
	tests := []struct {
		name string
		hold time.Duration
		busy int
		want int
	}{
		{"no rate measured: the reconnect rate", 0, 0, 2000},
		{"fast enough for the whole queue", time.Millisecond, 256, 2048},
		{"256 slots held 1s: 256/s for 4s", time.Second, 256, 1024},
		{"never fewer than the slots", 10 * time.Second, 1, 256},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := New(Config{Slots: 256, Queue: 2048, Wait: 5 * time.Second})
			g.hold, g.busy = tc.hold, tc.busy
			if got := g.queueLimit(); got != tc.want {
				t.Errorf("got queue limit %d, want %d", got, tc.want)
			}
		})
	}
}

// TestHoldMeasured: releasing slots measures how long they are held.
func TestHoldMeasured(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	g := New(Config{Slots: 2, Queue: 2, Wait: time.Hour})
	g.now = clock.now
	for i, hold := range []time.Duration{time.Second, time.Second, 3 * time.Second} {
		tk := g.Arrive("", func() {})
		if !tk.Spoke() || !tk.Acquire(context.Background()) {
			t.Fatalf("connection %d got no slot", i+1)
		}
		clock.t = clock.t.Add(hold)
		tk.Release()
	}
	want := time.Second + 2*time.Second/holdWeight
	if g.hold != want {
		t.Errorf("got mean hold %s, want %s", g.hold, want)
	}
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
