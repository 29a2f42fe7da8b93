// Package profiling serves Go's profiling endpoints (/debug/pprof/) on a
// loopback listener of their own, for the benchmarks to profile the
// coordinator and the agent. The binaries serve them only when an
// environment variable names the address (TENDRIL_PPROF, read in cmd/).
package profiling

import (
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // registers on http.DefaultServeMux, served only by Serve
	"time"
)

// Serve serves the profiling endpoints on addr, which must be a loopback
// address: the profiles reveal memory contents. The listener lives as
// long as the process.
func Serve(addr string) (net.Addr, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("serve profiles on %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("serve profiles on %q: not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serve profiles on %q: %w", addr, err)
	}
	srv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return ln.Addr(), nil
}
