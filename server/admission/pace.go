package admission

import (
	"math/rand/v2"
	"sync"
	"time"
)

// paceWindow is how long Pace counts refusals for: about how long an
// agent refused takes to come back, so that a window holds about one
// refusal per waiting agent.
const paceWindow = 10 * time.Second

// paceFloor is the least an agent is told to wait: a refusal costs a
// handshake, and a second is short beside any outage worth refusing for.
const paceFloor = time.Second

// Pace says when agents refused for a reason that passes (the node
// cannot reach its database) should come back: a second, plus a random
// moment of a window sized to how many it refused lately
// (ReconnectSpread), so that a fleet waiting for the database knocks at
// a rate the node can serve, and is back within seconds of its return.
// The node cannot ask the database how many agents there are, so it
// counts them as they knock.
type Pace struct {
	now func() time.Time

	mu    sync.Mutex
	start time.Time // of the current window
	count int       // refusals in the current window
	prev  int       // refusals in the previous window, if it just ended
}

// NewPace returns a Pace that has refused nobody yet.
func NewPace() *Pace { return &Pace{now: time.Now} }

// RetryAfter records one refusal and returns when the agent refused
// should come back.
func (p *Pace) RetryAfter() time.Duration {
	p.mu.Lock()
	now := p.now()
	if since := now.Sub(p.start); since >= paceWindow {
		p.prev = 0
		if since < 2*paceWindow {
			p.prev = p.count
		}
		p.start, p.count = now, 0
	}
	p.count++
	n := max(p.count, p.prev)
	p.mu.Unlock()
	return paceFloor + rand.N(ReconnectSpread(n))
}
