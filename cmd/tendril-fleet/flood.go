package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/fleet"
	"github.com/tendrildeploy/tendril/version"
)

// floodBench measures how long an agent that reconnects takes to get in,
// with and without a flood of silent sockets on the agent port (issue 19:
// 2,000 of them from one address once kept an agent out for 29.5 s).
type floodBench struct {
	*bench
	runs, sockets int
	reopen        time.Duration
	serverFlags   []string
}

// floodRun is one timed reconnect.
type floodRun struct {
	flood  bool
	took   time.Duration // agent started -> welcomed; 0 if it never was
	err    error
	opened int64 // flood sockets opened while the agent tried
	// The coordinator's handshake outcomes while the agent tried.
	silent, shed float64
}

func floodCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench-flood", flag.ContinueOnError)
	runs := fs.Int("runs", 5, "timed reconnects with the flood, and as many without (alternating)")
	sockets := fs.Int("sockets", 2000, "silent sockets in the flood, all from 127.0.0.1")
	reopen := fs.Duration("reopen", time.Second, "pause before the flood opens again a socket the coordinator closed")
	out := fs.String("out", "bench-results/flood.md", "markdown file the results are written to")
	dir := fs.String("dir", filepath.Join(os.TempDir(), "tendril-bench-flood"), "work folder: coordinator data, the agent's home, logs")
	serverBin := fs.String("server", "", "tendril-server binary (default: next to this binary)")
	serverFlags := fs.String("server-flags", "", "more flags for tendril-server run, space-separated (e.g. \"--max-handshakes-per-address 32\")")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long one reconnect may take before it counts as kept out")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runs <= 0 || *sockets <= 0 || *reopen < 0 {
		return errors.New("bench-flood: --runs and --sockets must be positive, --reopen not negative")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if *serverBin == "" {
		*serverBin = filepath.Join(filepath.Dir(self), "tendril-server")
	}
	fb := &floodBench{
		bench: &bench{dir: *dir, data: filepath.Join(*dir, "data"), serverBin: *serverBin, selfBin: self,
			healthInterval: time.Minute, timeout: *timeout, log: os.Stderr},
		runs: *runs, sockets: *sockets, reopen: *reopen, serverFlags: strings.Fields(*serverFlags),
	}
	fb.profiles = filepath.Dir(*out)
	if err := os.MkdirAll(fb.profiles, 0o755); err != nil {
		return err
	}
	defer fb.stopCoordinator(false)
	started := time.Now()
	rs, err := fb.run(ctx)
	table := renderFloodTable(fb, rs)
	fmt.Println(table)
	doc := renderFloodDoc(fb, os.Args, table, err, time.Since(started))
	if werr := os.WriteFile(*out, []byte(doc), 0o644); werr != nil && err == nil {
		err = werr
	}
	fmt.Fprintf(os.Stderr, "results in %s (took %s)\n", *out, time.Since(started).Round(time.Second))
	return err
}

func (fb *floodBench) run(ctx context.Context) ([]floodRun, error) {
	if err := os.RemoveAll(fb.dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(fb.dir, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, fb.serverBin, "init", "--data", fb.data).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("tendril-server init: %v: %s", err, out)
	}
	for _, p := range []*int{&fb.agentPort, &fb.httpPort, &fb.pprofPort} {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		*p = port
	}
	if err := fb.startCoordinator(ctx, "flood", fb.serverFlags...); err != nil {
		return nil, err
	}
	cl, err := fb.client()
	if err != nil {
		return nil, err
	}
	if _, err := fleet.Prepare(ctx, fleet.Config{Dir: fb.dir, Agents: 1, Coordinator: fb.agentAddr(), Admin: cl}); err != nil {
		return nil, err
	}
	var rs []floodRun
	for i := range 2 * fb.runs {
		r := floodRun{flood: i%2 == 1}
		if err := fb.reconnect(ctx, &r); err != nil {
			return rs, err
		}
		rs = append(rs, r)
		what := "no flood"
		if r.flood {
			what = fmt.Sprintf("flood of %d", fb.sockets)
		}
		if r.err != nil {
			fb.logf("reconnect %d (%s): kept out: %v", i/2+1, what, r.err)
		} else {
			fb.logf("reconnect %d (%s): in after %s (flood sockets opened meanwhile %d; coordinator closed %v silent, shed %v)",
				i/2+1, what, r.took.Round(time.Millisecond), r.opened, r.silent, r.shed)
		}
	}
	if fb.coord.exited() {
		return rs, errors.New("the coordinator exited")
	}
	return rs, nil
}

