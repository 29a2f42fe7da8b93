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
	// moment of the second half before it, to be told again then.
	laterMax = time.Minute
	// servedBucket and servedBuckets are the ring the rate is counted
	// in: the slots released over the last two seconds, so the rate
	// follows the load within a second or two of a ramp.
	servedBucket  = 250 * time.Millisecond
	servedBuckets = 8
	// servedWarmup is how long slots must have been released for before
	// the count is trusted over reconnectRate.
	servedWarmup = 500 * time.Millisecond
	// rateFloor is the least rate scheduled by, and rateOptimism what
	// the measured rate is raised by: coming back too early costs a
	// busy answer (no TLS), too late leaves slots idle. Measured in the
	// cold ramp (10,000 agents from one simulator on two loaded cores),
	// the first seconds' rate, while every agent starts at once, was a
	// quarter of what the gate served once they came back: scheduled by
	// it, the fleet was sent a minute away and the gate sat idle for 50 s.
	rateFloor    = 100
	rateOptimism = 1.25
	// queueFill is the share of Wait the queue is filled up to, at the
	// measured rate: a connection that would wait longer than that is
	// shed at once and told when to come back, rather than queued to be
	// shed when its wait runs out.
	queueFill = 0.8
)

// servedRing counts released slots in buckets of servedBucket, the
// newest at index at%servedBuckets.
type servedRing struct {
	first time.Time // the first release
	at    int64     // the newest bucket's number
	n     [servedBuckets]int
}

// advance moves the ring to now, emptying the buckets it passes.
func (r *servedRing) advance(now time.Time) {
	b := now.UnixNano() / int64(servedBucket)
	if b-r.at >= servedBuckets {
		r.n = [servedBuckets]int{}
		r.at = b
		return
	}
	for r.at < b {
		r.at++
		r.n[r.at%servedBuckets] = 0
	}
}

// add counts a release at now.
func (r *servedRing) add(now time.Time) {
	if r.first.IsZero() {
		r.first = now
	}
	r.advance(now)
	r.n[r.at%servedBuckets]++
}

// rate returns the releases a second over the ring's window, and false
// while the ring has not been counting for servedWarmup.
func (r *servedRing) rate(now time.Time) (float64, bool) {
	// The window: the full buckets before the newest, and as much of the
	// newest as has passed.
	window := (servedBuckets-1)*servedBucket + time.Duration(now.UnixNano()%int64(servedBucket))
	span := min(now.Sub(r.first), window)
	if r.first.IsZero() || span < servedWarmup {
		return 0, false
	}
	r.advance(now)
	sum := 0
	for _, n := range r.n {
		sum += n
	}
	return float64(sum) / span.Seconds(), true
}

// rate returns the handshakes the gate admits a second: the slots
// released a second lately (a gate sheds only with every slot it may give
// taken, so then that is the rate it serves at), at least rateFloor; or
// reconnectRate before slots were released for long enough to tell.
// Called with g.mu held.
func (g *Gate) rate() float64 {
	r, ok := g.served.rate(g.now())
	if !ok {
		return reconnectRate
	}
	return max(r*rateOptimism, rateFloor)
}

// queueLimit is how many connections may wait in the queue for a
// connection that may wait up to wait: Queue, or fewer if the rate
// (measured, or reconnectRate before it can be) would not serve more of
// them within queueFill of wait (but never fewer than Slots). Called
// with g.mu held.
func (g *Gate) queueLimit(wait time.Duration) int {
	n := g.rate() * wait.Seconds() * queueFill
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
		return laterMax - rand.N(laterMax/2)
	}
	g.next = at.Add(step)
	return d + rand.N(step+1)
}
