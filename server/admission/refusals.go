package admission

import (
	"sync"
	"time"
)

// maxRefusalKeys is how many keys Refusals remembers before it forgets
// those whose window has passed. It is not a hard bound: the keys are
// revoked thumbprints, a set the coordinator's own records bound, and
// within a window every one of them is needed.
const maxRefusalKeys = 4096

// Refusals rate-limits the log of refused handshakes: one line per key (a
// certificate thumbprint) per window, carrying the count of refusals since
// the previous line. A deleted agent keeps knocking, and a fleet of them
// would otherwise fill the log with the same line.
type Refusals struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	seen map[string]*refusal
}

type refusal struct {
	logged time.Time // when the last line was logged
	since  int       // refusals not logged since then
}

// NewRefusals returns a Refusals that logs each key at most once per
// every.
func NewRefusals(every time.Duration) *Refusals {
	return &Refusals{every: every, now: time.Now, seen: map[string]*refusal{}}
}

// Note records one refusal of key. It reports whether to log it now and,
// if so, how many refusals of key the line stands for: this one and those
// not logged since the previous line.
func (r *Refusals) Note(key string) (log bool, count int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if e, ok := r.seen[key]; ok {
		if now.Sub(e.logged) < r.every {
			e.since++
			return false, 0
		}
		count = e.since + 1
		e.logged, e.since = now, 0
		return true, count
	}
	if len(r.seen) >= maxRefusalKeys {
		r.forget(now)
	}
	r.seen[key] = &refusal{logged: now}
	return true, 1
}

// forget drops keys whose window has passed: their next refusal is logged
// anyway. The refusals they had not logged are lost, which a full table
// (a flood of distinct revoked certificates) makes acceptable.
func (r *Refusals) forget(now time.Time) {
	for k, e := range r.seen {
		if now.Sub(e.logged) >= r.every {
			delete(r.seen, k)
		}
	}
}
