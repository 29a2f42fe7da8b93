package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/agent/upgrade"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
	"github.com/tendrildeploy/tendril/fleet"
)

// rolloutBench measures figure 7 of BENCHMARKS.md: a rollout of a real
// agent package to a simulated fleet, in batches.
type rolloutBench struct {
	*bench
	agents, batch, maxFailures int
	from, to                   string
	pkgPath, src, goBin        string
	poll                       time.Duration
	// profile is how many seconds of the rollout the coordinator's CPU
	// profile covers; 0: none.
	profile int
}

// rolloutResult is what one rollout measured.
type rolloutResult struct {
	agents, batch             int
	from, to                  string
	pkgSize                   int64
	pkgSHA256, pkgPlatform    string
	pkgBuilt                  bool
	register, connect, upload time.Duration // setup, not timed
	rolloutID, state, reason  string
	total                     time.Duration // rollout created -> last agent succeeded (coordinator's clock)
	observed                  time.Duration // StartRollout call -> finished state seen by polling
	batches                   []time.Duration
	counts                    map[string]int
	listedNew, connectedNew   int // agents listed at the new version; of them connected
	restarts, exited          int64
	coordCPU, simCPU          time.Duration
	// machineCPU is every process's CPU time over the rollout (from
	// /proc/stat): what the coordinator and the simulator did not use of
	// it, others did.
	machineCPU         time.Duration
	rssBefore, rssPeak int64 // coordinator, sampled during the rollout
	hwm                int64 // coordinator's VmHWM at the end (peak since its start)
}

func rolloutCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench-rollout", flag.ContinueOnError)
	agents := fs.Int("agents", 1000, "simulated agents to upgrade")
	batch := fs.Int("batch", 100, "rollout batch size (upgrade --batch)")
	maxFailures := fs.Int("max-failures", 0, "failures the rollout tolerates before it halts (upgrade --max-failures)")
	from := fs.String("from", "1.0.0", "version the simulated agents start at")
	to := fs.String("to", "2.0.0", "version of the agent package rolled out")
	pkg := fs.String("package", "", "agent binary to push (built for this platform, stamped --to); default: build ./cmd/tendril-agent from --src")
	src := fs.String("src", ".", "module folder to build the agent package from")
	goBin := fs.String("go", "go", "go command that builds the agent package")
	out := fs.String("out", "bench-results/rollout.md", "markdown file the results are written to")
	dir := fs.String("dir", filepath.Join(os.TempDir(), "tendril-bench-rollout"), "work folder: coordinator data, agents' homes, the package, logs")
	serverBin := fs.String("server", "", "tendril-server binary (default: next to this binary)")
	hi := fs.Duration("health-interval", 10*time.Second, "coordinator --health-interval")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on each wait (connect, rollout)")
	poll := fs.Duration("poll", 500*time.Millisecond, "how often the rollout's progress is read")
	profile := fs.Int("profile", 0, "save a CPU profile of the coordinator over the rollout's first N seconds next to --out (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *agents <= 0 || *batch <= 0 || *maxFailures < 0 {
		return errors.New("bench-rollout: --agents and --batch must be positive, --max-failures not negative")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if *serverBin == "" {
		*serverBin = filepath.Join(filepath.Dir(self), "tendril-server")
	}
	rb := &rolloutBench{
		bench: &bench{dir: *dir, data: filepath.Join(*dir, "data"), serverBin: *serverBin, selfBin: self,
			healthInterval: *hi, timeout: *timeout, log: os.Stderr},
		agents: *agents, batch: *batch, maxFailures: *maxFailures, from: *from, to: *to,
		pkgPath: *pkg, src: *src, goBin: *goBin, poll: *poll, profile: *profile,
	}
	rb.profiles = filepath.Dir(*out)
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	defer rb.stopCoordinator(false)
	started := time.Now()
	r, err := rb.run(ctx)
	table := renderRolloutTable(r)
	fmt.Println(table)
	doc := renderRolloutDoc(rb, os.Args, r, table, err, time.Since(started))
	if werr := os.WriteFile(*out, []byte(doc), 0o644); werr != nil && err == nil {
		err = werr
	}
	fmt.Fprintf(os.Stderr, "results in %s (took %s)\n", *out, time.Since(started).Round(time.Second))
	return err
}

