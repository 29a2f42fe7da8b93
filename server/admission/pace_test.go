package admission

import (
	"testing"
	"time"
)

// TestPace: a lone refused agent is told to come back in a second or
// two; a fleet refused together is spread over the window its size
// calls for, and the spread shrinks again once the refusals stop.
func TestPace(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	p := NewPace()
	p.now = func() time.Time { return now }
	spread := func(n int) (lo, hi time.Duration) {
		lo, hi = time.Hour, 0
		for range n {
			d := p.RetryAfter()
			lo, hi = min(lo, d), max(hi, d)
		}
		return lo, hi
	}
	if lo, hi := spread(1); lo < time.Second || hi >= 2*time.Second {
		t.Fatalf("one refusal: got %s, want within [1s, 2s)", lo)
	}
	// 10,000 agents knocking in one window: about 21 s of spread.
	if lo, hi := spread(9999); lo < time.Second || hi >= 22*time.Second || hi < 15*time.Second {
		t.Fatalf("a fleet of 10,000: got waits within [%s, %s], want spread up to about 22s", lo, hi)
	}
	// The next window remembers the last one's fleet.
	now = now.Add(paceWindow)
	if _, hi := spread(100); hi < 15*time.Second {
		t.Fatalf("the window after a fleet's: got waits up to %s, want the fleet's spread", hi)
	}
	// Once it has been quiet for a window, a lone agent waits briefly
	// again.
	now = now.Add(3 * paceWindow)
	if lo, hi := spread(1); lo < time.Second || hi >= 2*time.Second {
		t.Fatalf("after a quiet window: got %s, want within [1s, 2s)", hi)
	}
}
