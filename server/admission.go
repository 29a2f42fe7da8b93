package server

import (
	"context"
	"time"
)

// admission decides whether a new connection may start its handshake.
// Handshakes cost CPU, so only a bounded number run at once; a connection
// that finds them all busy waits in a bounded queue for a moment instead
// of being closed. Closing it would send the agent into a longer backoff
// after every attempt, which is what stretches a reconnect storm (measured
// in BENCHMARKS.md): the coordinator turned away work it could have done
// a second later. Only when the queue is full, or the wait runs out, is
// the connection shed.
type admission struct {
	slots chan struct{} // handshakes in progress
	queue chan struct{} // connections waiting for a slot
	wait  time.Duration // how long one may wait
}

func newAdmission(slots, queue int, wait time.Duration) *admission {
	return &admission{slots: make(chan struct{}, slots), queue: make(chan struct{}, queue), wait: wait}
}

// tryNow takes a slot if one is free.
func (a *admission) tryNow() bool {
	select {
	case a.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// enqueue takes a place in the waiting queue, or reports that it is full.
func (a *admission) enqueue() bool {
	select {
	case a.queue <- struct{}{}:
		return true
	default:
		return false
	}
}

// await waits, holding a queue place taken by enqueue, for a slot. It
// gives the queue place back either way and reports whether it got the
// slot before the wait ran out or ctx ended.
func (a *admission) await(ctx context.Context) bool {
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

// release gives a slot back.
func (a *admission) release() { <-a.slots }
