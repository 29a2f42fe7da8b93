package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tendrildeploy/tendril/api/client"
	"github.com/tendrildeploy/tendril/fleet"
)

// bench measures figures 1-4 of BENCHMARKS.md for each fleet size.
type bench struct {
	dir, data, serverBin, selfBin, profiles string
	// profilePrefix starts the profiles' names: "" for the default
	// --out, the results file's name otherwise, so runs kept side by
	// side do not overwrite each other's profiles.
	profilePrefix                 string
	healthInterval, idle, timeout time.Duration
	sweeps, storms                int
	anchor                        bool
	// gcEnv is the Go runtime settings (GOGC=, GOMEMLIMIT=) given to the
	// coordinator and to the anchor alike.
	gcEnv                          []string
	agentPort, httpPort, pprofPort int
	coord                          *proc
	log                            io.Writer
}

// result is one fleet size's figures.
type result struct {
	agents                int
	rssBefore, rssAfter   int64 // bytes
	gorBefore, gorAfter   float64
	heapBefore, heapAfter float64
	stackBefore           float64 // goroutine stacks in use, bytes
	stackAfter            float64
	simCPU                time.Duration // simulator CPU during the ramp
	connect, healthy      time.Duration
	handshakeAttempts     float64
	cpu                   time.Duration
	sweep                 []time.Duration
	storm, stormHealthy   []time.Duration
	stormAttempts         []float64
	gaveUp                int64
	coordinatorCrashed    bool
	simIdleCPU, coordIdle time.Duration // over the idle window
	idleWindow            time.Duration
	simRSS                int64
	plain                 *anchorResult // the plain TLS + yamux server, if measured
}

func benchCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	list := fs.String("agents", "1000,5000,10000", "comma-separated fleet sizes")
	out := fs.String("out", "bench-results/results.md", "markdown file the results table is written to; profiles go next to it")
	dir := fs.String("dir", filepath.Join(os.TempDir(), "tendril-bench"), "work folder: coordinator data, agents' homes, logs")
	serverBin := fs.String("server", "", "tendril-server binary (default: next to this binary)")
	hi := fs.Duration("health-interval", 10*time.Second, "coordinator --health-interval")
	idle := fs.Duration("idle", 5*time.Second, "idle time before memory is read")
	sweeps := fs.Int("sweeps", 3, "health sweeps to time per size (median)")
	storms := fs.Int("storms", 1, "reconnect storms per size (median)")
	timeout := fs.Duration("timeout", 3*time.Minute, "bound on each wait (ramp, sweeps, storm)")
	gcEnv := fs.String("gc-env", "", "comma-separated GOGC=/GOMEMLIMIT= settings for the coordinator and the anchor (default: none, the coordinator's own)")
	anchor := fs.Bool("anchor", true, "also measure a plain TLS 1.3 + yamux server's memory per idle session at each size (figure 1's anchor)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var sizes []int
	for _, s := range strings.Split(*list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("bench: --agents: bad size %q", s)
		}
		sizes = append(sizes, n)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if *serverBin == "" {
		*serverBin = filepath.Join(filepath.Dir(self), "tendril-server")
	}
	b := &bench{
		dir: *dir, data: filepath.Join(*dir, "data"), serverBin: *serverBin, selfBin: self,
		profiles: filepath.Dir(*out), profilePrefix: profilePrefix(*out), healthInterval: *hi, idle: *idle, timeout: *timeout,
		sweeps: *sweeps, storms: *storms, anchor: *anchor, log: os.Stderr,
	}
	for _, kv := range strings.Split(*gcEnv, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if k, _, ok := strings.Cut(kv, "="); !ok || (k != "GOGC" && k != "GOMEMLIMIT") {
			return fmt.Errorf("bench: --gc-env: %q is not GOGC=... or GOMEMLIMIT=...", kv)
		}
		b.gcEnv = append(b.gcEnv, kv)
	}
	if err := os.MkdirAll(b.profiles, 0o755); err != nil {
		return err
	}
	defer b.stopCoordinator(false)
	started := time.Now()
	results, err := b.run(ctx, sizes)
	table := renderTable(results)
	fmt.Println(table)
	doc := renderDoc(b, os.Args, results, table, time.Since(started))
	if werr := os.WriteFile(*out, []byte(doc), 0o644); werr != nil && err == nil {
		err = werr
	}
	fmt.Fprintf(os.Stderr, "results in %s (took %s)\n", *out, time.Since(started).Round(time.Second))
	return err
}

