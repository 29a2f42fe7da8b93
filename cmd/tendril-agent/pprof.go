package main

import (
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // registers on http.DefaultServeMux, served only below
	"time"
)

// envPprof, when set to a loopback host:port, makes "run" serve Go's
// profiling endpoints (/debug/pprof/) there. It is unset, and nothing is
// served, unless someone sets it: only the transfer benchmark
// (tendril-fleet bench-transfer) does, to profile the agent's CPU during
// bundle pushes. The agent serves nothing else over HTTP.
const envPprof = "TENDRIL_PPROF"

// startPprof serves the profiling endpoints on addr, which must be a
// loopback address: the profiles reveal memory contents.
func startPprof(addr string) (net.Addr, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envPprof, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("%s: %q is not a loopback address", envPprof, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envPprof, err)
	}
	srv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) // lives as long as the process
	return ln.Addr(), nil
}
