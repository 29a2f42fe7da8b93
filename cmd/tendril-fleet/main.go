// Command tendril-fleet simulates a fleet of agents in one process (see
// package fleet) and runs the fleet-scale benchmarks of BENCHMARKS.md.
//
//	tendril-fleet run --agents N --coordinator HOST:PORT (--data DIR | --url URL --api-key KEY) --dir WORKDIR
//	tendril-fleet bench --agents 1000,5000,10000 --out bench-results/results.md
//	tendril-fleet bench-transfer --out bench-results/transfer.md
//	tendril-fleet bench-rollout --agents 1000 --batch 100 --out bench-results/rollout.md
//	tendril-fleet bench-flood --out bench-results/flood.md
//
// run registers the agents' homes that are not registered yet (once), then
// runs them all until interrupted. With --status it serves the fleet's
// counters as JSON on a loopback address, for the benchmark.
//
// bench starts everything itself: a fresh coordinator (tendril-server from
// the folder of this binary, or --server), the simulator as a separate
// process, and stops both at the end, also on failure. bench-rollout does
// the same for figure 7, an agent upgrade rollout (see rollout.go).
//
// bench-flood measures figure 8 (see flood.go): how long a real agent
// takes to reconnect while 2,000 silent sockets from its own address
// flood the agent port, next to the time without the flood.
//
// bench-transfer measures figures 5 and 6 (see transfer.go): Calamari
// bundle pushes to one real agent against raw TLS and scp, to a simulated
// fleet, and a task's round trip against a multiplexed ssh, and the
// one-agent figures again for agents behind tinyproxy and behind nginx as
// a WebSocket; it starts and stops its own coordinators, agents, proxies
// and sshd.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tendrildeploy/tendril/api/client"
	"github.com/tendrildeploy/tendril/fleet"
	"github.com/tendrildeploy/tendril/internal/profiling"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(ctx, os.Args[2:])
	case "bench":
		err = benchCmd(ctx, os.Args[2:])
	case "bench-transfer":
		err = transferCmd(ctx, os.Args[2:])
	case "bench-rollout":
		err = rolloutCmd(ctx, os.Args[2:])
	case "bench-flood":
		err = floodCmd(ctx, os.Args[2:])
	case "plain-server":
		// Hidden: the anchor of figure 1, started by bench (see plain.go).
		err = plainServerCmd(ctx, os.Args[2:])
	case "plain-clients":
		err = plainClientsCmd(ctx, os.Args[2:])
	case "-h", "--help", "help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "tendril-fleet: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tendril-fleet:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  tendril-fleet run --agents N --coordinator HOST:PORT (--data DIR | --url URL --api-key KEY) --dir WORKDIR [--environment Fleet] [--ramp 0] [--connect-pace 64] [--status 127.0.0.1:PORT] [--agent-version V]
  tendril-fleet bench [--agents 1000,5000,10000] [--out bench-results/results.md] [--dir WORKDIR] [--server PATH] [--anchor=true]
  tendril-fleet bench-transfer [--out bench-results/transfer.md] [--runs 5] [--rtt-runs 50] [--agents 100,500] [--bundle-mib 100] [--fleet-mib 20] [--via tinyproxy,nginx|none] [--dir WORKDIR] [--calamari FILE] [--keep]
  tendril-fleet bench-rollout [--agents 1000] [--batch 100] [--out bench-results/rollout.md] [--dir WORKDIR] [--server PATH] [--package FILE]
  tendril-fleet bench-flood [--runs 5] [--sockets 2000] [--reopen 1s] [--out bench-results/flood.md] [--dir WORKDIR] [--server PATH] [--server-flags "..."] [--timeout 2m]`)
}

func runCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	agents := fs.Int("agents", 0, "number of agents to simulate")
	coordinator := fs.String("coordinator", "", "host:port the agents dial")
	data := fs.String("data", os.Getenv("TENDRIL_DATA"), "data folder of a coordinator running on this host (for the admin API)")
	url := fs.String("url", os.Getenv("TENDRIL_URL"), "URL of the coordinator's API, instead of --data")
	apiKey := fs.String("api-key", os.Getenv("TENDRIL_API_KEY"), "API key, with --url")
	dir := fs.String("dir", "", "work folder holding the agents' homes")
	env := fs.String("environment", fleet.DefaultEnvironment, "environment the agents are enrolled into")
	ramp := fs.Duration("ramp", 0, "spread the agents' starts over this duration (0: all at once)")
	pace := fs.Int("connect-pace", 64, "agents between a TCP connect and their ClientHello at once, as if each had its own host (negative: unpaced)")
	status := fs.String("status", "", "loopback host:port to serve the fleet's counters on as JSON (GET /stats)")
	agentVersion := fs.String("agent-version", "", "version the agents report until an upgrade (default: this binary's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if addr := os.Getenv("TENDRIL_PPROF"); addr != "" {
		if _, err := profiling.Serve(addr); err != nil {
			return err
		}
	}
	var cl *client.Client
	var err error
	switch {
	case *url != "":
		cl, err = client.New(*url, *apiKey, nil)
	case *data != "":
		cl, err = client.FromDataDir(*data)
	default:
		return errors.New("run: give --data DIR or --url and --api-key")
	}
	if err != nil {
		return err
	}
	cfg := fleet.Config{
		Dir: *dir, Agents: *agents, Coordinator: *coordinator, Admin: cl,
		Environment: *env, Ramp: *ramp, ConnectPace: *pace,
	}
	cfg.Agent.Version = *agentVersion
	start := time.Now()
	n, err := fleet.Prepare(ctx, cfg)
	if err != nil {
		return err
	}
	if n > 0 {
		fmt.Fprintf(os.Stderr, "registered %d agents in %s\n", n, time.Since(start).Round(time.Millisecond))
	}
	f, err := fleet.Start(ctx, cfg)
	if err != nil {
		return err
	}
	if *status != "" {
		if err := serveStatus(*status, f); err != nil {
			f.Stop()
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "running %d agents against %s; interrupt to stop\n", *agents, *coordinator)
	<-ctx.Done()
	st := f.Stats()
	if err := f.Stop(); err != nil {
		return fmt.Errorf("agents stopped on their own: %w", err)
	}
	fmt.Fprintf(os.Stderr, "stopped %d agents; %d sessions in all\n", st.Agents, st.Sessions)
	return nil
}

// serveStatus serves GET /stats on a loopback address.
func serveStatus(addr string, f *fleet.Fleet) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--status: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--status: %q is not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--status: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(f.Stats())
	})
	go (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
	return nil
}
