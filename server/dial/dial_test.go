package dial

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/tendrildeploy/tendril/server/store"
)

// TestRetryWaitDuringOutage: an unreachable database neither waits the
// grown backoff nor grows it, so a listening agent is dialed again
// within seconds of the database's return.
func TestRetryWaitDuringOutage(t *testing.T) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.RandomizationFactor, bo.Multiplier = time.Second, 0, 2
	bo.MaxInterval, bo.MaxElapsedTime = time.Hour, 0
	bo.Reset()
	for range 10 {
		bo.NextBackOff() // a backoff grown to 1024 s
	}
	outage := fmt.Errorf("record session: %w", store.ErrUnavailable)
	for range 100 {
		if got := retryWait(outage, bo); got < outageRetry/3 || got > outageRetry {
			t.Fatalf("wait during an outage: got %s, want %s to %s", got, outageRetry/3, outageRetry)
		}
	}
	if got, want := retryWait(errors.New("dial: connection refused"), bo), 1024*time.Second; got != want {
		t.Fatalf("wait after an agent's failure: got %s, want the backoff's next, %s, not grown by the outage", got, want)
	}
}