// profilePrefix is what the profiles written next to out start with.
func profilePrefix(out string) string {
	base := strings.TrimSuffix(filepath.Base(out), ".md")
	if base == "results" {
		return ""
	}
	return base + "-"
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "[%s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func (b *bench) run(ctx context.Context, sizes []int) ([]result, error) {
	// A fresh coordinator; the homes are kept (their keys) and registered
	// again with it.
	if err := os.RemoveAll(b.data); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, b.serverBin, "init", "--data", b.data).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("tendril-server init: %v: %s", err, out)
	}
	for _, p := range []*int{&b.agentPort, &b.httpPort, &b.pprofPort} {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		*p = port
	}
	maxN := slices.Max(sizes)
	if err := b.startCoordinator(ctx, "register"); err != nil {
		return nil, err
	}
	cl, err := b.client()
	if err != nil {
		return nil, err
	}
	t := time.Now()
	n, err := fleet.Prepare(ctx, fleet.Config{Dir: b.dir, Agents: maxN, Coordinator: b.agentAddr(), Admin: cl, RegisterConcurrency: 2 * runtime.NumCPU()})
	if err != nil {
		return nil, err
	}
	b.logf("registered %d agents in %s (one-time setup)", n, time.Since(t).Round(time.Millisecond))
	b.stopCoordinator(true)

	var results []result
	for _, n := range sizes {
		r, err := b.runSize(ctx, n, n == maxN)
		results = append(results, r)
		if err != nil {
			return results, fmt.Errorf("%d agents: %w", n, err)
		}
	}
	return results, nil
}

