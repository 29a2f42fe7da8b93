package main

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/semver"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/fleet"
	"github.com/tendrildeploy/tendril/internal/proxyrun"
	"github.com/tendrildeploy/tendril/protocol"
)

const (
	// benchAgent is the real agent of the one-agent figures, enrolled in
	// benchEnvironment so that no fleet update ever targets it.
	benchAgent       = "bench-agent"
	benchEnvironment = "Bench"
	// benchMajor is the major version of the bandwidth bundles: above any
	// real Calamari, so each is the latest when pushed (an update pushes
	// the latest), and recognisable as the benchmark's own.
	benchMajor = 1000
	// pollEvery is how often the agents' folders are looked at to time
	// when bytes land and when a version is installed.
	pollEvery      = time.Millisecond
	fleetPollEvery = 10 * time.Millisecond
	// coordinatorHealthInterval keeps periodic health sweeps (which
	// re-verify every installed bundle, and start automatic pushes) out of
	// the timed windows; each session still gets its check on connect.
	coordinatorHealthInterval = time.Hour
)

// transferBench measures figures 5 and 6 of BENCHMARKS.md.
type transferBench struct {
	dir                          string
	serverBin, agentBin, selfBin string
	calamari                     string // a real Calamari bundle, for the tasks
	runs, rttRuns                int
	bundleSize, fleetBundleSize  int64 // random payload in each bundle
	sizes                        []int
	vias                         []string // proxies the one-agent figures are also measured through
	timeout                      time.Duration
	log                          io.Writer
	profiles                     string // folder of the coordinator heap profiles
}

// transferResults are everything bench-transfer measured.
type transferResults struct {
	// direct is the one-agent figures (5 and 6) of the agent that dials
	// the coordinator's agent port.
	direct roadTimes
	// vias is the same figures, measured in the same runs, of an agent
	// that reaches the coordinator through each proxy of --via.
	vias []*viaResult
	// Figure 5, one agent.
	bundleBytes           int64
	scp, tls              []time.Duration
	tlsVersion, tlsCipher string
	compareOrders         []string
	// Figure 5, many agents.
	fleetBundleBytes int64
	fleet            []fleetPush
	// Figure 6.
	taskCalamari string
	ssh          []time.Duration
	// sshShell is ssh whose remote bash reads ~/.bashrc (see sshServer).
	sshShell                []time.Duration
	sshFirst, sshShellFirst time.Duration
	sshVersion              string
	loadBefore              string
	loadAfter               string
	busyBefore              string
}

// roadTimes are the one-agent figures of one agent, by the road its
// session takes to the coordinator.
type roadTimes struct {
	// Figure 5: Success.txt in place, every byte in the partial file, the
	// update call returned.
	push, pushLanded, pushAPI []time.Duration
	// The agent process's CPU (user+sys, /proc/PID/stat) during each
	// timed push, from the update call to its return.
	pushCPU []time.Duration
	// Figure 6, and the first round trip, not counted.
	task      []time.Duration
	taskFirst time.Duration
	// The task's own timestamps (coordinator clock): created to started
	// (includes the Calamari check), started to finished.
	taskToStart, taskRun []time.Duration
}

// viaResult is the one-agent figures of an agent registered through a
// proxy (see viaNames).
type viaResult struct {
	via     string // a key of viaNames
	version string // the proxy program's, as it reports it
	roadTimes
	// sessions is the connections the proxy logged for the agent (CONNECT
	// requests, or WebSocket upgrades ended): its registration and one
	// session if it never reconnected, proof that the figures went
	// through the proxy and that no timed push met a reconnect.
	sessions int
}

// viaNames are the proxies --via takes, and how the report names them.
var viaNames = map[string]string{
	"tinyproxy": "through tinyproxy (HTTP CONNECT, Basic auth)",
	"nginx":     "through nginx (WebSocket, wss)",
}

// viaOrder is the order the proxies are measured and reported in.
var viaOrder = []string{"tinyproxy", "nginx"}

// fleetPush is one push of a bundle to every agent of a simulated fleet.
type fleetPush struct {
	agents             int
	version            string
	installed, api     time.Duration
	rssBefore, peak    int64
	rssAfter           int64
	heapBefore         float64 // Go heap in use, from /metrics
	heapAfter          float64
	profile            string // heap profile taken after the push
	peakSinceStart     bool   // the peak could not be reset before the push
	coordCPU, simCPU   time.Duration
	installedCount     int
	coordinatorCrashed bool
}

func transferCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench-transfer", flag.ContinueOnError)
	out := fs.String("out", "bench-results/transfer.md", "markdown file the results are written to")
	dir := fs.String("dir", filepath.Join(os.TempDir(), "tendril-bench-transfer"), "work folder (removed at the start and at the end)")
	runs := fs.Int("runs", 5, "pushes of the big bundle to one agent (each compared with scp and raw TLS); times are medians")
	rttRuns := fs.Int("rtt-runs", 50, "task round trips and ssh round trips; times are medians")
	bundleMiB := fs.Int("bundle-mib", 100, "random payload of the one-agent bundle, MiB")
	fleetMiB := fs.Int("fleet-mib", 20, "random payload of the fleet bundle, MiB")
	agentsList := fs.String("agents", "100,500", "fleet sizes the fleet bundle is pushed to (0 skips)")
	viaList := fs.String("via", strings.Join(viaOrder, ","), "proxies the one-agent push and round trip are also measured through: tinyproxy, nginx, or none")
	serverBin := fs.String("server", "", "tendril-server binary (default: next to this binary)")
	agentBin := fs.String("agent", "", "tendril-agent binary (default: next to this binary)")
	calamari := fs.String("calamari", "", "Calamari bundle the tasks run (default: the newest dist/calamari-*.tar.gz, as make build makes)")
	keep := fs.Bool("keep", false, "keep the work folder (agents' homes, logs) at the end")
	timeout := fs.Duration("timeout", 3*time.Minute, "bound on each wait")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runs < 1 || *rttRuns < 1 || *bundleMiB < 1 || *fleetMiB < 1 {
		return errors.New("bench-transfer: --runs, --rtt-runs, --bundle-mib and --fleet-mib must be at least 1")
	}
	sizes, err := parseSizes(*agentsList)
	if err != nil {
		return fmt.Errorf("bench-transfer: --agents: %w", err)
	}
	vias, err := parseVias(*viaList)
	if err != nil {
		return fmt.Errorf("bench-transfer: --via: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, p := range []*string{serverBin, agentBin} {
		if *p == "" {
			name := "tendril-server"
			if p == agentBin {
				name = "tendril-agent"
			}
			*p = filepath.Join(filepath.Dir(self), name)
		}
	}
	if *calamari == "" {
		if *calamari, err = findCalamariBundle(self); err != nil {
			return err
		}
	}
	t := &transferBench{
		dir: *dir, serverBin: *serverBin, agentBin: *agentBin, selfBin: self, calamari: *calamari,
		runs: *runs, rttRuns: *rttRuns, bundleSize: int64(*bundleMiB) << 20, fleetBundleSize: int64(*fleetMiB) << 20,
		sizes: sizes, vias: vias, timeout: *timeout, log: os.Stderr, profiles: filepath.Dir(*out),
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	started := time.Now()
	r, err := t.run(ctx)
	if !*keep {
		if rerr := os.RemoveAll(t.dir); rerr != nil {
			t.logf("could not remove the work folder %s: %v", t.dir, rerr)
		}
	}
	table := renderTransferTable(t, r) + renderViaTable(r)
	fmt.Println(table)
	doc := renderTransferDoc(t, os.Args, r, table, time.Since(started), err)
	if werr := os.WriteFile(*out, []byte(doc), 0o644); werr != nil && err == nil {
		err = werr
	}
	fmt.Fprintf(os.Stderr, "results in %s (took %s)\n", *out, time.Since(started).Round(time.Second))
	return err
}

// parseSizes reads a comma-separated list of fleet sizes; "0" alone
// means none.
func parseSizes(list string) ([]int, error) {
	var sizes []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad size %q", s)
		}
		if n > 0 {
			sizes = append(sizes, n)
		}
	}
	return sizes, nil
}

// parseVias reads a comma-separated list of proxies (keys of viaNames),
// in viaOrder whatever the order given; "none" or nothing means none.
func parseVias(list string) ([]string, error) {
	want := map[string]bool{}
	for _, v := range strings.Split(list, ",") {
		v = strings.TrimSpace(v)
		switch {
		case v == "" || v == "none":
		case viaNames[v] != "":
			want[v] = true
		default:
			return nil, fmt.Errorf("unknown proxy %q (want %s, or none)", v, strings.Join(viaOrder, ", "))
		}
	}
	var vias []string
	for _, v := range viaOrder {
		if want[v] {
			vias = append(vias, v)
		}
	}
	return vias, nil
}

// findCalamariBundle picks the newest dist/calamari-*.tar.gz, looked for
// beside the folder of this binary (bin/../dist) and in the current one.
func findCalamariBundle(self string) (string, error) {
	var newest string
	var newestTime time.Time
	for _, d := range []string{filepath.Join(filepath.Dir(self), "..", "dist"), "dist"} {
		matches, _ := filepath.Glob(filepath.Join(d, "calamari-*.tar.gz"))
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.ModTime().After(newestTime) {
				newest, newestTime = m, st.ModTime()
			}
		}
	}
	if newest == "" {
		return "", errors.New("bench-transfer: no dist/calamari-*.tar.gz found; run make build or give --calamari FILE")
	}
	return newest, nil
}

