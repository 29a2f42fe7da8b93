package server

import "time"

// reconnectRate is the rate, in sessions a second, at which the
// coordinator asks a fleet to come back: after a restart (the spread of
// the GoAway at shutdown) and after a crash (the window named in every
// Welcome, which agents use when their session breaks without a GoAway).
// It is below what one coordinator on two cores handshakes while the
// fleet simulator shares the cores (BENCHMARKS.md), so the returning fleet
// is served as it arrives rather than mostly shed and retried.
const reconnectRate = 500

// reconnectSpread is the window over which a fleet of n agents is asked to
// spread its reconnects: about a second per reconnectRate agents, at most
// a minute.
func reconnectSpread(n int) time.Duration {
	return min(time.Duration(n/reconnectRate+1)*time.Second, time.Minute)
}