func (b *bench) runSize(ctx context.Context, n int, profile bool) (r result, err error) {
	r.agents = n
	b.logf("== %d agents", n)
	if b.anchor {
		// Before the coordinator starts, so neither loads the other.
		a, err := b.measureAnchor(ctx, n)
		if err != nil {
			return r, fmt.Errorf("anchor: %w", err)
		}
		r.plain = &a
	}
	if err := b.startCoordinator(ctx, fmt.Sprintf("%d", n)); err != nil {
		return r, err
	}
	defer b.stopCoordinator(true)
	time.Sleep(2 * time.Second)
	m, err := b.metrics(ctx)
	if err != nil {
		return r, err
	}
	r.rssBefore, _ = rss(b.coord.pid())
	r.gorBefore, r.heapBefore = m["go_goroutines"], m["go_memstats_heap_inuse_bytes"]
	r.stackBefore = m["go_memstats_stack_inuse_bytes"]
	cpu0, _ := cpuTime(b.coord.pid())

	// Figure 2: the connect ramp.
	statusPort, err := freePort()
	if err != nil {
		return r, err
	}
	statusAddr := fmt.Sprintf("127.0.0.1:%d", statusPort)
	simPprof, err := freePort()
	if err != nil {
		return r, err
	}
	sim, err := startProc(ctx, filepath.Join(b.dir, fmt.Sprintf("fleet-%d.log", n)), b.selfBin,
		[]string{fmt.Sprintf("TENDRIL_PPROF=127.0.0.1:%d", simPprof)},
		"run", "--agents", strconv.Itoa(n), "--coordinator", b.agentAddr(), "--data", b.data,
		"--dir", b.dir, "--status", statusAddr)
	if err != nil {
		return r, err
	}
	defer sim.stop(time.Minute)
	st, err := b.waitStats(ctx, sim, statusAddr)
	if err != nil {
		return r, err
	}
	t0 := time.Unix(0, st.StartedUnixNano)
	b.logf("simulator started %d agents", n)
	// The ramp's first 10 s, where a cold start spends its CPU: what a
	// first connection costs the coordinator (the storm's profile is of
	// agents it knew).
	var rampCPU chan struct{}
	if profile {
		rampCPU = make(chan struct{})
		go func() {
			defer close(rampCPU)
			var wg sync.WaitGroup
			wg.Go(func() {
				b.saveProfileOf(ctx, simPprof, "profile", fmt.Sprintf("simulator-cpu-ramp-%d.pprof", n), 10)
			})
			b.saveProfile(ctx, "profile", fmt.Sprintf("coordinator-cpu-ramp-%d.pprof", n), 10)
			wg.Wait()
		}()
	}
	if err := b.waitConnected(ctx, n); err != nil {
		return r, fmt.Errorf("connect ramp: %w", err)
	}
	r.connect = time.Since(t0)
	if err := b.waitHealthy(ctx, n); err != nil {
		return r, fmt.Errorf("connect ramp: %w", err)
	}
	r.healthy = time.Since(t0)
	if rampCPU != nil {
		<-rampCPU
	}
	cpu1, _ := cpuTime(b.coord.pid())
	r.cpu = cpu1 - cpu0
	r.simCPU, _ = cpuTime(sim.pid())
	if m, err = b.metrics(ctx); err != nil {
		return r, err
	}
	r.handshakeAttempts = sumPrefix(m, "tendril_handshakes_total")
	b.logf("connected in %s, healthy in %s, coordinator CPU %s, connection attempts %s",
		r.connect, r.healthy, r.cpu, outcomes(m, "tendril_handshakes_total"))

	// Figure 1: memory once idle.
	simCPU0, _ := cpuTime(sim.pid())
	coordCPU0, _ := cpuTime(b.coord.pid())
	idleStart := time.Now()
	time.Sleep(b.idle)
	if m, err = b.metrics(ctx); err != nil {
		return r, err
	}
	r.rssAfter, _ = rss(b.coord.pid())
	r.simRSS, _ = rss(sim.pid())
	r.gorAfter, r.heapAfter = m["go_goroutines"], m["go_memstats_heap_inuse_bytes"]
	r.stackAfter = m["go_memstats_stack_inuse_bytes"]
	simCPU1, _ := cpuTime(sim.pid())
	coordCPU1, _ := cpuTime(b.coord.pid())
	r.idleWindow = time.Since(idleStart)
	r.simIdleCPU, r.coordIdle = simCPU1-simCPU0, coordCPU1-coordCPU0
	if profile {
		b.saveProfile(ctx, "heap", fmt.Sprintf("coordinator-heap-%d.pprof", n), 0)
		b.saveProfile(ctx, "goroutine", fmt.Sprintf("coordinator-goroutine-%d.pprof", n), 0)
	}

	// Figure 3: periodic health sweeps covering the whole fleet.
	var cpuProf chan struct{}
	if profile {
		cpuProf = make(chan struct{})
		secs := int((b.healthInterval*time.Duration(b.sweeps) + time.Second).Seconds())
		go func() {
			defer close(cpuProf)
			b.saveProfile(ctx, "profile", fmt.Sprintf("coordinator-cpu-sweeps-%d.pprof", n), secs)
		}()
	}
	r.sweep, err = b.timeSweeps(ctx, n)
	if cpuProf != nil {
		<-cpuProf
	}
	if err != nil {
		return r, fmt.Errorf("health sweep: %w", err)
	}
	b.logf("sweeps %v", r.sweep)

	// Figure 4: the reconnect storm.
	for i := range b.storms {
		before, err := sim.statsAt(ctx, statusAddr)
		if err != nil {
			return r, err
		}
		b.coord.kill()
		t0 := time.Now()
		if err := b.startCoordinator(ctx, fmt.Sprintf("%d-storm%d", n, i+1)); err != nil {
			return r, err
		}
		var stormCPU chan struct{}
		if profile && i == 0 {
			stormCPU = make(chan struct{})
			go func() {
				defer close(stormCPU)
				b.saveProfile(ctx, "profile", fmt.Sprintf("coordinator-cpu-storm-%d.pprof", n), 10)
			}()
		}
		if err := b.waitConnected(ctx, n); err != nil {
			return r, fmt.Errorf("reconnect storm: %w", err)
		}
		r.storm = append(r.storm, time.Since(t0))
		if err := b.waitHealthy(ctx, n); err != nil {
			return r, fmt.Errorf("reconnect storm: %w", err)
		}
		r.stormHealthy = append(r.stormHealthy, time.Since(t0))
		if stormCPU != nil {
			<-stormCPU
		}
		m, err := b.metrics(ctx)
		if err != nil {
			return r, err
		}
		r.stormAttempts = append(r.stormAttempts, sumPrefix(m, "tendril_handshakes_total"))
		b.logf("storm %d: connection attempts %s", i+1, outcomes(m, "tendril_handshakes_total"))
		after, err := sim.statsAt(ctx, statusAddr)
		if err != nil {
			return r, err
		}
		r.gaveUp = after.Exited + int64(after.Agents-after.Running)
		b.logf("storm %d: connected in %s, healthy in %s, %v connection attempts, %d new sessions, %d gave up",
			i+1, r.storm[i], r.stormHealthy[i], r.stormAttempts[i], after.Sessions-before.Sessions, r.gaveUp)
	}
	r.coordinatorCrashed = b.coord.exited()
	return r, nil
}