func (rb *rolloutBench) run(ctx context.Context) (r rolloutResult, err error) {
	r.agents, r.batch, r.from, r.to = rb.agents, rb.batch, rb.from, rb.to
	r.pkgPlatform = runtime.GOOS + "/" + runtime.GOARCH
	// A fresh coordinator. The homes are kept (their keys) and registered
	// again with it; their upgrade state from an earlier run goes.
	if err := os.RemoveAll(rb.data); err != nil {
		return r, err
	}
	if err := os.MkdirAll(rb.dir, 0o755); err != nil {
		return r, err
	}
	for i := range rb.agents {
		if err := os.RemoveAll(upgrade.Dir(fleet.Home(rb.dir, i))); err != nil {
			return r, err
		}
	}
	if err := rb.preparePackage(ctx, &r); err != nil {
		return r, err
	}
	if out, err := exec.CommandContext(ctx, rb.serverBin, "init", "--data", rb.data).CombinedOutput(); err != nil {
		return r, fmt.Errorf("tendril-server init: %v: %s", err, out)
	}
	for _, p := range []*int{&rb.agentPort, &rb.httpPort, &rb.pprofPort} {
		if *p, err = freePort(); err != nil {
			return r, err
		}
	}
	if err := rb.startCoordinator(ctx, "rollout-register"); err != nil {
		return r, err
	}
	cl, err := rb.client()
	if err != nil {
		return r, err
	}
	t := time.Now()
	if _, err := fleet.Prepare(ctx, fleet.Config{Dir: rb.dir, Agents: rb.agents, Coordinator: rb.agentAddr(), Admin: cl,
		RegisterConcurrency: 2 * runtime.NumCPU()}); err != nil {
		return r, err
	}
	r.register = time.Since(t)
	rb.logf("registered %d agents in %s (setup, not timed)", rb.agents, r.register.Round(time.Millisecond))
	// Restarted, so its peak RSS is the rollout's, not the registration's.
	rb.stopCoordinator(true)
	if err := rb.startCoordinator(ctx, "rollout"); err != nil {
		return r, err
	}
	defer rb.stopCoordinator(true)

	statusPort, err := freePort()
	if err != nil {
		return r, err
	}
	statusAddr := fmt.Sprintf("127.0.0.1:%d", statusPort)
	t = time.Now()
	sim, err := startProc(ctx, filepath.Join(rb.dir, "fleet-rollout.log"), rb.selfBin, nil,
		"run", "--agents", strconv.Itoa(rb.agents), "--coordinator", rb.agentAddr(), "--data", rb.data,
		"--dir", rb.dir, "--status", statusAddr, "--agent-version", rb.from)
	if err != nil {
		return r, err
	}
	defer sim.stop(time.Minute)
	if _, err := rb.waitStats(ctx, sim, statusAddr); err != nil {
		return r, err
	}
	if _, _, err := rb.waitVersion(ctx, cl, rb.from, sim); err != nil {
		return r, fmt.Errorf("connect at %s: %w", rb.from, err)
	}
	r.connect = time.Since(t)
	rb.logf("%d agents connected at %s in %s (setup, not timed)", rb.agents, rb.from, r.connect.Round(time.Millisecond))

	f, err := os.Open(rb.pkgPath)
	if err != nil {
		return r, err
	}
	t = time.Now()
	_, err = cl.UploadAgentPackage(ctx, rb.to, runtime.GOOS, runtime.GOARCH, f, r.pkgSize)
	f.Close()
	if err != nil {
		return r, err
	}
	r.upload = time.Since(t)

	r.rssBefore, _ = rss(rb.coord.pid())
	coordCPU0, _ := cpuTime(rb.coord.pid())
	simCPU0, _ := cpuTime(sim.pid())
	machine0, _ := machineCPUTime()
	t0 := time.Now()
	view, err := cl.StartRollout(ctx, api.RolloutRequest{All: true, Version: rb.to, Batch: rb.batch, MaxFailures: &rb.maxFailures})
	if err != nil {
		return r, err
	}
	r.rolloutID = view.ID
	rb.logf("rollout %s started: %d agents to %s in batches of %d", view.ID, rb.agents, rb.to, rb.batch)
	if rb.profile > 0 {
		profiled := make(chan struct{})
		go func() {
			defer close(profiled)
			rb.saveProfile(ctx, "profile", fmt.Sprintf("coordinator-cpu-rollout-%d.pprof", rb.agents), rb.profile)
		}()
		// Waited for before the coordinator stops.
		defer func() { <-profiled }()
	}
	r.rssPeak = r.rssBefore
	deadline := time.Now().Add(rb.timeout)
	lastLog := time.Now()
	for view.State == api.RolloutRunning {
		if err := sleep(ctx, rb.poll); err != nil {
			return r, err
		}
		if v, err := rss(rb.coord.pid()); err == nil {
			r.rssPeak = max(r.rssPeak, v)
		}
		if rb.coord.exited() {
			return r, errors.New("the coordinator exited during the rollout")
		}
		if sim.exited() {
			return r, fmt.Errorf("the simulator exited during the rollout; see %s", sim.logPath)
		}
		if view, err = cl.Rollout(ctx, r.rolloutID); err != nil {
			return r, err
		}
		if time.Since(lastLog) >= 5*time.Second {
			rb.logf("rollout: %v", view.Counts)
			lastLog = time.Now()
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("rollout still running after %s: %v", rb.timeout, view.Counts)
		}
	}
	r.observed = time.Since(t0)
	coordCPU1, _ := cpuTime(rb.coord.pid())
	simCPU1, _ := cpuTime(sim.pid())
	machine1, _ := machineCPUTime()
	r.coordCPU, r.simCPU, r.machineCPU = coordCPU1-coordCPU0, simCPU1-simCPU0, machine1-machine0
	r.hwm, _ = vmHWM(rb.coord.pid())
	r.state, r.reason, r.counts = view.State, view.Reason, view.Counts
	r.total, r.batches = batchTimes(view)
	rb.logf("rollout %s in %s: %s (%s)", r.state, secs(r.total), view.Reason, rolloutCounts(r.counts))

	// The proof: the coordinator lists every agent at the new version.
	var verr error
	r.listedNew, r.connectedNew, verr = rb.waitVersion(ctx, cl, rb.to, sim)
	if st, err := sim.statsAt(ctx, statusAddr); err == nil {
		r.restarts, r.exited = st.Restarts, st.Exited
	}
	if verr != nil {
		return r, fmt.Errorf("after the rollout: %w", verr)
	}
	if r.state != api.RolloutSucceeded || r.counts[api.UpgradeSucceeded] != rb.agents {
		return r, fmt.Errorf("rollout %s: %s (%s), want every agent succeeded", r.state, r.reason, rolloutCounts(r.counts))
	}
	return r, nil
}

