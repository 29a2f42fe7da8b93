package admission

import (
	"fmt"
	"testing"
	"time"
)

func TestRefusals(t *testing.T) {
	r := NewRefusals(time.Minute)
	clock := time.Unix(0, 0)
	r.now = func() time.Time { return clock }
	steps := []struct {
		after     time.Duration // since the previous step
		key       string
		wantLog   bool
		wantCount int
	}{
		{0, "a", true, 1},                 // first refusal: logged
		{time.Second, "a", false, 0},      // within the minute: counted
		{time.Second, "a", false, 0},      // counted
		{0, "b", true, 1},                 // another key has its own window
		{58 * time.Second, "a", true, 3},  // a minute after a's line: this and the two before
		{59 * time.Second, "a", false, 0}, // 59s after: counted
		{time.Second, "a", true, 2},       // a minute after: this one and the one before
		{time.Hour, "b", true, 1},         // nothing between: just this one
	}
	for i, s := range steps {
		clock = clock.Add(s.after)
		log, count := r.Note(s.key)
		if log != s.wantLog || count != s.wantCount {
			t.Errorf("step %d (%s at %s): got log=%v count=%d, want log=%v count=%d",
				i, s.key, clock.Sub(time.Unix(0, 0)), log, count, s.wantLog, s.wantCount)
		}
	}
}

func TestRefusalsForgetsWhenFull(t *testing.T) {
	r := NewRefusals(time.Minute)
	clock := time.Unix(0, 0)
	r.now = func() time.Time { return clock }
	for i := range maxRefusalKeys {
		r.Note(fmt.Sprint(i))
	}
	// A full table with every window open keeps what it has.
	r.Note("one more")
	if got := len(r.seen); got != maxRefusalKeys+1 {
		t.Fatalf("keys: got %d, want %d", got, maxRefusalKeys+1)
	}
	// Once the windows passed, the next new key clears them out.
	clock = clock.Add(time.Minute)
	if log, _ := r.Note("late"); !log {
		t.Fatal("new key: got no log line, want one")
	}
	if got := len(r.seen); got != 1 {
		t.Fatalf("keys after the windows passed: got %d, want 1", got)
	}
}