// timeSweeps waits for b.sweeps periodic sweeps that checked all n agents
// and returns their durations.
func (b *bench) timeSweeps(ctx context.Context, n int) ([]time.Duration, error) {
	m, err := b.metrics(ctx)
	if err != nil {
		return nil, err
	}
	last := m["tendril_health_sweeps_total"]
	deadline := time.Now().Add(b.timeout)
	var out []time.Duration
	for len(out) < b.sweeps {
		if time.Now().After(deadline) {
			return out, fmt.Errorf("only %d full sweeps within %s", len(out), b.timeout)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return out, err
		}
		m, err := b.metrics(ctx)
		if err != nil {
			return out, err
		}
		if c := m["tendril_health_sweeps_total"]; c > last {
			last = c
			if int(m["tendril_health_sweep_agents"]) == n {
				out = append(out, time.Duration(m["tendril_health_sweep_seconds"]*float64(time.Second)))
			}
		}
	}
	return out, nil
}

func (b *bench) agentAddr() string { return fmt.Sprintf("127.0.0.1:%d", b.agentPort) }
func (b *bench) httpURL() string   { return fmt.Sprintf("http://127.0.0.1:%d", b.httpPort) }

func (b *bench) client() (*client.Client, error) {
	key, err := client.DataDirKey(b.data)
	if err != nil {
		return nil, err
	}
	return client.New(b.httpURL(), key, nil)
}

// startCoordinator runs tendril-server with the benchmark's flags and
// any extra ones, and waits until it answers.
func (b *bench) startCoordinator(ctx context.Context, tag string, extra ...string) error {
	env := append([]string{fmt.Sprintf("TENDRIL_PPROF=127.0.0.1:%d", b.pprofPort)}, b.gcEnv...)
	args := append([]string{"run", "--data", b.data, "--listen", b.agentAddr(), "--http", fmt.Sprintf("127.0.0.1:%d", b.httpPort),
		"--health-interval", b.healthInterval.String(), "--log-level", "warn"}, extra...)
	p, err := startProc(ctx, filepath.Join(b.dir, "coordinator-"+tag+".log"), b.serverBin, env, args...)
	if err != nil {
		return err
	}
	b.coord = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(b.httpURL() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("coordinator exited at start; see %s", p.logPath)
		}
		if time.Now().After(deadline) {
			return errors.New("coordinator did not answer /healthz within 30s")
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

func (b *bench) stopCoordinator(graceful bool) {
	if b.coord == nil {
		return
	}
	if graceful {
		b.coord.stop(30 * time.Second)
	} else {
		b.coord.kill()
	}
	b.coord = nil
}

// metrics reads the coordinator's /metrics: unlabelled samples by name,
// labelled ones by name{labels}.
func (b *bench) metrics(ctx context.Context) (map[string]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", b.httpURL()+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read coordinator metrics: %w", err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}

// outcomes lists the series of a counter with its labels, "{outcome="ok"} 3 ...", in
// order, for the log: what each attempt came to.
func outcomes(m map[string]float64, prefix string) string {
	var keys []string
	for k := range m {
		if strings.HasPrefix(k, prefix+"{") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s %.0f", strings.TrimPrefix(k, prefix), m[k])
	}
	return strings.TrimSpace(b.String())
}

func sumPrefix(m map[string]float64, prefix string) float64 {
	var s float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix+"{") {
			s += v
		}
	}
	return s
}