// preparePackage builds the agent package (or takes --package), checks it
// is an agent at the version rolled out, and records its size and hash.
func (rb *rolloutBench) preparePackage(ctx context.Context, r *rolloutResult) error {
	if rb.pkgPath == "" {
		rb.pkgPath = filepath.Join(rb.dir, "tendril-agent-"+rb.to)
		// Stamped as make build stamps a release; for the simulator's own
		// platform, which is what the simulated agents report.
		cmd := exec.CommandContext(ctx, rb.goBin, "build", "-trimpath",
			"-ldflags", "-X github.com/tendrildeploy/tendril/version.Version="+rb.to,
			"-o", rb.pkgPath, "./cmd/tendril-agent")
		cmd.Dir = rb.src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build agent package %s: %v: %s", rb.to, err, out)
		}
		r.pkgBuilt = true
	}
	// The simulated agents do not run it, so it is checked here: the
	// package must be the agent at the version announced.
	out, err := exec.CommandContext(ctx, rb.pkgPath, "version", "--json").Output()
	if err != nil {
		return fmt.Errorf("agent package %s: version --json: %w", rb.pkgPath, err)
	}
	var v struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(out, &v); err != nil || v.Version != rb.to {
		return fmt.Errorf("agent package %s: version --json printed %q, want version %s", rb.pkgPath, strings.TrimSpace(string(out)), rb.to)
	}
	f, err := os.Open(rb.pkgPath)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if r.pkgSize, err = io.Copy(h, f); err != nil {
		return fmt.Errorf("agent package %s: %w", rb.pkgPath, err)
	}
	r.pkgSHA256 = hex.EncodeToString(h.Sum(nil))
	rb.logf("agent package %s: %d bytes, %s, SHA-256 %s", rb.pkgPath, r.pkgSize, r.pkgPlatform, r.pkgSHA256)
	return nil
}

