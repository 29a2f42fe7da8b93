package agent

import (
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// jitterBackOff is exponential backoff with full jitter: the wait is
// uniformly random in [0, cap), where cap doubles from the minimum up to
// the maximum. Full jitter spreads a fleet that lost its coordinator at the
// same moment over the whole window instead of bunching it around each
// doubling, which is what lets the coordinator survive the reconnect storm.
type jitterBackOff struct {
	exp     *backoff.ExponentialBackOff
	lastCap time.Duration
}

var _ backoff.BackOff = (*jitterBackOff)(nil)

// newJitterBackOff returns a backoff whose cap starts at min and saturates
// at max. It never gives up: an agent must not take its machine dark.
func newJitterBackOff(min, max time.Duration) *jitterBackOff {
	exp := backoff.NewExponentialBackOff()
	exp.InitialInterval = min
	exp.MaxInterval = max
	exp.Multiplier = 2
	// The exponential backoff only computes the cap; the jitter is ours.
	exp.RandomizationFactor = 0
	exp.MaxElapsedTime = 0
	exp.Reset()
	return &jitterBackOff{exp: exp}
}

// NextBackOff returns the next wait and doubles the cap.
func (b *jitterBackOff) NextBackOff() time.Duration {
	c := b.exp.NextBackOff()
	b.lastCap = c
	if c <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(c)))
}

// Reset starts again from the minimum.
func (b *jitterBackOff) Reset() {
	b.exp.Reset()
	b.lastCap = 0
}

// currentCap returns the cap the last wait was drawn under.
func (b *jitterBackOff) currentCap() time.Duration { return b.lastCap }