func (b *bench) waitConnected(ctx context.Context, n int) error {
	start := time.Now()
	deadline := start.Add(b.timeout)
	next := start.Add(time.Second)
	for {
		m, err := b.metrics(ctx)
		if err == nil && int(m["tendril_agents_connected"]) >= n {
			return nil
		}
		if err == nil && time.Now().After(next) {
			// The ramp's shape in the log: how fast the gate admits, and
			// how many attempts it turns away on the way.
			next = next.Add(time.Second)
			b.logf("  %4.0f s: %5.0f connected; attempts %s", time.Since(start).Seconds(), m["tendril_agents_connected"], outcomes(m, "tendril_handshakes_total"))
		}
		if b.coord.exited() {
			return errors.New("the coordinator exited")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%v of %d agents connected after %s", m["tendril_agents_connected"], n, b.timeout)
		}
		// Every 200 ms: a scrape costs the coordinator CPU (at 50 ms,
		// 5% of it in the ramp), and the figure is seconds.
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitHealthy waits until the agents listing shows the first n fleet
// agents connected and healthy.
func (b *bench) waitHealthy(ctx context.Context, n int) error {
	cl, err := b.client()
	if err != nil {
		return err
	}
	want := make(map[string]bool, n)
	for i := range n {
		want[fleet.Name(i)] = true
	}
	deadline := time.Now().Add(b.timeout)
	for {
		agents, err := cl.Agents(ctx)
		ok := 0
		for _, a := range agents {
			if want[a.Name] && a.Connected && a.Health == "healthy" {
				ok++
			}
		}
		if err == nil && ok == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents listed connected and healthy after %s (%v)", ok, n, b.timeout, err)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

func (b *bench) saveProfile(ctx context.Context, kind, name string, seconds int) {
	b.saveProfileOf(ctx, b.pprofPort, kind, name, seconds)
}

// saveProfileOf saves a profile of the process serving them on port.
func (b *bench) saveProfileOf(ctx context.Context, port int, kind, name string, seconds int) {
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/%s", port, kind)
	if seconds > 0 {
		url += "?seconds=" + strconv.Itoa(seconds)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.logf("profile %s: %v", name, err)
		return
	}
	defer resp.Body.Close()
	path := filepath.Join(b.profiles, b.profilePrefix+name)
	f, err := os.Create(path)
	if err != nil {
		b.logf("profile %s: %v", name, err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		b.logf("profile %s: %v", name, err)
		return
	}
	b.logf("saved %s", path)
}

func (b *bench) waitStats(ctx context.Context, sim *proc, addr string) (fleet.Stats, error) {
	deadline := time.Now().Add(b.timeout)
	for {
		st, err := sim.statsAt(ctx, addr)
		if err == nil {
			return st, nil
		}
		if sim.exited() {
			return st, fmt.Errorf("the simulator exited; see %s", sim.logPath)
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("the simulator did not start within %s", b.timeout)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return st, err
		}
	}
}

// proc is a child process whose output goes to a log file.
type proc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

func startProc(ctx context.Context, logPath, bin string, env []string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &proc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop asks the process to stop, then kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

func (p *proc) statsAt(ctx context.Context, addr string) (fleet.Stats, error) {
	var st fleet.Stats
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/stats", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// rss is a process's resident set (VmRSS) in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// cpuTime is a process's user plus system CPU time (/proc/PID/stat).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	const hz = 100                           // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}
