package cli

// envPprof, when set to a loopback host:port, makes "run" serve Go's
// profiling endpoints (/debug/pprof/) there, on a listener of its own: the
// API's handler never includes them. The fleet benchmark (tendril-fleet
// bench) sets it to save the coordinator's heap and CPU profiles.
const envPprof = "TENDRIL_PPROF"