// waitVersion waits until the agents listing shows every fleet agent
// connected at version v. It returns how many it listed at v, and how
// many of those connected.
func (rb *rolloutBench) waitVersion(ctx context.Context, cl *client.Client, v string, sim *proc) (atV, connected int, err error) {
	want := make(map[string]bool, rb.agents)
	for i := range rb.agents {
		want[fleet.Name(i)] = true
	}
	deadline := time.Now().Add(rb.timeout)
	for {
		agents, err := cl.Agents(ctx)
		atV, connected = 0, 0
		for _, a := range agents {
			if want[a.Name] && a.Version == v {
				atV++
				if a.Connected {
					connected++
				}
			}
		}
		if err == nil && connected == rb.agents {
			return atV, connected, nil
		}
		if sim.exited() {
			return atV, connected, fmt.Errorf("the simulator exited; see %s", sim.logPath)
		}
		if time.Now().After(deadline) {
			return atV, connected, fmt.Errorf("%d of %d agents listed connected at %s after %s (%v)", connected, rb.agents, v, rb.timeout, err)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return atV, connected, err
		}
	}
}

// batchTimes reads a finished rollout's timing from the coordinator's
// records: total is from its creation to the last agent's final state,
// and a batch's time runs from the end of the one before (the engine
// starts a batch when the previous one is final) to its last agent's
// final state.
func batchTimes(v api.RolloutView) (total time.Duration, batches []time.Duration) {
	ends := map[int]time.Time{}
	last := 0
	for _, a := range v.Agents {
		if a.Batch == 0 {
			continue // already at the version
		}
		if a.UpdatedAt.After(ends[a.Batch]) {
			ends[a.Batch] = a.UpdatedAt
		}
		last = max(last, a.Batch)
	}
	prev := v.CreatedAt
	for b := 1; b <= last; b++ {
		end, ok := ends[b]
		if !ok {
			continue
		}
		batches = append(batches, end.Sub(prev))
		prev = end
	}
	return prev.Sub(v.CreatedAt), batches
}

// vmHWM is a process's peak resident set (VmHWM) in bytes.
func vmHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM")
}

// machineCPUTime is the CPU time all processes used since boot: the
// user, nice, system, irq and softirq fields of /proc/stat's cpu line
// (not idle or iowait).
func machineCPUTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, errors.New("/proc/stat: no cpu line")
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks += v
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ticks) * time.Second / hz, nil
}

func rolloutCounts(c map[string]int) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, c[k])
	}
	return strings.Join(parts, ", ")
}

