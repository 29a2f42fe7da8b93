package admission

import (
	"math/rand/v2"
	"time"
)

// The reservation clock: a connection the gate sheds is told when to come
// back (protocol's busy answer), and each is given the next free moment
// at the rate the gate admits handshakes, so that a fleet shed at once
// comes back spread at the rate it can be served: once each, not in
// waves of retries that are mostly shed again.
const (
	// laterFloor is the least a shed connection is told to wait: the
	// moment it was shed, the gate had no room for it.
	laterFloor = 500 * time.Millisecond
	// laterMax bounds the wait, like the agent's own longest backoff. A
	// reservation past it is not made; the connection is told a random
	// moment of the last tenth before it.
	laterMax = time.Minute
	// holdWeight is the weight of the newest release in the mean hold
	// time: about the last 32 handshakes count, so the mean follows the
	// load within a fraction of a second of a ramp.
	holdWeight = 32
	// queueFill is the share of Wait the queue is filled up to, at the
	// measured rate: a connection that would wait longer than that is
	// shed at once and told when to come back, rather than queued to be
	// shed when its wait runs out.
	queueFill = 0.8
)

// held records that a slot was held for d. Called with g.mu held.
func (g *Gate) held(d time.Duration) {
	d = max(d, time.Microsecond)
	if g.hold == 0 {
		g.hold = d
		return
	}
	g.hold += (d - g.hold) / holdWeight
}

// rate returns the handshakes the gate admits a second, measured, or
// reconnectRate before any slot was released. A gate sheds only with
// every slot it may give taken, so the slots taken over the mean hold time
// is the rate it serves at while it sheds. Called with g.mu held.
func (g *Gate) rate() float64 {
	if g.hold == 0 {
		return reconnectRate
	}
	return float64(max(g.busy, 1)) / g.hold.Seconds()
}

// queueLimit is how many connections may wait in the queue: Queue, or
// fewer if the rate (measured, or reconnectRate before it can be) would
// not serve more of them within queueFill of Wait (but never fewer than
// Slots). Called with g.mu held.
func (g *Gate) queueLimit() int {
	n := g.rate() * g.cfg.Wait.Seconds() * queueFill
	if n >= float64(g.cfg.Queue) {
		return g.cfg.Queue
	}
	return max(int(n), g.cfg.Slots)
}

// Later reserves, for a connection being shed, the next free moment of
// the reservation clock and returns how long from now it is, with a
// random moment within its share of time so that the connections told
// at once do not come back in step. The moments follow each other at the
// rate the gate admits handshakes, after those waiting in the queue now.
func (g *Gate) Later() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	step := time.Duration(float64(time.Second) / g.rate())
	at := now.Add(laterFloor + time.Duration(g.waiting.Len())*step)
	if g.next.After(at) {
		at = g.next
	}
	d := at.Sub(now)
	if d > laterMax {
		return laterMax - rand.N(laterMax/10)
	}
	g.next = at.Add(step)
	return d + rand.N(step+1)
}