func (t *transferBench) logf(format string, args ...any) {
	fmt.Fprintf(t.log, "[%s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func (t *transferBench) run(ctx context.Context) (*transferResults, error) {
	r := &transferResults{loadBefore: loadAvg()}
	defer func() { r.loadAfter = loadAvg() }()
	// Before anything of the benchmark runs: how busy others keep the
	// machine.
	r.busyBefore = machineBusy(ctx, 2*time.Second)
	if err := os.RemoveAll(t.dir); err != nil {
		return r, err
	}
	if err := os.MkdirAll(t.dir, 0o755); err != nil {
		return r, err
	}
	ssh, err := startSSHD(ctx, filepath.Join(t.dir, "sshd"))
	if err != nil {
		return r, err
	}
	defer ssh.stop()
	defer ssh.stopMasters(context.WithoutCancel(ctx))
	r.sshVersion = sshVersion()
	t.logf("sshd (%s) listening on 127.0.0.1:%d", r.sshVersion, ssh.port)

	if err := t.oneAgent(ctx, ssh, r); err != nil {
		return r, err
	}
	if len(t.sizes) > 0 {
		if err := t.fleetPushes(ctx, r); err != nil {
			return r, err
		}
	}
	return r, nil
}

// newBench is a coordinator of its own under dir/name, with the bench
// helpers of bench.go.
func (t *transferBench) newBench(ctx context.Context, name string) (*bench, error) {
	dir := filepath.Join(t.dir, name)
	b := &bench{dir: dir, data: filepath.Join(dir, "data"), serverBin: t.serverBin, selfBin: t.selfBin,
		healthInterval: coordinatorHealthInterval, timeout: t.timeout, log: t.log, profiles: t.profiles}
	if err := os.MkdirAll(dir, 0o755); err != nil {
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
	return b, nil
}

// oneAgentRoad is a real tendril-agent process of the one-agent figures,
// and the road its session takes to the coordinator.
type oneAgentRoad struct {
	name, home string
	proc       *proc
	times      *roadTimes
	// pprofPort, if not 0, is where the agent serves its profiles
	// (TENDRIL_PPROF): a CPU profile is taken during each timed push.
	pprofPort int
	// For an agent registered through a proxy: which, its results, the
	// proxy, and how many connections for the agent the proxy logged.
	via      string
	res      *viaResult
	proxy    runningProxy
	sessions func() int
}

// runningProxy is what the benchmark needs of a proxy of
// internal/proxyrun.
type runningProxy interface {
	Close() error
	Exited() bool
	Log() string
}

// label names the road in logs and the report's step orders.
func (a *oneAgentRoad) label() string {
	if a.via == "" {
		return "direct"
	}
	return "through " + a.via
}

// stop stops the agent, then its proxy; a second call does nothing.
func (a *oneAgentRoad) stop() {
	if a.proc != nil {
		a.proc.stop(30 * time.Second)
	}
	if a.proxy != nil {
		a.proxy.Close()
	}
}

// oneAgent measures the one-agent figures against real tendril-agent
// processes: the task round trip (figure 6) first, with the real Calamari
// bundle, then the pushes of the big bundle (figure 5). Besides the agent
// that dials the coordinator's agent port, one agent per proxy of --via
// reaches the same coordinator only through that proxy; their figures are
// taken in the same runs, interleaved with the direct agent's, so that a
// change in the machine's load hits all alike.
func (t *transferBench) oneAgent(ctx context.Context, ssh *sshServer, r *transferResults) error {
	b, err := t.newBench(ctx, "one")
	if err != nil {
		return err
	}
	if err := b.startCoordinator(ctx, "one"); err != nil {
		return err
	}
	defer b.stopCoordinator(true)
	cl, err := b.client()
	if err != nil {
		return err
	}
	direct := &oneAgentRoad{name: benchAgent, home: filepath.Join(b.dir, "agent"), times: &r.direct}
	if direct.pprofPort, err = freePort(); err != nil {
		return err
	}
	if err := t.startAgent(ctx, b, cl, direct, "agent.log", nil); err != nil {
		return err
	}
	defer direct.stop()
	roads := []*oneAgentRoad{direct}
	for _, via := range t.vias {
		a, err := t.startVia(ctx, b, cl, via)
		if errors.Is(err, proxyrun.ErrNotInstalled) {
			return fmt.Errorf("agent through %s: %w; scripts/bench-deps.sh installs it, --via none measures direct only", via, err)
		}
		if err != nil {
			return fmt.Errorf("agent through %s: %w", via, err)
		}
		defer a.stop()
		r.vias = append(r.vias, a.res)
		roads = append(roads, a)
	}
	for _, a := range roads {
		if err := t.waitAgent(ctx, cl, a); err != nil {
			return err
		}
		t.logf("agent %s (%s) connected and healthy", a.name, a.label())
	}

	if err := t.roundTrips(ctx, cl, ssh, roads, r); err != nil {
		return fmt.Errorf("task round trip: %w", err)
	}
	if err := t.pushes(ctx, b, cl, ssh, roads, r); err != nil {
		return fmt.Errorf("push to one agent: %w", err)
	}
	for _, a := range roads {
		if a.proc.exited() {
			return fmt.Errorf("the agent %s exited; see %s", a.name, a.proc.logPath)
		}
		if a.proxy != nil && a.proxy.Exited() {
			return fmt.Errorf("%s exited during the benchmark:\n%s", a.via, a.proxy.Log())
		}
	}
	for _, a := range roads[1:] {
		// nginx logs a WebSocket when it ends: stop the agent first.
		a.proc.stop(30 * time.Second)
		a.res.sessions = waitCount(ctx, a.sessions, viaSessions, 5*time.Second)
		t.logf("%s logged %d connections of %s (registration and sessions)", a.via, a.res.sessions, a.name)
	}
	return nil
}

// viaSessions is the connections a proxy carries for an agent that never
// reconnected: its registration and its one session.
const viaSessions = 2

// waitCount polls count until it reaches want or within has passed, and
// returns its last value.
func waitCount(ctx context.Context, count func() int, want int, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		n := count()
		if n >= want || time.Now().After(deadline) || sleep(ctx, 20*time.Millisecond) != nil {
			return n
		}
	}
}

// startVia starts the proxy via in b's folder and a real agent that
// reaches b's coordinator only through it, registered as README's "How
// agents connect" says: with --proxy and credentials for tinyproxy, with
// a wss:// --server, the coordinator's thumbprint and a token for nginx
// (which passes the WebSocket to the coordinator's HTTP listener).
func (t *transferBench) startVia(ctx context.Context, b *bench, cl *client.Client, via string) (*oneAgentRoad, error) {
	a := &oneAgentRoad{name: benchAgent + "-" + via, home: filepath.Join(b.dir, "agent-"+via), via: via, res: &viaResult{via: via}}
	a.times = &a.res.roadTimes
	var register func(join string) ([]string, error)
	switch via {
	case "tinyproxy":
		var pw [12]byte
		crand.Read(pw[:])
		user, password := "bench", hex.EncodeToString(pw[:])
		p, err := proxyrun.StartTinyproxy(ctx, filepath.Join(b.dir, "tinyproxy"), proxyrun.TinyproxyOptions{User: user, Password: password})
		if err != nil {
			return nil, err
		}
		a.proxy, a.res.version = p, programVersion("tinyproxy", "-v")
		a.sessions = func() int { return p.Tunnels(b.agentAddr()) }
		register = func(join string) ([]string, error) {
			return []string{"--join", join, "--proxy", "http://" + user + ":" + password + "@" + p.Addr}, nil
		}
	case "nginx":
		p, err := proxyrun.StartNginx(ctx, filepath.Join(b.dir, "nginx"), fmt.Sprintf("127.0.0.1:%d", b.httpPort), protocol.WebSocketPath)
		if err != nil {
			return nil, err
		}
		a.proxy, a.res.version = p, strings.TrimPrefix(programVersion("nginx", "-v"), "nginx version: ")
		a.sessions = p.Upgrades
		register = func(join string) ([]string, error) {
			j, err := protocol.ParseJoin(join)
			if err != nil {
				return nil, err
			}
			return []string{"--server", "wss://" + p.Addr + protocol.WebSocketPath, "--server-thumbprint", j.Thumbprint, "--token", j.Token}, nil
		}
	default:
		return nil, fmt.Errorf("unknown proxy %q", via)
	}
	t.logf("%s (%s) listening", via, a.res.version)
	if err := t.startAgent(ctx, b, cl, a, "agent-"+via+".log", register); err != nil {
		a.stop()
		return nil, err
	}
	return a, nil
}

// startAgent enrols a real tendril-agent with a token from the API and
// runs it. register, if set, turns the token's join string into the
// register arguments that name the coordinator (default: --join).
func (t *transferBench) startAgent(ctx context.Context, b *bench, cl *client.Client, a *oneAgentRoad, logName string, register func(join string) ([]string, error)) error {
	tok, err := cl.CreateToken(ctx, api.TokenRequest{Environment: benchEnvironment, TTL: "10m", Servers: []string{b.agentAddr()}})
	if err != nil {
		return err
	}
	where := []string{"--join", tok.Join}
	if register != nil {
		if where, err = register(tok.Join); err != nil {
			return err
		}
	}
	args := append(append([]string{"register", "--home", a.home}, where...), "--name", a.name)
	if out, err := exec.CommandContext(ctx, t.agentBin, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("tendril-agent register %s: %v: %s", a.name, err, out)
	}
	var env []string
	if a.pprofPort != 0 {
		env = append(env, fmt.Sprintf("TENDRIL_PPROF=127.0.0.1:%d", a.pprofPort))
	}
	a.proc, err = startProc(ctx, filepath.Join(b.dir, logName), t.agentBin, env, "run", "--home", a.home)
	return err
}

func (t *transferBench) waitAgent(ctx context.Context, cl *client.Client, a *oneAgentRoad) error {
	deadline := time.Now().Add(t.timeout)
	for {
		v, err := cl.Agent(ctx, a.name)
		if err == nil && v.Connected && v.Health == "healthy" {
			return nil
		}
		if a.proc.exited() {
			return fmt.Errorf("the agent %s exited; see %s", a.name, a.proc.logPath)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent %s not connected and healthy after %s (%+v, %v)", a.name, t.timeout, v, err)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// roundTrips times figure 6: `run-script --inline true` through the API
// on each agent and `ssh ... true` over a held multiplexed connection
// (with each client key, see sshServer), in turn, so that a change in the
// machine's load hits all alike. The first of each is not counted: the
// ssh ones set up the master connections, the task ones are each agent's
// first Calamari run.
func (t *transferBench) roundTrips(ctx context.Context, cl *client.Client, ssh *sshServer, roads []*oneAgentRoad, r *transferResults) error {
	bv, err := uploadBundle(ctx, cl, t.calamari)
	if err != nil {
		return err
	}
	if semver.Compare("v"+bv.Version, fmt.Sprintf("v%d.0.0", benchMajor)) >= 0 {
		return fmt.Errorf("Calamari %s from %s is not below the benchmark's bundles (%d.x)", bv.Version, t.calamari, benchMajor)
	}
	r.taskCalamari = bv.Version
	for _, a := range roads {
		res, err := cl.UpdateCalamari(ctx, api.UpdateTarget{Agent: a.name})
		if err != nil {
			return fmt.Errorf("install Calamari %s on %s: %w", bv.Version, a.name, err)
		}
		if len(res) != 1 || res[0].Result == "failed" {
			return fmt.Errorf("install Calamari %s on %s: %+v", bv.Version, a.name, res)
		}
	}
	t.logf("Calamari %s installed on %d agents; timing %d round trips each", bv.Version, len(roads), t.rttRuns)
	for i := -1; i < t.rttRuns; i++ {
		for _, a := range roads {
			req := api.TaskRequest{Agent: a.name, Args: []string{"run-script", "--inline", "true"}, Calamari: bv.Version}
			d, end, err := taskRoundTrip(ctx, cl, req, t.timeout)
			if err != nil {
				return fmt.Errorf("%s: %w", a.name, err)
			}
			if i < 0 {
				a.times.taskFirst = d
				continue
			}
			a.times.task = append(a.times.task, d)
			if end.StartedAt != nil && end.FinishedAt != nil {
				a.times.taskToStart = append(a.times.taskToStart, end.StartedAt.Sub(end.CreatedAt))
				a.times.taskRun = append(a.times.taskRun, end.FinishedAt.Sub(*end.StartedAt))
			}
		}
		s, err := timeCmd(ctx, "ssh", ssh.sshTrueArgs(ssh.cleanKey)...)
		if err != nil {
			return err
		}
		sh, err := timeCmd(ctx, "ssh", ssh.sshTrueArgs(ssh.shellKey)...)
		if err != nil {
			return err
		}
		if i < 0 {
			r.sshFirst, r.sshShellFirst = s, sh
			continue
		}
		r.ssh, r.sshShell = append(r.ssh, s), append(r.sshShell, sh)
	}
	var tasks []string
	for _, a := range roads {
		tasks = append(tasks, fmt.Sprintf("%s %s", a.label(), median(a.times.task)))
	}
	t.logf("task round trip medians: %s; ssh median %s (reading ~/.bashrc: %s)", strings.Join(tasks, ", "), median(r.ssh), median(r.sshShell))
	return nil
}

// taskRoundTrip creates the task and follows its log until the final
// state arrives: what `tendril-server task run` does.
func taskRoundTrip(ctx context.Context, cl *client.Client, req api.TaskRequest, timeout time.Duration) (time.Duration, api.TaskView, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	tasks, err := cl.CreateTasks(ctx, req)
	if err != nil {
		return 0, api.TaskView{}, err
	}
	if len(tasks) != 1 {
		return 0, api.TaskView{}, fmt.Errorf("create task: got %d tasks, want 1", len(tasks))
	}
	var from int64 = 1
	for {
		end, ended, err := cl.FollowTaskLog(ctx, tasks[0].ID, from, true, func(l api.LogLineView) error {
			from = l.Seq + 1
			return nil
		})
		if err != nil {
			return 0, end, err
		}
		if !ended {
			continue // the stream broke; resume after the last line
		}
		took := time.Since(start)
		if end.State != api.TaskSucceeded || end.ExitCode != 0 {
			return took, end, fmt.Errorf("task %s ended %s with exit code %d: %s", end.ID, end.State, end.ExitCode, end.Error)
		}
		return took, end, nil
	}
}

func uploadBundle(ctx context.Context, cl *client.Client, path string) (api.BundleView, error) {
	f, err := os.Open(path)
	if err != nil {
		return api.BundleView{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return api.BundleView{}, err
	}
	return cl.UploadCalamari(ctx, f, st.Size())
}

// pushes times figure 5 for one agent: per run a new version of the big
// bundle is packed and uploaded (not timed), then pushed to the agent,
// copied with scp to the local sshd, sent over raw TLS, and pushed to
// each agent behind a proxy: the same bytes each way. The order rotates
// from run to run, so that none always runs right after another's disk
// writes.
func (t *transferBench) pushes(ctx context.Context, b *bench, cl *client.Client, ssh *sshServer, roads []*oneAgentRoad, r *transferResults) error {
	src := filepath.Join(b.dir, "payload")
	if err := writePayload(src, t.bundleSize); err != nil {
		return err
	}
	scpDir := filepath.Join(b.dir, "scp-received")
	if err := os.MkdirAll(scpDir, 0o755); err != nil {
		return err
	}
	for i := range t.runs {
		v := fmt.Sprintf("%d.0.%d", benchMajor, i+1)
		file := filepath.Join(b.dir, "calamari-"+v+".tar.gz")
		size, err := packBundle(ctx, src, v, file)
		if err != nil {
			return err
		}
		r.bundleBytes = size
		bv, err := uploadBundle(ctx, cl, file)
		if err != nil {
			return err
		}
		type step struct {
			name string
			run  func() error
		}
		push := func(a *oneAgentRoad) step {
			name := "push"
			if a.via != "" {
				name += " " + a.label()
			}
			return step{name, func() error {
				p, err := t.timePush(ctx, cl, b, a, bv)
				if err != nil {
					return err
				}
				a.times.push, a.times.pushAPI = append(a.times.push, p.installed), append(a.times.pushAPI, p.api)
				if p.cpu > 0 {
					a.times.pushCPU = append(a.times.pushCPU, p.cpu)
				}
				if p.landed > 0 {
					a.times.pushLanded = append(a.times.pushLanded, p.landed)
				}
				return nil
			}}
		}
		steps := []step{
			push(roads[0]),
			{"scp", func() error {
				dst := filepath.Join(scpDir, filepath.Base(file))
				d, err := timeCmd(ctx, "scp", ssh.scpArgs(file, dst)...)
				if err != nil {
					return err
				}
				st, err := os.Stat(dst)
				if err != nil || st.Size() != size {
					return fmt.Errorf("scp: the copy is not %d bytes (%v)", size, err)
				}
				r.scp = append(r.scp, d)
				return os.Remove(dst)
			}},
			{"raw TLS", func() error {
				data, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				rt, err := measureRawTLS(ctx, data)
				if err != nil {
					return err
				}
				r.tls = append(r.tls, rt.took)
				r.tlsVersion, r.tlsCipher = protocol.TLSVersionName(rt.version), tls.CipherSuiteName(rt.cipher)
				return nil
			}},
		}
		for _, a := range roads[1:] {
			steps = append(steps, push(a))
		}
		var order []string
		for k := range steps {
			s := steps[(i+k)%len(steps)]
			if err := s.run(); err != nil {
				return fmt.Errorf("run %d, %s: %w", i+1, s.name, err)
			}
			order = append(order, s.name)
		}
		r.compareOrders = append(r.compareOrders, strings.Join(order, ", "))
		var vias []string
		for _, a := range roads[1:] {
			vias = append(vias, fmt.Sprintf("; %s: push %s (bytes landed %s, API %s)", a.label(), last(a.times.push), last(a.times.pushLanded), last(a.times.pushAPI)))
		}
		t.logf("run %d/%d (%s, %d bytes): push %s (bytes landed %s, API %s, agent CPU %s), scp %s, raw TLS %s%s",
			i+1, t.runs, v, size, last(r.direct.push), last(r.direct.pushLanded), last(r.direct.pushAPI), last(r.direct.pushCPU), last(r.scp), last(r.tls), strings.Join(vias, ""))
		if err := os.Remove(file); err != nil {
			return err
		}
	}
	return nil
}

func last(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[len(ds)-1]
}

// pushTimes is one timed push to one agent.
type pushTimes struct {
	landed    time.Duration // every byte in the agent's partial file (0: not seen)
	installed time.Duration // Success.txt in place: transfer, verify, extract
	api       time.Duration // the update call returned (it ends with a health check)
	cpu       time.Duration // the agent's CPU until then (0: not measured)
}

// agentProfileSeconds is the length of the CPU profile taken of the agent
// from the start of each timed push: longer than a push, and the agent is
// idle for the rest (scp and raw TLS follow).
const agentProfileSeconds = 3

// timePush pushes the latest bundle bv to the agent a with the API's
// update call, and times from the call to the moments the agent's folder
// shows the whole bundle received and the version installed, by looking
// at it every millisecond.
func (t *transferBench) timePush(ctx context.Context, cl *client.Client, b *bench, a *oneAgentRoad, bv api.BundleView) (pushTimes, error) {
	partial := filepath.Join(a.home, "Calamari", ".partial", bv.SHA256+".part")
	success := filepath.Join(a.home, "Calamari", bv.Version, bundle.SuccessName)
	wctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	if a.pprofPort != 0 {
		// Taken while the push runs, waited for after it: the profile
		// covers the push and the idle agent after it.
		// The coordinator's too: its send side is the other half.
		profiled := make(chan struct{}, 2)
		for name, port := range map[string]int{"agent": a.pprofPort, "coordinator": b.pprofPort} {
			go func() {
				defer func() { profiled <- struct{}{} }()
				t.saveCPUProfile(ctx, port, fmt.Sprintf("%s-cpu-push-%s.pprof", name, bv.Version))
			}()
		}
		defer func() { <-profiled; <-profiled }()
	}
	cpu0, cpuErr := cpuTime(a.proc.pid())
	start := time.Now()
	watched := make(chan pushTimes, 1)
	go func() {
		var p pushTimes
		defer func() { watched <- p }()
		for wctx.Err() == nil {
			now := time.Now()
			if p.landed == 0 {
				if st, err := os.Stat(partial); err == nil && st.Size() >= bv.Size {
					p.landed = now.Sub(start)
				}
			}
			if _, err := os.Stat(success); err == nil {
				p.installed = now.Sub(start)
				return
			}
			time.Sleep(pollEvery)
		}
	}()
	res, err := cl.UpdateCalamari(wctx, api.UpdateTarget{Agent: a.name})
	api := time.Since(start)
	if err != nil {
		cancel()
		<-watched
		return pushTimes{}, err
	}
	cpu1, err := cpuTime(a.proc.pid())
	p := <-watched // Success.txt is written before the agent answers
	p.api = api
	if err == nil && cpuErr == nil {
		p.cpu = cpu1 - cpu0
	}
	if len(res) != 1 || res[0].Result != "installed" {
		return p, fmt.Errorf("update %s to %s: %+v", a.name, bv.Version, res)
	}
	if p.installed == 0 {
		return p, fmt.Errorf("update %s to %s: %s never appeared", a.name, bv.Version, success)
	}
	return p, nil
}

// saveCPUProfile saves a CPU profile of agentProfileSeconds from the
// process serving pprof on port into the profiles folder as name.
func (t *transferBench) saveCPUProfile(ctx context.Context, port int, name string) {
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", port, agentProfileSeconds)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.logf("profile %s: %v", name, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.logf("profile %s: %s", name, resp.Status)
		return
	}
	f, err := os.Create(filepath.Join(t.profiles, name))
	if err != nil {
		t.logf("profile %s: %v", name, err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.logf("profile %s: %v", name, err)
	}
}

// writePayload makes dir hold a bundle source: size bytes of random data
// (incompressible, so the bundle is as big as the payload) and a stub
// entry point for this platform that refuses to run.
func writePayload(dir string, size int64) error {
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	stub := "#!/bin/sh\necho 'tendril-fleet bench-transfer bandwidth bundle: nothing to run' >&2\nexit 64\n"
	if err := os.WriteFile(filepath.Join(dir, "bin", "calamari"), []byte(stub), 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "payload.bin"))
	if err != nil {
		return err
	}
	var seed [32]byte
	crand.Read(seed[:])
	if _, err := io.CopyN(f, rand.NewChaCha8(seed), size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// packBundle packs src as Calamari version v into file and returns the
// bundle's size.
func packBundle(ctx context.Context, src, v, file string) (int64, error) {
	f, err := os.Create(file)
	if err != nil {
		return 0, err
	}
	eps := map[string]string{runtime.GOOS + "/" + runtime.GOARCH: "bin/calamari"}
	if _, err := bundle.Pack(ctx, f, "calamari", v, src, eps); err != nil {
		f.Close()
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, err
	}
	return st.Size(), f.Close()
}

// fleetPushes times a push of the fleet bundle to every agent of a
// simulated fleet, at each size, the largest first: homes that hold the
// latest bundle are left alone when they connect, while a home that lacks
// it would be updated at once by the connect health check, before the
// timed push (so smaller fleets, subsets of the larger, come after).
func (t *transferBench) fleetPushes(ctx context.Context, r *transferResults) error {
	b, err := t.newBench(ctx, "fleet")
	if err != nil {
		return err
	}
	sizes := slices.Clone(t.sizes)
	slices.Sort(sizes)
	slices.Reverse(sizes)
	maxN := sizes[0]
	var need int64 = 1 << 30
	for _, n := range sizes {
		need += int64(n) * t.fleetBundleSize
	}
	need += int64(min(maxN, 16)) * t.fleetBundleSize // partial files of pushes in progress
	if free, err := freeBytes(t.dir); err == nil && free < need {
		return fmt.Errorf("fleet push: %d MiB free in %s, want at least %d MiB", free>>20, t.dir, need>>20)
	}
	if err := b.startCoordinator(ctx, "register"); err != nil {
		return err
	}
	cl, err := b.client()
	if err != nil {
		b.stopCoordinator(true)
		return err
	}
	start := time.Now()
	n, err := fleet.Prepare(ctx, fleet.Config{Dir: b.dir, Agents: maxN, Coordinator: b.agentAddr(), Admin: cl, RegisterConcurrency: 2 * runtime.NumCPU()})
	b.stopCoordinator(true)
	if err != nil {
		return err
	}
	t.logf("registered %d fleet agents in %s (setup, not timed)", n, time.Since(start).Round(time.Millisecond))
	src := filepath.Join(b.dir, "payload")
	if err := writePayload(src, t.fleetBundleSize); err != nil {
		return err
	}
	for k, n := range sizes {
		fp, err := t.fleetPush(ctx, b, src, n, fmt.Sprintf("%d.1.%d", benchMajor, k+1), r)
		r.fleet = append(r.fleet, fp)
		if err != nil {
			return fmt.Errorf("fleet push to %d agents: %w", n, err)
		}
	}
	return nil
}

func (t *transferBench) fleetPush(ctx context.Context, b *bench, src string, n int, v string, r *transferResults) (fleetPush, error) {
	fp := fleetPush{agents: n, version: v}
	if err := b.startCoordinator(ctx, fmt.Sprintf("push-%d", n)); err != nil {
		return fp, err
	}
	defer b.stopCoordinator(true)
	cl, err := b.client()
	if err != nil {
		return fp, err
	}
	statusPort, err := freePort()
	if err != nil {
		return fp, err
	}
	statusAddr := fmt.Sprintf("127.0.0.1:%d", statusPort)
	sim, err := startProc(ctx, filepath.Join(b.dir, fmt.Sprintf("fleet-%d.log", n)), b.selfBin, nil,
		"run", "--agents", strconv.Itoa(n), "--coordinator", b.agentAddr(), "--data", b.data,
		"--dir", b.dir, "--status", statusAddr)
	if err != nil {
		return fp, err
	}
	defer sim.stop(time.Minute)
	if _, err := b.waitStats(ctx, sim, statusAddr); err != nil {
		return fp, err
	}
	if err := b.waitHealthy(ctx, n); err != nil {
		return fp, err
	}
	file := filepath.Join(b.dir, "calamari-"+v+".tar.gz")
	size, err := packBundle(ctx, src, v, file)
	if err != nil {
		return fp, err
	}
	r.fleetBundleBytes = size
	if _, err := uploadBundle(ctx, cl, file); err != nil {
		return fp, err
	}
	os.Remove(file)
	t.logf("%d agents connected and healthy; pushing Calamari %s (%d bytes) to all", n, v, size)

	pid := b.coord.pid()
	if m, err := b.metrics(ctx); err == nil {
		fp.heapBefore = m["go_memstats_heap_inuse_bytes"]
	}
	fp.rssBefore, _ = rss(pid)
	if err := resetPeakRSS(pid); err != nil {
		t.logf("cannot reset the coordinator's peak RSS (%v); the peak shown is since its start", err)
		fp.peakSinceStart = true
	}
	coord0, _ := cpuTime(pid)
	sim0, _ := cpuTime(sim.pid())
	wctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	start := time.Now()
	watched := make(chan time.Duration, 1)
	go func() {
		var all time.Duration
		defer func() { watched <- all }()
		done := make([]bool, n)
		left := n
		for wctx.Err() == nil {
			for i := range n {
				if !done[i] {
					if _, err := os.Stat(filepath.Join(fleet.Home(b.dir, i), "Calamari", v, bundle.SuccessName)); err == nil {
						done[i] = true
						left--
					}
				}
			}
			if left == 0 {
				all = time.Since(start)
				return
			}
			time.Sleep(fleetPollEvery)
		}
	}()
	res, err := cl.UpdateCalamari(wctx, api.UpdateTarget{Environment: fleet.DefaultEnvironment})
	fp.api = time.Since(start)
	if err != nil {
		cancel()
		<-watched
		return fp, err
	}
	fp.installed = <-watched
	coord1, _ := cpuTime(pid)
	sim1, _ := cpuTime(sim.pid())
	fp.coordCPU, fp.simCPU = coord1-coord0, sim1-sim0
	fp.peak, _ = procStatusBytes(pid, "VmHWM")
	fp.rssAfter, _ = rss(pid)
	fp.coordinatorCrashed = b.coord.exited()
	if m, err := b.metrics(ctx); err == nil {
		fp.heapAfter = m["go_memstats_heap_inuse_bytes"]
	}
	// What the coordinator still holds after pushing to every agent.
	fp.profile = fmt.Sprintf("coordinator-heap-after-push-%d.pprof", n)
	b.saveProfile(ctx, "heap", fp.profile, 0)
	want := make(map[string]bool, n)
	for i := range n {
		want[fleet.Name(i)] = true
	}
	var failed []string
	for _, x := range res {
		if !want[x.Agent] {
			continue // registered for a larger fleet, not running now
		}
		if x.Result == "installed" {
			fp.installedCount++
		} else {
			failed = append(failed, fmt.Sprintf("%s: %s %s", x.Agent, x.Result, x.Error))
		}
	}
	t.logf("%d agents: all installed in %s, API returned after %s, coordinator RSS %d MiB → peak %d MiB",
		n, fp.installed, fp.api, fp.rssBefore>>20, fp.peak>>20)
	if fp.installedCount != n {
		return fp, fmt.Errorf("%d of %d agents installed %s; first failures: %v", fp.installedCount, n, v, failed[:min(3, len(failed))])
	}
	if fp.installed == 0 {
		return fp, fmt.Errorf("not every agent showed %s installed within %s", v, t.timeout)
	}
	return fp, nil
}

// procStatusBytes reads a "kB" field of /proc/PID/status (VmRSS, VmHWM).
func procStatusBytes(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// resetPeakRSS sets a process's VmHWM back to its current RSS (Linux
// 4.0+), so that the next reading is the peak of what followed.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// machineBusy samples /proc/stat over d: the share of all CPUs not idle,
// as "N% of M CPUs", or "?" where it cannot be read.
func machineBusy(ctx context.Context, d time.Duration) string {
	read := func() (busy, total int64, ok bool) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0, false
		}
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		if len(f) < 6 || f[0] != "cpu" {
			return 0, 0, false
		}
		for i, v := range f[1:] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, 0, false
			}
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		return busy, total, true
	}
	b0, t0, ok0 := read()
	if sleep(ctx, d) != nil {
		return "?"
	}
	b1, t1, ok1 := read()
	if !ok0 || !ok1 || t1 <= t0 {
		return "?"
	}
	return fmt.Sprintf("%.0f%% of %d CPUs", 100*float64(b1-b0)/float64(t1-t0), runtime.NumCPU())
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// programVersion is the first line a program prints when asked its
// version (nginx prints it on standard error).
func programVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "?"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func sshVersion() string {
	out, _ := exec.Command("ssh", "-V").CombinedOutput()
	v, _, _ := strings.Cut(strings.TrimSpace(string(out)), ",")
	return v
}
