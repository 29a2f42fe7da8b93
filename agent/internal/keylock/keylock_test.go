package keylock

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLock(t *testing.T) {
	var m Map
	unlockA, err := m.Lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	// Another key is independent.
	unlockB, err := m.Lock(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	unlockB()

	// The same key waits, and gives up with its context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Lock(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("lock of a held key with a done context: got %v, want context.Canceled", err)
	}
	got := make(chan func(), 1)
	go func() {
		u, err := m.Lock(context.Background(), "a")
		if err != nil {
			t.Error(err)
		}
		got <- u
	}()
	select {
	case <-got:
		t.Fatal("a held key was locked twice")
	default:
	}
	unlockA()
	unlockA() // idempotent: must not release the next holder's lock
	u := <-got
	if held := m.Held(); len(held) != 1 || held[0] != "a" {
		t.Errorf("held: got %v, want [a]", held)
	}
	u()
	if held := m.Held(); len(held) != 0 {
		t.Errorf("held after every unlock: got %v, want none", held)
	}
}
