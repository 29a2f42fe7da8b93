package main

// envPprof, when set to a loopback host:port, makes "run" serve Go's
// profiling endpoints (/debug/pprof/) there. It is unset, and nothing is
// served, unless someone sets it: only the transfer benchmark
// (tendril-fleet bench-transfer) does, to profile the agent's CPU during
// bundle pushes. The agent serves nothing else over HTTP.
const envPprof = "TENDRIL_PPROF"
