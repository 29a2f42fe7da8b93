// Package admission keeps a reconnecting fleet from overwhelming the
// coordinator: a bounded number of handshakes at once with a short queue
// in front of them, and the window over which a fleet is asked to spread
// its reconnects.
package admission

import (
	"context"
	"time"
)

// Gate decides whether a new connection may start its handshake.
// Handshakes cost CPU, so only a bounded number run at once; a connection
// that finds them all busy waits in a bounded queue for a moment instead
// of being closed. Closing it would send the agent into a longer backoff
// after every attempt, which is what stretches a reconnect storm (measured
// in BENCHMARKS.md): the coordinator turned away work it could have done
// a second later. Only when the queue is full, or the wait runs out, is
// the connection shed.
type Gate struct {
	slots chan struct{} // handshakes in progress
	queue chan struct{} // connections waiting for a slot
	wait  time.Duration // how long one may wait
}

// New returns a gate of slots handshakes at once, with queue connections
// waiting up to wait for one.
func New(slots, queue int, wait time.Duration) *Gate {
	return &Gate{slots: make(chan struct{}, slots), queue: make(chan struct{}, queue), wait: wait}
}

// TryNow takes a slot if one is free.
func (a *Gate) TryNow() bool {
	select {
	case a.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// Enqueue takes a place in the waiting queue, or reports that it is full.
func (a *Gate) Enqueue() bool {
	select {
	case a.queue <- struct{}{}:
		return true
	default:
		return false
	}
}

// Await waits, holding a queue place taken by Enqueue, for a slot. It
// gives the queue place back either way and reports whether it got the
// slot before the wait ran out or ctx ended.
func (a *Gate) Await(ctx context.Context) bool {
	defer func() { <-a.queue }()
	t := time.NewTimer(a.wait)
	defer t.Stop()
	select {
	case a.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// Release gives a slot back.
func (a *Gate) Release() { <-a.slots }

// reconnectRate is the rate, in sessions a second, at which the
// coordinator asks a fleet to come back: after a restart (the spread of
// the GoAway at shutdown) and after a crash (the window named in every
// Welcome, which agents use when their session breaks without a GoAway).
// It is below what one coordinator on two cores handshakes while the
// fleet simulator shares the cores (BENCHMARKS.md), so the returning fleet
// is served as it arrives rather than mostly shed and retried.
const reconnectRate = 500

// ReconnectSpread is the window over which a fleet of n agents is asked to
// spread its reconnects: about a second per reconnectRate agents, at most
// a minute.
func ReconnectSpread(n int) time.Duration {
	return min(time.Duration(n/reconnectRate+1)*time.Second, time.Minute)
}