func rolloutMiB(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// renderRolloutTable is the results as a markdown table.
func renderRolloutTable(r rolloutResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| figure | goal | %d agents, batches of %d |\n|---|---|---|\n", r.agents, r.batch)
	row := func(name, goal, value string) { fmt.Fprintf(&b, "| %s | %s | %s |\n", name, goal, value) }
	// dash is "-" for a figure the run did not get to; f is not called
	// then.
	dash := func(ok bool, f func() string) string {
		if !ok {
			return "-"
		}
		return f()
	}
	row("7. rollout: start to last agent succeeded", "≤ 60 s", dash(r.total > 0, func() string { return secs(r.total) }))
	row("7. rollout: start to finished seen by the client", "", dash(r.observed > 0, func() string { return secs(r.observed) }))
	row("7. per-batch time: median / max", "", dash(len(r.batches) > 0, func() string {
		return fmt.Sprintf("%s / %s (%d batches: %s)", secs(median(r.batches)), secs(slices.Max(r.batches)), len(r.batches), durs(r.batches))
	}))
	row("7. agents succeeded / rolled back / failed", fmt.Sprintf("%d / 0 / 0", r.agents), dash(r.counts != nil, func() string {
		return fmt.Sprintf("%d / %d / %d", r.counts[api.UpgradeSucceeded], r.counts[api.UpgradeRolledBack], r.counts[api.UpgradeFailed])
	}))
	row(fmt.Sprintf("7. agents listed connected at %s afterwards", r.to), strconv.Itoa(r.agents), dash(r.state != "", func() string { return strconv.Itoa(r.connectedNew) }))
	row("7. simulated restarts / agents that gave up", fmt.Sprintf("%d / 0", r.agents), dash(r.state != "", func() string { return fmt.Sprintf("%d / %d", r.restarts, r.exited) }))
	row("7. agent package", "", dash(r.pkgSize > 0, func() string {
		return fmt.Sprintf("%s, %d bytes (%.1f MiB), SHA-256 %s…", r.pkgPlatform, r.pkgSize, float64(r.pkgSize)/(1<<20), r.pkgSHA256[:12])
	}))
	row("7. package bytes sent (size × agents)", "", dash(r.pkgSize > 0, func() string {
		return fmt.Sprintf("%.1f GiB", float64(r.pkgSize)*float64(r.agents)/(1<<30))
	}))
	row("7. coordinator CPU during the rollout (user+sys)", "", dash(r.observed > 0, func() string {
		return fmt.Sprintf("%s (%.0f%% of a core)", secs(r.coordCPU), 100*r.coordCPU.Seconds()/r.observed.Seconds())
	}))
	row("7. simulator CPU during the rollout (user+sys)", "", dash(r.observed > 0, func() string {
		return fmt.Sprintf("%s (%.0f%% of a core)", secs(r.simCPU), 100*r.simCPU.Seconds()/r.observed.Seconds())
	}))
	row("7. other processes' CPU during the rollout (machine − coordinator − simulator)", "", dash(r.observed > 0 && r.machineCPU > 0, func() string {
		other := r.machineCPU - r.coordCPU - r.simCPU
		return fmt.Sprintf("%s (%.0f%% of a core, of %d cores)", secs(other), 100*other.Seconds()/r.observed.Seconds(), runtime.NumCPU())
	}))
	row("7. coordinator RSS: before → peak sampled (VmHWM)", "", dash(r.rssPeak > 0, func() string {
		return fmt.Sprintf("%s → %s (%s)", rolloutMiB(r.rssBefore), rolloutMiB(r.rssPeak), rolloutMiB(r.hwm))
	}))
	row("setup (not timed): register / connect / upload", "", fmt.Sprintf("%s / %s / %s", secs(r.register), secs(r.connect), secs(r.upload)))
	return b.String()
}

func renderRolloutDoc(rb *rolloutBench, args []string, r rolloutResult, table string, runErr error, took time.Duration) string {
	dirty := ""
	if command("git", "status", "--porcelain") != "" {
		dirty = " (dirty tree)"
	}
	var s strings.Builder
	fmt.Fprintf(&s, "# Fleet benchmark: agent rollout (figure 7)\n\n")
	fmt.Fprintf(&s, "- when: %s, took %s\n", time.Now().UTC().Format(time.RFC3339), took.Round(time.Second))
	fmt.Fprintf(&s, "- command: `%s`\n", strings.Join(args, " "))
	fmt.Fprintf(&s, "- commit: %s%s\n", command("git", "rev-parse", "--short", "HEAD"), dirty)
	fmt.Fprintf(&s, "- machine: %d CPUs, %s memory, kernel %s, %s\n", runtime.NumCPU(), memTotal(), command("uname", "-r"), runtime.Version())
	built := "given with --package"
	if r.pkgBuilt {
		built = "built from ./cmd/tendril-agent with -ldflags -X version.Version=" + r.to
	}
	fmt.Fprintf(&s, "- rollout: `upgrade --all --batch %d --max-failures %d` through the admin API, %s → %s; package %s\n",
		rb.batch, rb.maxFailures, r.from, r.to, built)
	fmt.Fprintf(&s, "- simulated: the binary swap only. Each agent receives the package over its session and verifies platform, version, signature, size and SHA-256 as a real agent does; it skips the smoke test, the swap and the watchdog, records the swap, and restarts in process at %s, whose Hello the coordinator takes as success\n", r.to)
	fmt.Fprintf(&s, "- coordinator: --health-interval %s; simulator and coordinator are separate processes on this machine; the rollout is polled every %s\n\n", rb.healthInterval, rb.poll)
	if runErr != nil {
		fmt.Fprintf(&s, "**The run failed:** %v\n\n", runErr)
	}
	s.WriteString(table)
	return s.String()
}