// reconnect starts the registered agent, with the flood in full swing if
// r.flood, times until it is welcomed, and stops it again.
func (fb *floodBench) reconnect(ctx context.Context, r *floodRun) error {
	var f *fleet.Flood
	if r.flood {
		var err error
		if f, err = fleet.StartFlood(ctx, fb.agentAddr(), fb.sockets, fb.reopen); err != nil {
			return err
		}
		defer f.Stop()
		// The agent comes once the sockets the coordinator closed are
		// being opened again, as a persistent flooder would.
		swing := time.Now().Add(fb.timeout)
		for f.Stats().Opened < int64(fb.sockets)+int64(fb.sockets)/2 {
			if time.Now().After(swing) {
				return fmt.Errorf("flood: %d sockets opened in %s, want %d", f.Stats().Opened, fb.timeout, fb.sockets+fb.sockets/2)
			}
			if err := sleep(ctx, 50*time.Millisecond); err != nil {
				return err
			}
		}
	}
	m0, err := fb.metrics(ctx)
	if err != nil {
		return err
	}
	var opened0 int64
	if f != nil {
		opened0 = f.Stats().Opened
	}
	// A real agent's settings (backoff from 1 s to a minute); the lock
	// file is skipped only because the simulator owns the home.
	a, err := agent.New(agent.Config{Home: fleet.Home(fb.dir, 0), Version: version.Version, NoHomeLock: true})
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- a.Run(runCtx) }()
	deadline := t0.Add(fb.timeout)
	for !a.Status().Connected {
		if time.Now().After(deadline) {
			r.err = fmt.Errorf("not in after %s (last error: %s)", fb.timeout, a.Status().LastError)
			break
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			cancel()
			<-done
			return err
		}
	}
	if r.err == nil {
		r.took = time.Since(t0)
	}
	if f != nil {
		r.opened = f.Stats().Opened - opened0
	}
	if m1, err := fb.metrics(ctx); err == nil {
		r.silent = m1[`tendril_handshakes_total{outcome="silent"}`] - m0[`tendril_handshakes_total{outcome="silent"}`]
		r.shed = m1[`tendril_handshakes_total{outcome="shed"}`] - m0[`tendril_handshakes_total{outcome="shed"}`]
	}
	cancel()
	<-done
	if f != nil {
		f.Stop()
	}
	// Every silent socket is gone and the coordinator's deadlines for
	// them have passed (10 s, the handshake's, before issue 19) before
	// the next reconnect is timed.
	return sleep(ctx, 11*time.Second)
}

func renderFloodTable(fb *floodBench, rs []floodRun) string {
	var without, with []time.Duration
	var keptOut int
	var opened int64
	var silent, shed float64
	for _, r := range rs {
		switch {
		case !r.flood:
			without = append(without, r.took)
		case r.err != nil:
			keptOut++
		default:
			with = append(with, r.took)
			opened += r.opened
			silent += r.silent
			shed += r.shed
		}
	}
	var b strings.Builder
	b.WriteString("| figure | measured |\n|---|---|\n")
	fmt.Fprintf(&b, "| agent reconnect, no flood: started → welcomed | %s |\n", msMedian(without))
	fmt.Fprintf(&b, "| agent reconnect during a silent-socket flood (%d sockets from one address): started → welcomed | %s |\n", fb.sockets, msMedian(with))
	fmt.Fprintf(&b, "| reconnects kept out longer than %s during the flood | %d of %d |\n", fb.timeout, keptOut, len(with)+keptOut)
	if n := len(with); n > 0 {
		fmt.Fprintf(&b, "| per reconnect during the flood, mean: flood sockets opened / coordinator closed as silent / shed |  %.0f / %.0f / %.0f |\n",
			float64(opened)/float64(n), silent/float64(n), shed/float64(n))
	}
	return b.String()
}

// msMedian is the median of ds and every value, in milliseconds: a
// reconnect on loopback takes a few.
func msMedian(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
	var all []string
	for _, d := range ds {
		all = append(all, ms(d))
	}
	return fmt.Sprintf("%s (median of %d: %s)", ms(median(ds)), len(ds), strings.Join(all, ", "))
}

func renderFloodDoc(fb *floodBench, args []string, table string, runErr error, took time.Duration) string {
	dirty := ""
	if command("git", "status", "--porcelain") != "" {
		dirty = " (dirty tree)"
	}
	var s strings.Builder
	fmt.Fprintf(&s, "# Agent reconnect during a silent-socket flood\n\n")
	fmt.Fprintf(&s, "- when: %s, took %s\n", time.Now().UTC().Format(time.RFC3339), took.Round(time.Second))
	fmt.Fprintf(&s, "- command: `%s`\n", strings.Join(args, " "))
	fmt.Fprintf(&s, "- commit: %s%s; coordinator %s\n", command("git", "rev-parse", "--short", "HEAD"), dirty, fb.serverBin)
	fmt.Fprintf(&s, "- machine: %d CPUs, %s memory, kernel %s, %s\n", runtime.NumCPU(), memTotal(), command("uname", "-r"), runtime.Version())
	flags := "default admission settings"
	if len(fb.serverFlags) > 0 {
		flags = "run with " + strings.Join(fb.serverFlags, " ")
	}
	fmt.Fprintf(&s, "- coordinator: its own process, %s\n", flags)
	fmt.Fprintf(&s, "- flood: %d TCP connections from 127.0.0.1 that never send a byte, each opened again %s after the coordinator closes it; the agent (from 127.0.0.1 too, as behind a NAT it shares with the flooder) starts once %d have been opened\n",
		fb.sockets, fb.reopen, fb.sockets+fb.sockets/2)
	fmt.Fprintf(&s, "- agent: a real agent in this process with a real agent's settings (backoff 1 s to 1 min), restarted for each reconnect; timed from Run to Welcome (Status().Connected); reconnects with and without the flood alternate, 11 s apart\n\n")
	if runErr != nil {
		fmt.Fprintf(&s, "**The run failed:** %v\n\n", runErr)
	}
	s.WriteString(table)
	return s.String()
}
