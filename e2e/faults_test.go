package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/tendrildeploy/tendril/internal/tmpfstest"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/faultproxy"
	"github.com/tendrildeploy/tendril/internal/pgtest"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/server/backup"
	"github.com/tendrildeploy/tendril/server/datadir"
)

// What the fault matrix's cases wait for and inject.
const (
	// settleWithin is how long a case may take to reach its final state
	// once the fault is gone (or, for a fault that stays, to show its
	// reason): agents reconnect within seconds (their backoff starts at
	// 1s), nodes count a dead node after 1.5s (--heartbeat-interval
	// 500ms), health checks run every second.
	settleWithin = 45 * time.Second
	// outageFor is how long PostgreSQL stays stopped. The issue observed
	// outages of 15-30 s; 12 s keeps the four outage cases' CI time down
	// while still outlasting the nodes' heartbeats (three missed at 500ms
	// count a node dead) and letting the agents' reconnect backoff grow
	// past 8 s, as in a real outage.
	outageFor = 12 * time.Second
	// agentMountSize holds an agent home and its binary (17 MB), and the
	// package an upgrade receives beside it.
	agentMountSize = 80 << 20
	// dataMountSize holds a coordinator data folder with the agent
	// package (17 MB) a rollout sends.
	dataMountSize = 64 << 20
	// bundleFiller makes a Calamari push take a moment through a dripping
	// proxy, so a fault lands mid-transfer.
	bundleFiller = 8 << 20
	// midTransfer is how many bytes through an agent's proxy, since an
	// operation started, say that its transfer is under way.
	midTransfer = 1 << 20
	// dripChunk per dripEvery (6.4 MB/s) slows a transfer down enough to
	// inject a fault in its middle: a bundle takes ~1.3 s, an agent
	// package ~2.7 s.
	dripChunk = 64 << 10
	dripEvery = 10 * time.Millisecond
	// taskLines are the lines a task's script prints after its gate.
	taskLines = 200
)

// The faults and operations of the matrix, in the order the issue lists
// them.
var (
	faultNames     = []string{"coordinator-kill", "agent-kill", "node-kill", "postgres-stop", "agent-disk-full", "coordinator-disk-full", "connection-cut"}
	operationNames = []string{"task", "calamari-push", "rollout-step", "backup", "certificate-rotation"}
)

// faultSetup is what a case needs before its fault.
type faultSetup struct {
	// ha runs two coordinator nodes, "a" and "b", on PostgreSQL; the agent
	// is on "a" when the case starts. Otherwise one node on SQLite.
	ha bool
	// agentMount and dataMount put the agent's home and binary, and the
	// coordinator's data folder, on a tmpfs of that size (0: none).
	agentMount, dataMount int64
	// calamari stores Calamari 1.0.0 and waits for the agent to hold it
	// (tasks need it).
	calamari bool
	// packages stores the agent package 2.0.0 (rollouts need it).
	packages bool
}

// faultCase is one meaningful (fault, operation) pair.
type faultCase struct {
	fault, op string
	setup     faultSetup
	run       func(t *testing.T, e *faultEnv)
}

var (
	oneNode    = faultSetup{}
	twoNodes   = faultSetup{ha: true}
	agentTmpfs = faultSetup{agentMount: agentMountSize}
	dataTmpfs  = faultSetup{dataMount: dataMountSize}
)

// forTasks is s with what tasks need: Calamari on the agent.
func (s faultSetup) forTasks() faultSetup {
	s.calamari = true
	return s
}

// forRollouts is s with what rollouts need: the agent package 2.0.0.
func (s faultSetup) forRollouts() faultSetup {
	s.packages = true
	return s
}

var faultCases = []faultCase{
	{"coordinator-kill", "task", oneNode.forTasks(), coordinatorKillTask},
	{"coordinator-kill", "calamari-push", oneNode, coordinatorKillPush},
	{"coordinator-kill", "rollout-step", oneNode.forRollouts(), coordinatorKillRollout},
	{"coordinator-kill", "backup", oneNode.forTasks(), coordinatorKillBackup},
	{"coordinator-kill", "certificate-rotation", oneNode, coordinatorKillRotation},

	{"agent-kill", "task", oneNode.forTasks(), agentKillTask},
	{"agent-kill", "calamari-push", oneNode, agentKillPush},
	{"agent-kill", "rollout-step", oneNode.forRollouts(), agentKillRollout},
	{"agent-kill", "certificate-rotation", oneNode, agentKillRotation},

	{"node-kill", "task", twoNodes.forTasks(), nodeKillTask},
	{"node-kill", "calamari-push", twoNodes, nodeKillPush},
	{"node-kill", "rollout-step", twoNodes.forRollouts(), nodeKillRollout},
	{"node-kill", "certificate-rotation", twoNodes, nodeKillRotation},

	{"postgres-stop", "task", twoNodes.forTasks(), postgresStopTask},
	{"postgres-stop", "calamari-push", twoNodes, postgresStopPush},
	{"postgres-stop", "rollout-step", twoNodes.forRollouts(), postgresStopRollout},
	{"postgres-stop", "certificate-rotation", twoNodes, postgresStopRotation},

	{"agent-disk-full", "task", agentTmpfs.forTasks(), agentDiskFullTask},
	{"agent-disk-full", "calamari-push", agentTmpfs, agentDiskFullPush},
	{"agent-disk-full", "rollout-step", agentTmpfs.forRollouts(), agentDiskFullRollout},
	{"agent-disk-full", "certificate-rotation", agentTmpfs, agentDiskFullRotation},

	{"coordinator-disk-full", "task", dataTmpfs.forTasks(), coordinatorDiskFullTask},
	{"coordinator-disk-full", "calamari-push", dataTmpfs, coordinatorDiskFullPush},
	{"coordinator-disk-full", "rollout-step", dataTmpfs.forRollouts(), coordinatorDiskFullRollout},
	{"coordinator-disk-full", "backup", dataTmpfs, coordinatorDiskFullBackup},
	{"coordinator-disk-full", "certificate-rotation", dataTmpfs, coordinatorDiskFullRotation},

	{"connection-cut", "task", oneNode.forTasks(), connectionCutTask},
	{"connection-cut", "calamari-push", oneNode, connectionCutPush},
	{"connection-cut", "rollout-step", oneNode.forRollouts(), connectionCutRollout},
	{"connection-cut", "certificate-rotation", oneNode, connectionCutRotation},
}

// faultPairsLeftOut are the pairs a fault cannot reach, and why.
var faultPairsLeftOut = []struct{ fault, op, why string }{
	{"agent-kill", "backup", "a backup involves no agent"},
	{"agent-disk-full", "backup", "a backup involves no agent: it reads the coordinator's data folder and writes on its host"},
	{"node-kill", "backup", "a coordinator on PostgreSQL refuses Tendril backups (409: use the database's own tools), so there is no backup for a node to die in"},
	{"postgres-stop", "backup", "likewise: Tendril backs up only a SQLite coordinator, whose database cannot stop apart from it"},
	{"connection-cut", "backup", "a backup runs on the coordinator's host: its one request (the snapshot) is a loopback call, and no network transfer carries it"},
}

// TestFaultMatrix is the fault matrix (issue 20, part 9): every fault
// injected into every operation it can hit, each pair a subtest
// FAULT/OPERATION, with the real binaries. Each case asserts what the
// issue demands of a fault: a final state (no task, push or rollout left
// waiting without a deadline, or, while a fault lasts, without saying
// why), a complete or honestly marked log (a task's log has every line
// and its last, or its record says how many lines were lost and why), and
// nothing lost or done twice (a task's script records each run in a
// marker file outside the agent's home, as
// TestKillNodeAgentsMoveTasksRunOnce does).
func TestFaultMatrix(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the fault matrix needs Linux: tmpfs mounts, /bin/sh scripts, the agent's re-exec upgrade")
	}
	// The table is the whole matrix: every pair is a case or left out
	// with its reason, exactly once.
	seen := map[[2]string]int{}
	for _, c := range faultCases {
		seen[[2]string{c.fault, c.op}]++
	}
	for _, l := range faultPairsLeftOut {
		seen[[2]string{l.fault, l.op}]++
	}
	for _, f := range faultNames {
		for _, o := range operationNames {
			if n := seen[[2]string{f, o}]; n != 1 {
				t.Errorf("pair %s/%s: in the matrix %d times, want once (a case or left out with a reason)", f, o, n)
			}
		}
	}
	if len(seen) != len(faultNames)*len(operationNames) {
		t.Errorf("the matrix names %d pairs, want %d: a fault or operation is misspelt", len(seen), len(faultNames)*len(operationNames))
	}
	shared := &faultShared{dir: t.TempDir(), bundles: map[string]string{}}
	t.Cleanup(func() {
		if err := shared.pg.Stop(); err != nil {
			t.Errorf("stop the fault matrix's PostgreSQL: %v", err)
		}
	})
	for _, f := range faultNames {
		t.Run(f, func(t *testing.T) {
			for _, c := range faultCases {
				if c.fault != f {
					continue
				}
				t.Run(c.op, func(t *testing.T) {
					c.run(t, newFaultEnv(t, c.setup, shared))
				})
			}
		})
	}
}

// faultShared is what the cases share.
type faultShared struct {
	// pg is the cluster of the two-node cases. The outage cases stop it:
	// it is theirs alone, so that no other test's database goes away.
	pg pgtest.Shared
	// dir holds the bundles, made once: packing megabytes of filler is
	// slow under the race detector.
	dir     string
	bundles map[string]string // by version and filler size
}

// bundle returns a test Calamari bundle (see servertest.CalamariBundle).
func (s *faultShared) bundle(t *testing.T, version string, filler int) string {
	t.Helper()
	key := fmt.Sprintf("%s-%d", version, filler)
	if p, ok := s.bundles[key]; ok {
		return p
	}
	p := filepath.Join(s.dir, key, "calamari-"+version+".tar.gz")
	copyFile(t, servertest.CalamariBundle(t, version, filler), p)
	s.bundles[key] = p
	return p
}

// faultEnv is one case's coordinator (one node or two), its agent, web-1,
// and the means to inject faults into them.
type faultEnv struct {
	t      *testing.T
	shared *faultShared
	nodes  []*faultNode    // nodes[0] holds the agent when the case starts
	pg     *pgtest.Cluster // the database of two nodes; nil for one on SQLite
	agent  faultAgent
	// marks holds the files the tasks' scripts write: NAME (one line per
	// run), NAME.gate (made by the test to let a gated script go on) and
	// NAME.end (the script printed its last line). It is on no tmpfs.
	marks string
	// dataMount and agentMount are the tmpfs mounts, "" if none.
	dataMount, agentMount string
}

// faultNode is one coordinator process.
type faultNode struct {
	name, data string
	args       []string
	d          *daemon
	proxy      *faultproxy.Proxy // the agent reaches the node through it
	dead       bool
}

// faultAgent is the agent binary, installed in a folder of its own and
// run by a supervisor that restarts it when it exits, as a service manager
// does.
type faultAgent struct {
	name, home, exe string
	sup             *supervisor
}

func newFaultEnv(t *testing.T, s faultSetup, shared *faultShared) *faultEnv {
	t.Helper()
	e := &faultEnv{t: t, shared: shared, marks: t.TempDir()}
	dataRoot, agentRoot := t.TempDir(), t.TempDir()
	if s.dataMount > 0 {
		dataRoot = tmpfstest.Mount(t, s.dataMount)
		e.dataMount = dataRoot
	}
	if s.agentMount > 0 {
		agentRoot = tmpfstest.Mount(t, s.agentMount)
		e.agentMount = agentRoot
	}
	names := []string{"a"}
	var dbURL string
	if s.ha {
		names = append(names, "b")
		e.pg = shared.pg.Cluster(t)
		dbURL = e.pg.NewDatabase(t)
	}
	first := filepath.Join(dataRoot, names[0])
	initArgs := []string{"init", "--data", first}
	if dbURL != "" {
		initArgs = append(initArgs, "--database", dbURL)
	}
	mustRun(t, "tendril-server", initArgs...)
	for _, name := range names[1:] {
		servertest.CopyDir(t, first, filepath.Join(dataRoot, name))
	}
	for _, name := range names {
		n := &faultNode{name: name, data: filepath.Join(dataRoot, name)}
		agentAddr := servertest.FreeAddr(t)
		n.args = []string{"run", "--data", n.data, "--listen", agentAddr, "--http", servertest.FreeAddr(t), "--health-interval", "1s"}
		if dbURL != "" {
			n.args = append(n.args, "--database", dbURL, "--node-name", name, "--heartbeat-interval", "500ms")
		}
		p, err := faultproxy.New(agentAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		n.proxy = p
		n.d = start(t, "tendril-server", n.args...)
		e.nodes = append(e.nodes, n)
	}
	for _, n := range e.nodes {
		waitFor(t, "node "+n.name+"'s API", func() bool { return listAgents(t, n.data) != nil })
	}
	if s.ha {
		waitFor(t, "both nodes running", func() bool {
			nodes := listNodes(t, e.nodes[0].data)
			return len(nodes) == 2 && nodes[0].State == api.NodeRunning && nodes[1].State == api.NodeRunning
		})
	}

	// The agent dials the nodes through their proxies, the first node
	// first.
	tokenArgs := []string{"token", "create", "--environment", "Production"}
	for _, n := range e.nodes {
		tokenArgs = append(tokenArgs, "--server", n.proxy.Addr())
	}
	join := strings.TrimSpace(e.mustCLI(e.nodes[0], tokenArgs...))
	e.agent = faultAgent{name: "web-1", home: filepath.Join(agentRoot, "home"), exe: filepath.Join(agentRoot, "bin", "tendril-agent")}
	copyFile(t, filepath.Join(binDir, "agent-1.0.0"), e.agent.exe)
	if out, err := exec.Command(e.agent.exe, "register", "--home", e.agent.home, "--name", e.agent.name, "--join", join).CombinedOutput(); err != nil {
		t.Fatalf("register %s: %v\n%s", e.agent.name, err, out)
	}
	t.Cleanup(func() { killHomeAgent(e.agent.home) })
	e.agent.sup = supervise(t, e.agent.exe, "run", "--home", e.agent.home, "--supervised")
	waitFor(t, "web-1 healthy on node a", func() bool {
		r, ok := e.agentRow()
		return ok && e.healthy(r) && (!s.ha || r.Node == "a")
	})
	if s.calamari {
		if _, err := e.pushCalamari(e.nodes[0], "1.0.0", 0); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "Calamari 1.0.0 on web-1", func() bool {
			r, _ := e.agentRow()
			return r.CalamariVersion == "1.0.0" && r.CalamariCurrent
		})
	}
	if s.packages {
		e.mustCLI(e.nodes[0], "agent-package", "push", "--version", "2.0.0", "--os", runtime.GOOS, "--arch", runtime.GOARCH,
			filepath.Join(binDir, "agent-2.0.0"))
	}
	return e
}

// live is the first node that was not killed: where the admin commands go.
func (e *faultEnv) live() *faultNode {
	for _, n := range e.nodes {
		if !n.dead {
			return n
		}
	}
	e.t.Fatal("every node was killed")
	return nil
}

// kill kills a node with SIGKILL.
func (e *faultEnv) kill(n *faultNode) {
	n.d.kill()
	n.dead = true
}

// restart starts a killed node again.
func (e *faultEnv) restart(n *faultNode) {
	e.t.Helper()
	n.d = start(e.t, "tendril-server", n.args...)
	n.dead = false
	waitFor(e.t, "node "+n.name+"'s API after its restart", func() bool { return listAgents(e.t, n.data) != nil })
}

// cli runs an admin command through node n.
func (e *faultEnv) cli(n *faultNode, args ...string) (string, error) {
	e.t.Helper()
	return run(e.t, "tendril-server", withData(args, n.data)...)
}

// withData adds --data to a command's arguments, before any "--" (what
// follows it is Calamari's).
func withData(args []string, data string) []string {
	i := slices.Index(args, "--")
	if i < 0 {
		i = len(args)
	}
	return slices.Concat(args[:i], []string{"--data", data}, args[i:])
}

func (e *faultEnv) mustCLI(n *faultNode, args ...string) string {
	e.t.Helper()
	out, err := e.cli(n, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// cliResult is how a command run in the background ended.
type cliResult struct {
	stdout, stderr string
	code           int
	err            error // it could not run, or was killed
}

// cliAsync runs an admin command through node n in the background. A
// command still running when the test ends is killed.
func (e *faultEnv) cliAsync(n *faultNode, args ...string) <-chan cliResult {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, binPath("tendril-server"), withData(args, n.data)...)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan cliResult, 1)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		err := cmd.Run()
		code := -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && ctx.Err() == nil {
			err = nil // it ran and failed: its exit code and stderr say how
		}
		done <- cliResult{stdout: stdout.String(), stderr: strings.TrimSpace(stderr.String()), code: code, err: err}
	}()
	e.t.Cleanup(func() { cancel(); <-ended })
	return done
}

// await waits for a background command, which the fault may have left
// waiting, for settleWithin.
func await(t *testing.T, what string, done <-chan cliResult) cliResult {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r
	case <-time.After(settleWithin):
		t.Fatalf("%s: still waiting after %s, want it to end (with its result or a reason)", what, settleWithin)
		return cliResult{}
	}
}

// settle polls cond until it holds, for settleWithin, and ends the test
// if it does not. cond also says what it saw, for the failure message.
func settle(t *testing.T, want string, cond func() (bool, string)) {
	t.Helper()
	if !trySettle(t, want, cond) {
		t.FailNow()
	}
}

// trySettle is settle marking the test failed but going on, for a check
// whose failure leaves the rest of the case worth running.
func trySettle(t *testing.T, want string, cond func() (bool, string)) bool {
	t.Helper()
	deadline := time.Now().Add(settleWithin)
	for {
		ok, seen := cond()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			t.Errorf("after %s: saw %s; want %s", settleWithin, seen, want)
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// faultAgentRow is the agent as agents list --json shows it.
type faultAgentRow struct {
	Name            string `json:"name"`
	Version         string `json:"version"`
	Connected       bool   `json:"connected"`
	Health          string `json:"health"`
	HealthDetail    string `json:"health_detail"`
	Node            string `json:"node"`
	CalamariVersion string `json:"calamari_version"`
	CalamariCurrent bool   `json:"calamari_current"`
}

func (r faultAgentRow) String() string {
	return fmt.Sprintf("%s connected=%v health=%s (%s) version=%s node=%q calamari=%s current=%v",
		r.Name, r.Connected, r.Health, r.HealthDetail, r.Version, r.Node, r.CalamariVersion, r.CalamariCurrent)
}

// agentRow is the agent as the live node lists it; false if the node did
// not answer.
func (e *faultEnv) agentRow() (faultAgentRow, bool) {
	out, err := e.cli(e.live(), "agents", "list", "--json")
	if err != nil {
		return faultAgentRow{}, false
	}
	var rows []faultAgentRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		e.t.Fatalf("agents list --json: %v\n%s", err, out)
	}
	for _, r := range rows {
		if r.Name == e.agent.name {
			return r, true
		}
	}
	return faultAgentRow{}, false
}

// waitAgent waits until the agent is connected and healthy (on node, if
// given).
func (e *faultEnv) waitAgent(what, node string) {
	e.t.Helper()
	settle(e.t, what, func() (bool, string) {
		r, ok := e.agentRow()
		if !ok {
			return false, "no answer from agents list"
		}
		return e.healthy(r) && (node == "" || r.Node == node), r.String()
	})
}

// healthy reports whether the agent is connected and healthy, but for the
// warning a home on a small tmpfs always gets (below 1 GiB free).
func (e *faultEnv) healthy(r faultAgentRow) bool {
	lowDisk := e.agentMount != "" && r.Health == api.HealthWarning && strings.HasPrefix(r.HealthDetail, "low disk space in agent home")
	return r.Connected && (r.Health == api.HealthHealthy || lowDisk)
}

// cutAgentLinks breaks every connection between the agent and the nodes.
func (e *faultEnv) cutAgentLinks() {
	for _, n := range e.nodes {
		n.proxy.KillAll()
	}
}

// drip slows every agent link down, or, with false, lets it run again.
func (e *faultEnv) drip(on bool) {
	for _, n := range e.nodes {
		if on {
			n.proxy.SetDrip(dripChunk, dripEvery)
		} else {
			n.proxy.SetDrip(0, 0)
		}
	}
}

// waitTransfer waits until midTransfer bytes went through p since from:
// a bundle or package is on its way.
func waitTransfer(t *testing.T, p *faultproxy.Proxy, from int64, what string) {
	t.Helper()
	settle(t, what+" under way", func() (bool, string) {
		n := p.BytesForwarded() - from
		return n >= midTransfer, fmt.Sprintf("%d bytes through the agent's proxy", n)
	})
}

// stopPostgres stops the database for outageFor, calling during while it
// is down, and returns when it came back.
func (e *faultEnv) stopPostgres(during func()) time.Time {
	t := e.t
	t.Helper()
	if err := e.pg.Down(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// A case that fails during the outage must not leave the database
	// down for the next.
	t.Cleanup(func() { e.pg.Up(context.Background()) })
	if during != nil {
		during()
	}
	// The outage lasts outageFor whatever during took; the wait is the
	// fault itself, not a synchronisation.
	time.Sleep(time.Until(stopped.Add(outageFor)))
	if err := e.pg.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// wantRefusal checks that a command refused during a fault says so with
// the status and words a person can act on.
func wantRefusal(t *testing.T, what string, err error, status int, words string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded; want a refusal with HTTP %d saying %q", what, status, words)
		return
	}
	msg := err.Error()
	if !strings.Contains(msg, fmt.Sprintf("HTTP %d", status)) || !strings.Contains(strings.ToLower(msg), words) {
		t.Errorf("%s: got %q; want HTTP %d saying %q", what, msg, status, words)
	}
}

// --- Tasks ---

// faultTaskView is a task as the API shows it, with the fields the issue
// adds (state_reason, lost_lines, lost_reason) read whether or not this
// build has them.
type faultTaskView struct {
	ID          string     `json:"id"`
	State       string     `json:"state"`
	StateReason string     `json:"state_reason"`
	WaitingFor  string     `json:"waiting_for"`
	ExitCode    int        `json:"exit_code"`
	Error       string     `json:"error"`
	FinishedAt  *time.Time `json:"finished_at"`
	LostLines   int64      `json:"lost_lines"`
	LostReason  string     `json:"lost_reason"`
}

func (v faultTaskView) final() bool {
	return v.State == api.TaskSucceeded || v.State == api.TaskFailed || v.State == api.TaskCancelled
}

func (v faultTaskView) String() string {
	s := "state " + v.State
	for _, f := range []struct{ name, v string }{{"state_reason", v.StateReason}, {"waiting_for", v.WaitingFor}, {"error", v.Error}, {"lost_reason", v.LostReason}} {
		if f.v != "" {
			s += fmt.Sprintf(", %s %q", f.name, f.v)
		}
	}
	if v.LostLines > 0 {
		s += fmt.Sprintf(", lost_lines %d", v.LostLines)
	}
	return s
}

// taskScript is a task's script: it records its run, waits for its gate
// if gated, prints lines lines of width characters or more, then its last
// line, then records that it got there.
func (e *faultEnv) taskScript(lines, width int, gated bool) string {
	m := e.marks + "/$TENDRIL_TICKET"
	var b strings.Builder
	fmt.Fprintf(&b, "echo ran >> %s\n", m)
	if gated {
		fmt.Fprintf(&b, "while [ ! -e %s.gate ]; do sleep 0.05; done\n", m)
	}
	line := `echo "line $i"`
	if width > 0 {
		fmt.Fprintf(&b, "pad=$(head -c %d /dev/zero | tr '\\0' x)\n", width)
		line = `echo "line $i $pad"`
	}
	fmt.Fprintf(&b, "i=0\nwhile [ $i -lt %d ]; do %s; i=$((i+1)); done\n", lines, line)
	fmt.Fprintf(&b, "echo \"last line of $TENDRIL_TICKET\"\ntouch %s.end\n", m)
	return b.String()
}

// createTask creates a task running script on the agent through node n
// and returns its id.
func (e *faultEnv) createTask(n *faultNode, script string) string {
	e.t.Helper()
	out := e.mustCLI(n, "task", "run", "--agent", e.agent.name, "--json", "--", "run-script", "--inline", script)
	return oneTaskID(e.t, out)
}

func oneTaskID(t *testing.T, out string) string {
	t.Helper()
	var views []faultTaskView
	if err := json.Unmarshal([]byte(out), &views); err != nil || len(views) != 1 {
		t.Fatalf("task run --json: got %d tasks (%v), want 1\n%s", len(views), err, out)
	}
	return views[0].ID
}

// markExists reports whether the marker file NAME exists.
func (e *faultEnv) markExists(name string) bool {
	_, err := os.Stat(filepath.Join(e.marks, name))
	return err == nil
}

// waitRunning waits until the task's script has started.
func (e *faultEnv) waitRunning(id string) {
	e.t.Helper()
	waitFor(e.t, "task "+id+"'s script to start", func() bool { return e.markExists(id) })
}

// openGate lets a gated script go on.
func (e *faultEnv) openGate(id string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.marks, id+".gate"), nil, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// waitScriptEnd waits until the script printed its last line, on the
// agent.
func (e *faultEnv) waitScriptEnd(id string) {
	e.t.Helper()
	settle(e.t, "task "+id+"'s script to print its last line", func() (bool, string) {
		return e.markExists(id + ".end"), "no " + id + ".end marker"
	})
}

// task reads a task through the live node, without its log.
func (e *faultEnv) task(id string) (faultTaskView, error) {
	out, err := e.cli(e.live(), "task", "list", "--json", "--limit", "1000")
	if err != nil {
		return faultTaskView{}, err
	}
	var views []faultTaskView
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		return faultTaskView{}, fmt.Errorf("task list --json: %w", err)
	}
	for _, v := range views {
		if v.ID == id {
			return v, nil
		}
	}
	return faultTaskView{}, fmt.Errorf("task %s is not listed", id)
}

// tasks counts the tasks the coordinator has.
func (e *faultEnv) tasks() int {
	e.t.Helper()
	var views []faultTaskView
	if err := json.Unmarshal([]byte(e.mustCLI(e.live(), "task", "list", "--json", "--limit", "1000")), &views); err != nil {
		e.t.Fatal(err)
	}
	return len(views)
}

// waitTaskFinal waits until the task is in a final state.
func (e *faultEnv) waitTaskFinal(id string) faultTaskView {
	e.t.Helper()
	var v faultTaskView
	settle(e.t, "task "+id+" in a final state", func() (bool, string) {
		var err error
		if v, err = e.task(id); err != nil {
			return false, err.Error()
		}
		return v.final(), v.String()
	})
	return v
}

// waitTaskShown waits until the task is final or says what keeps it: a
// fault that lasts may hold a task, but never silently. A task that does
// neither fails the test, which goes on (the fault is then removed).
func (e *faultEnv) waitTaskShown(id string) faultTaskView {
	e.t.Helper()
	var v faultTaskView
	trySettle(e.t, "task "+id+" final, or saying what it waits for (state_reason)", func() (bool, string) {
		var err error
		if v, err = e.task(id); err != nil {
			return false, err.Error()
		}
		return v.final() || v.StateReason != "" || v.WaitingFor != "", v.String()
	})
	return v
}

// taskWant is what a task's end must be.
type taskWant struct {
	// states are the acceptable final states; nil means succeeded.
	states []string
	// lines is how many "line N" lines the script printed before its
	// last line; -1 if it did not get there (no log check).
	lines int
	// interrupted allows a task the agent died under to end failed, with
	// its error saying so, in place of a complete log.
	interrupted bool
	// endedBy, if set, is a time the agent's end time (finished_at) must
	// be before: the task ended during the fault, not when it was
	// collected after it.
	endedBy time.Time
	// refused is a task the agent refused to start: its script must not
	// have run at all.
	refused bool
}

// checkTask waits for the task's final state and checks it: its state,
// its log complete or honestly marked, and its script run exactly once.
func (e *faultEnv) checkTask(id string, want taskWant) {
	t := e.t
	t.Helper()
	v := e.waitTaskFinal(id)
	states := want.states
	if states == nil {
		states = []string{api.TaskSucceeded}
	}
	if !slices.Contains(states, v.State) {
		t.Errorf("task %s: got %s; want one of %v", id, v, states)
	}
	if !want.endedBy.IsZero() && (v.FinishedAt == nil || !v.FinishedAt.Before(want.endedBy)) {
		t.Errorf("task %s: finished_at %v; want the agent's end time, before %s (when the fault ended)", id, v.FinishedAt, want.endedBy.Format(time.RFC3339Nano))
	}
	if want.lines >= 0 {
		e.checkTaskLog(id, want)
	}
	// The agent's own record: the script ran once, or, refused, never.
	b, err := os.ReadFile(filepath.Join(e.marks, id))
	if want.refused {
		if len(b) != 0 {
			t.Errorf("task %s: refused, but its script ran %d times; want never", id, strings.Count(string(b), "ran"))
		}
		return
	}
	if err != nil || string(b) != "ran\n" {
		t.Errorf("task %s: its script ran %d times (%v); want exactly once", id, strings.Count(string(b), "ran"), err)
	}
}

// checkTaskLog checks that a finished task's log has every line once and
// the last line, or that its record says how many were lost and why.
func (e *faultEnv) checkTaskLog(id string, want taskWant) {
	t := e.t
	t.Helper()
	out, err := e.cli(e.live(), "task", "show", id, "--json")
	if err != nil {
		t.Errorf("task show %s: %v", id, err)
		return
	}
	var show struct {
		Task faultTaskView     `json:"task"`
		Log  []api.LogLineView `json:"log"`
	}
	if err := json.Unmarshal([]byte(out), &show); err != nil {
		t.Fatalf("task show --json: %v", err)
	}
	v := show.Task
	seen := map[int]int{}
	last, dup := 0, 0
	var seqs []int64
	for _, l := range show.Log {
		seqs = append(seqs, l.Seq)
		switch f := strings.Fields(l.Text); {
		case l.Text == "last line of "+id:
			last++
		case len(f) >= 2 && f[0] == "line":
			if i, err := strconv.Atoi(f[1]); err == nil {
				if seen[i]++; seen[i] == 2 {
					dup++
				}
			}
		}
	}
	if dup > 0 || last > 1 {
		t.Errorf("task %s: %d lines and the last line %d times in its log; want each once", id, dup, last)
	}
	if !slices.IsSorted(seqs) || len(slices.Compact(slices.Clone(seqs))) != len(seqs) {
		t.Errorf("task %s: log sequence numbers out of order or repeated", id)
	}
	complete := last == 1 && len(seen) == want.lines
	// Honest: the record counts at least what is missing and says why.
	missing := want.lines - len(seen) + 1 - min(last, 1)
	honest := v.LostLines > 0 && v.LostReason != "" && v.LostLines >= int64(missing)
	interrupted := want.interrupted && v.State == api.TaskFailed && v.Error != ""
	if !complete && !honest && !interrupted {
		tail := show.Log[max(0, len(show.Log)-3):]
		var lines []string
		for _, l := range tail {
			lines = append(lines, fmt.Sprintf("%s: %.60s", l.Stream, l.Text))
		}
		t.Errorf("task %s: %s; its log holds %d of %d lines and its last line %d times (ends: %q); want every line and the last line, or lost_lines (>= %d) and lost_reason saying what is missing",
			id, v, len(seen), want.lines, last, lines, missing)
	}
}

// --- Calamari pushes ---

// pushCalamari uploads a test Calamari bundle through node n.
func (e *faultEnv) pushCalamari(n *faultNode, version string, filler int) (string, error) {
	e.t.Helper()
	return e.cli(n, "calamari", "push", e.shared.bundle(e.t, version, filler))
}

// checkCalamari waits for the agent to hold version, verified, and checks
// that the coordinator stores it once.
func (e *faultEnv) checkCalamari(version string) {
	t := e.t
	t.Helper()
	settle(t, "web-1 holding Calamari "+version+", verified", func() (bool, string) {
		r, ok := e.agentRow()
		return ok && r.CalamariVersion == version && r.CalamariCurrent, r.String()
	})
	var bundles []api.BundleView
	if err := json.Unmarshal([]byte(e.mustCLI(e.live(), "calamari", "list", "--json")), &bundles); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range bundles {
		if b.Version == version {
			n++
		}
	}
	if n != 1 {
		t.Errorf("calamari list: Calamari %s %d times; want once", version, n)
	}
}

// --- Rollouts ---

// startRollout upgrades the agent to 2.0.0 through node n. The grace
// outlasts any fault here, so a new version that cannot connect during
// one is not rolled back for it.
func (e *faultEnv) startRollout(n *faultNode) (string, error) {
	out, err := e.cli(n, "upgrade", "--agent", e.agent.name, "--version", "2.0.0", "--grace", "90s", "--json")
	if err != nil {
		return "", err
	}
	var v rolloutView
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.ID == "" {
		return "", fmt.Errorf("upgrade --json: no rollout id (%v)\n%s", err, out)
	}
	return v.ID, nil
}

func (e *faultEnv) mustStartRollout(n *faultNode) string {
	e.t.Helper()
	id, err := e.startRollout(n)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *faultEnv) rollout(id string) (rolloutView, error) {
	var v rolloutView
	out, err := e.cli(e.live(), "rollout", "show", id, "--json")
	if err != nil {
		return v, err
	}
	return v, json.Unmarshal([]byte(out), &v)
}

func (v rolloutView) String() string {
	s := fmt.Sprintf("rollout %s", v.State)
	if v.Reason != "" {
		s += fmt.Sprintf(" (%s)", v.Reason)
	}
	for _, a := range v.Agents {
		s += fmt.Sprintf(", %s %s", a.Agent, a.State)
		if a.Reason != "" {
			s += fmt.Sprintf(" (%s)", a.Reason)
		}
	}
	return s
}

func (v rolloutView) final() bool {
	return v.State == api.RolloutSucceeded || v.State == api.RolloutHalted
}

// agentStep is the agent's state in the rollout.
func (v rolloutView) agentStep() (state, reason string) {
	for _, a := range v.Agents {
		if a.Agent == "web-1" {
			return a.State, a.Reason
		}
	}
	return "", ""
}

// waitStep waits until the agent's step in the rollout is state.
func (e *faultEnv) waitStep(id, state string) {
	e.t.Helper()
	settle(e.t, "web-1 "+state+" in rollout "+id, func() (bool, string) {
		v, err := e.rollout(id)
		if err != nil {
			return false, err.Error()
		}
		st, _ := v.agentStep()
		return st == state, v.String()
	})
}

// waitRolloutSays waits until the rollout is final or its agent's step
// says words (what holds it). A rollout that does neither fails the test,
// which goes on.
func (e *faultEnv) waitRolloutSays(id, words string) rolloutView {
	e.t.Helper()
	var v rolloutView
	trySettle(e.t, fmt.Sprintf("rollout %s final, or web-1's step saying %q", id, words), func() (bool, string) {
		var err error
		if v, err = e.rollout(id); err != nil {
			return false, err.Error()
		}
		_, reason := v.agentStep()
		return v.final() || strings.Contains(reason, words), v.String()
	})
	return v
}

// installedVersion is what the agent binary on disk says it is.
func (e *faultEnv) installedVersion() string {
	out, err := exec.Command(e.agent.exe, "version", "--json").Output()
	if err != nil {
		return "missing: " + err.Error()
	}
	var v struct{ Version string }
	json.Unmarshal(out, &v)
	return v.Version
}

// checkRollout waits for the rollout's final state and checks it, and
// that the agent runs, connected, the version its binary on disk is, with
// no upgrade left half done.
func (e *faultEnv) checkRollout(id string, wantSucceeded bool) rolloutView {
	t := e.t
	t.Helper()
	var v rolloutView
	settle(t, "rollout "+id+" succeeded or halted", func() (bool, string) {
		var err error
		if v, err = e.rollout(id); err != nil {
			return false, err.Error()
		}
		return v.final(), v.String()
	})
	st, reason := v.agentStep()
	switch {
	case wantSucceeded && v.State != api.RolloutSucceeded:
		t.Errorf("got %s; want it succeeded", v)
	case v.State == api.RolloutHalted && (v.Reason == "" || reason == ""):
		t.Errorf("got %s; want a halted rollout and its agent's step to say why", v)
	case v.State == api.RolloutSucceeded && st != api.UpgradeSucceeded:
		t.Errorf("got %s; want web-1's step succeeded in a succeeded rollout", v)
	}
	settle(t, "web-1 connected at the version of its binary on disk, no upgrade in flight", func() (bool, string) {
		r, _ := e.agentRow()
		disk, phase := e.installedVersion(), upgradePhase(e.agent.home)
		seen := fmt.Sprintf("%s, binary on disk %s, upgrade phase %q", r, disk, phase)
		// Received and swapped are the phases of an upgrade in flight.
		return r.Connected && r.Version == disk && phase != "received" && phase != "swapped", seen
	})
	if v.State == api.RolloutSucceeded {
		if got := e.installedVersion(); got != "2.0.0" {
			t.Errorf("after a succeeded rollout: binary on disk %s; want 2.0.0", got)
		}
	}
	return v
}

// --- Backups ---

// backupCmd backs up node n into a new file and returns its path and how
// the command ended.
func (e *faultEnv) backupCmd(n *faultNode) (string, <-chan cliResult) {
	dir := e.t.TempDir()
	pass := filepath.Join(dir, "passphrase")
	if err := os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "tendril.backup")
	os.MkdirAll(filepath.Dir(out), 0o755)
	return out, e.cliAsync(n, "backup", "--out", out, "--passphrase-file", pass)
}

// checkBackup checks how a backup ended: a whole archive that restores, or
// a one-line reason and no archive, nothing half written.
func (e *faultEnv) checkBackup(out string, r cliResult) (ok bool) {
	t := e.t
	t.Helper()
	entries, _ := os.ReadDir(filepath.Dir(out))
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	if r.code != 0 {
		if r.stderr == "" || strings.Contains(r.stderr, "\n") {
			t.Errorf("failed backup (exit %d): stderr %q; want one line saying why", r.code, r.stderr)
		}
		if len(names) != 0 {
			t.Errorf("failed backup (%s): left %v beside it; want nothing", r.stderr, names)
		}
		return false
	}
	if len(names) != 1 || names[0] != filepath.Base(out) {
		t.Errorf("backup: the folder holds %v; want the archive alone", names)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	if _, err := run(t, "tendril-server", "restore", "--in", out, "--data", restored,
		"--passphrase-file", filepath.Join(filepath.Dir(filepath.Dir(out)), "passphrase")); err != nil {
		t.Errorf("restore the backup: %v", err)
	}
	return true
}

// snapshotsLeft lists the database snapshots left in a data folder.
func snapshotsLeft(data string) []string {
	m, _ := filepath.Glob(filepath.Join(data, backup.SnapshotPrefix+"*"))
	return m
}

// --- Certificate rotations ---

type faultRotation struct {
	Thumbprint string   `json:"thumbprint"`
	Notified   int      `json:"notified"`
	Failed     []string `json:"failed"`
	Behind     []string `json:"behind"`
	Stranded   []string `json:"stranded"`
}

func (e *faultEnv) rotate(n *faultNode) (faultRotation, error) {
	var r faultRotation
	out, err := e.cli(n, "certificate", "rotate", "--json")
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal([]byte(out), &r)
}

func (e *faultEnv) thumbprint(n *faultNode) string {
	e.t.Helper()
	return strings.TrimSpace(e.mustCLI(n, "thumbprint"))
}

// waitAnnouncing waits until node n has made its next certificate and is
// telling the agents about it.
func (e *faultEnv) waitAnnouncing(n *faultNode) {
	e.t.Helper()
	waitFor(e.t, "node "+n.name+" announcing its next certificate", func() bool {
		_, err := os.Stat(filepath.Join(n.data, datadir.NextCertFile))
		return err == nil
	})
}

// checkRotated checks, after a fault in a rotation, that the agent is
// connected, that a rotation through node n now tells it, and that it
// connects again with the certificate that rotation made.
func (e *faultEnv) checkRotated(n *faultNode) {
	t := e.t
	t.Helper()
	node := ""
	if len(e.nodes) > 1 {
		// The agent is held to n (the other nodes refuse it), whose
		// certificate is the one to check.
		node = n.name
		for _, o := range e.nodes {
			if o != n {
				o.proxy.SetRefuse(true)
				defer o.proxy.SetRefuse(false)
			}
		}
		if r, _ := e.agentRow(); r.Node != n.name {
			e.cutAgentLinks()
		}
	}
	e.waitAgent("web-1 connected and healthy after the fault", node)
	r, err := e.rotate(n)
	if err != nil {
		t.Fatalf("a rotation after the fault: %v", err)
	}
	if r.Notified != 1 || len(r.Failed) != 0 || len(r.Behind) != 0 {
		t.Errorf("a rotation after the fault: notified %d, failed %v, behind %v; want web-1 told", r.Notified, r.Failed, r.Behind)
	}
	if got := e.thumbprint(n); got != r.Thumbprint {
		t.Errorf("node %s serves %s after rotating to %s", n.name, got, r.Thumbprint)
	}
	e.cutAgentLinks()
	e.waitAgent("web-1 reconnected with the rotated certificate", node)
}

// === coordinator-kill ===

func coordinatorKillTask(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	id := e.createTask(a, e.taskScript(taskLines, 0, true))
	e.waitRunning(id)
	e.kill(a)
	e.openGate(id)
	e.waitScriptEnd(id) // the task ends while the coordinator is down
	e.restart(a)
	e.checkTask(id, taskWant{lines: taskLines})
}

func coordinatorKillPush(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	e.drip(true)
	from := a.proxy.BytesForwarded()
	if _, err := e.pushCalamari(a, "2.0.0", bundleFiller); err != nil {
		t.Fatal(err)
	}
	waitTransfer(t, a.proxy, from, "Calamari 2.0.0 to web-1")
	e.kill(a)
	e.drip(false)
	e.restart(a)
	e.checkCalamari("2.0.0")
}

func coordinatorKillRollout(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	e.drip(true)
	from := a.proxy.BytesForwarded()
	id := e.mustStartRollout(a)
	waitTransfer(t, a.proxy, from, "the agent package to web-1")
	e.kill(a)
	e.drip(false)
	e.restart(a)
	e.checkRollout(id, true)
}

func coordinatorKillBackup(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	// A database of some size (a task's 10 MiB log), so that taking its
	// snapshot lasts long enough to be killed in.
	big := e.createTask(a, e.taskScript(10000, 1024, false))
	e.checkTask(big, taskWant{lines: 10000})
	created := watchCreated(t, a.data)
	out, done := e.backupCmd(a)
	deadline := time.After(settleWithin)
	for killed := false; !killed; {
		select {
		case name := <-created:
			if strings.HasPrefix(name, backup.SnapshotPrefix) {
				e.kill(a) // mid-snapshot
				killed = true
			}
		case r := <-done:
			t.Fatalf("the backup ended (exit %d %s) before its snapshot appeared in the data folder; want to kill the coordinator while it takes it", r.code, r.stderr)
		case <-deadline:
			t.Fatalf("no snapshot in the data folder %s after the backup started; want one to kill the coordinator during", settleWithin)
		}
	}
	r := await(t, "the backup", done)
	t.Logf("backup during the kill: exit %d %s", r.code, r.stderr)
	e.checkBackup(out, r)
	e.restart(a)
	e.waitAgent("web-1 back after the restart", "")
	out, done = e.backupCmd(a)
	if !e.checkBackup(out, await(t, "a backup after the restart", done)) {
		t.Error("a backup after the restart failed; want it to succeed")
	}
	// The killed backup's snapshot is the coordinator's own temporary
	// file, as large as its database.
	if left := snapshotsLeft(a.data); len(left) != 0 {
		t.Errorf("snapshots left in the data folder after a backup: %v; want none", left)
	}
}

// watchCreated reports the names of the files created in dir from now
// until the test ends (inotify: a snapshot lives for milliseconds).
func watchCreated(t *testing.T, dir string) <-chan string {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CREATE); err != nil {
		syscall.Close(fd)
		t.Fatalf("inotify watch %s: %v", dir, err)
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: Close ends a Read
	names := make(chan string, 64)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := buf[off+syscall.SizeofInotifyEvent : off+syscall.SizeofInotifyEvent+int(ev.Len)]
				off += syscall.SizeofInotifyEvent + int(ev.Len)
				select {
				case names <- strings.TrimRight(string(name), "\x00"):
				default: // nobody is listening any more
				}
			}
		}
	}()
	t.Cleanup(func() { f.Close(); <-stopped })
	return names
}

func coordinatorKillRotation(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	// The agent does not answer while the proxy holds its link, so the
	// coordinator is killed mid-announcement.
	a.proxy.Pause()
	done := e.cliAsync(a, "certificate", "rotate", "--json")
	e.waitAnnouncing(a)
	e.kill(a)
	a.proxy.Resume()
	r := await(t, "certificate rotate whose coordinator was killed", done)
	t.Logf("rotation during the kill: exit %d %s", r.code, r.stderr)
	if r.code == 0 {
		t.Errorf("certificate rotate: exit 0 though its coordinator was killed before answering")
	}
	e.restart(a)
	e.checkRotated(a)
}

// === agent-kill ===

func agentKillTask(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	id := e.createTask(a, e.taskScript(taskLines, 0, true))
	e.waitRunning(id)
	e.agent.sup.kill9() // its supervisor starts it again
	e.openGate(id)
	e.checkTask(id, taskWant{states: []string{api.TaskSucceeded, api.TaskFailed}, lines: taskLines, interrupted: true})
	// A task after the restart runs.
	next := e.createTask(a, e.taskScript(3, 0, false))
	e.checkTask(next, taskWant{lines: 3})
}

func agentKillPush(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	e.drip(true)
	from := a.proxy.BytesForwarded()
	if _, err := e.pushCalamari(a, "2.0.0", bundleFiller); err != nil {
		t.Fatal(err)
	}
	waitTransfer(t, a.proxy, from, "Calamari 2.0.0 to web-1")
	e.agent.sup.kill9()
	e.drip(false)
	e.checkCalamari("2.0.0")
}

func agentKillRollout(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	e.drip(true)
	from := a.proxy.BytesForwarded()
	id := e.mustStartRollout(a)
	waitTransfer(t, a.proxy, from, "the agent package to web-1")
	e.agent.sup.kill9()
	e.drip(false)
	// The agent died before it had the package: the step starts again
	// with the agent back, from what it kept.
	e.checkRollout(id, true)
}

func agentKillRotation(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	a.proxy.Pause()
	done := e.cliAsync(a, "certificate", "rotate", "--json")
	e.waitAnnouncing(a)
	e.agent.sup.kill9()
	a.proxy.Resume()
	r := await(t, "certificate rotate whose agent was killed", done)
	if r.code != 0 {
		t.Errorf("certificate rotate with an agent killed: exit %d %s; want the rotation done, the agent learning on reconnect", r.code, r.stderr)
	}
	e.checkRotated(a)
}

// === node-kill ===

func nodeKillTask(t *testing.T, e *faultEnv) {
	a, b := e.nodes[0], e.nodes[1]
	// Created through b for the agent a holds; the second waits for the
	// first (isolation full), so it is queued when a dies.
	id := e.createTask(b, e.taskScript(taskLines, 0, true))
	e.waitRunning(id)
	queued := e.createTask(b, e.taskScript(3, 0, false))
	e.kill(a)
	e.openGate(id)
	e.waitAgent("web-1 on node b", "b")
	e.checkTask(id, taskWant{lines: taskLines})
	e.checkTask(queued, taskWant{lines: 3})
}

func nodeKillPush(t *testing.T, e *faultEnv) {
	a, b := e.nodes[0], e.nodes[1]
	e.drip(true)
	from := a.proxy.BytesForwarded()
	if _, err := e.pushCalamari(b, "2.0.0", bundleFiller); err != nil {
		t.Fatal(err)
	}
	waitTransfer(t, a.proxy, from, "Calamari 2.0.0 from node a to web-1")
	e.kill(a)
	e.drip(false)
	e.checkCalamari("2.0.0")
}

func nodeKillRollout(t *testing.T, e *faultEnv) {
	a, b := e.nodes[0], e.nodes[1]
	e.drip(true)
	from := a.proxy.BytesForwarded()
	id := e.mustStartRollout(b)
	waitTransfer(t, a.proxy, from, "the agent package from node a to web-1")
	e.kill(a)
	e.drip(false)
	e.checkRollout(id, true)
}

func nodeKillRotation(t *testing.T, e *faultEnv) {
	a, b := e.nodes[0], e.nodes[1]
	// b rotates while the agent is on a; a dies, and the agent must take
	// b's new certificate, which it was never told of, by its
	// endorsement.
	r, err := e.rotate(b)
	if err != nil {
		t.Fatal(err)
	}
	e.kill(a)
	e.waitAgent("web-1 on node b, which serves its rotated certificate", "b")
	if got := e.thumbprint(b); got != r.Thumbprint {
		t.Errorf("node b serves %s; want its rotated %s", got, r.Thumbprint)
	}
	e.checkRotated(b)
}

// === postgres-stop ===

func postgresStopTask(t *testing.T, e *faultEnv) {
	a, b := e.nodes[0], e.nodes[1]
	id := e.createTask(b, e.taskScript(taskLines, 0, true))
	e.waitRunning(id)
	back := e.stopPostgres(func() {
		e.openGate(id)
		e.waitScriptEnd(id) // the task ends during the outage
		// What needs the database says so.
		_, err := e.cli(a, "task", "show", id, "--json")
		wantRefusal(t, "task show during the outage", err, 503, "database is unreachable")
	})
	e.checkTask(id, taskWant{lines: taskLines, endedBy: back})
}

func postgresStopPush(t *testing.T, e *faultEnv) {
	b := e.nodes[1]
	e.stopPostgres(func() {
		_, err := e.pushCalamari(b, "2.0.0", 0)
		wantRefusal(t, "calamari push during the outage", err, 503, "database is unreachable")
	})
	if _, err := e.pushCalamari(b, "2.0.0", bundleFiller); err != nil {
		t.Fatalf("calamari push after the outage: %v", err)
	}
	e.checkCalamari("2.0.0")
}

func postgresStopRollout(t *testing.T, e *faultEnv) {
	a, b := e.nodes[0], e.nodes[1]
	e.drip(true)
	from := a.proxy.BytesForwarded()
	id := e.mustStartRollout(b)
	waitTransfer(t, a.proxy, from, "the agent package to web-1")
	e.stopPostgres(func() { e.drip(false) })
	e.checkRollout(id, true)
}

func postgresStopRotation(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	before := e.thumbprint(a)
	e.stopPostgres(func() {
		_, err := e.rotate(a)
		wantRefusal(t, "certificate rotate during the outage", err, 503, "database is unreachable")
	})
	if got := e.thumbprint(a); got != before {
		t.Errorf("node a after a refused rotation: serves %s; want %s still", got, before)
	}
	e.checkRotated(a)
}

// === agent-disk-full ===

func agentDiskFullTask(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	id := e.createTask(a, e.taskScript(taskLines, 0, true))
	e.waitRunning(id)
	free := tmpfstest.Fill(t, e.agentMount)
	e.openGate(id) // its output meets a full disk
	e.waitScriptEnd(id)
	// While the disk is full the task ends, or says what holds it.
	e.waitTaskShown(id)
	// A task created while the disk is full fails with the agent's
	// reason, or waits saying why.
	second := e.createTask(a, e.taskScript(3, 0, false))
	if v := e.waitTaskShown(second); v.final() && v.State != api.TaskSucceeded && v.Error == "" {
		t.Errorf("task %s created on a full disk: %s; want the agent's reason", second, v)
	}
	free()
	e.waitAgent("web-1 healthy with space again", "")
	// The task keeps its real end: the script succeeded.
	e.checkTask(id, taskWant{lines: taskLines})
	v := e.waitTaskFinal(second)
	if v.State == api.TaskSucceeded {
		e.checkTask(second, taskWant{lines: 3})
	} else {
		e.checkTask(second, taskWant{states: []string{api.TaskFailed}, lines: -1, refused: true})
	}
	// And tasks run again.
	third := e.createTask(a, e.taskScript(3, 0, false))
	e.checkTask(third, taskWant{lines: 3})
}

func agentDiskFullPush(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	free := tmpfstest.Fill(t, e.agentMount)
	if _, err := e.pushCalamari(a, "2.0.0", bundleFiller); err != nil {
		t.Fatal(err) // the coordinator's disk has room
	}
	// An update to the full agent ends, saying why.
	done := e.cliAsync(a, "calamari", "update", "--agent", e.agent.name, "--json")
	r := await(t, "calamari update to an agent whose disk is full", done)
	var res []api.UpdateResult
	json.Unmarshal([]byte(r.stdout), &res)
	if len(res) != 1 || res[0].Result != "failed" || !strings.Contains(res[0].Error, "space") {
		t.Errorf("calamari update to a full agent: exit %d, %s %s; want the result failed, saying there is no space", r.code, strings.TrimSpace(r.stdout), r.stderr)
	}
	if row, _ := e.agentRow(); !row.Connected {
		t.Errorf("with its disk full: %s; want the agent still connected", row)
	}
	free()
	e.checkCalamari("2.0.0")
}

func agentDiskFullRollout(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	free := tmpfstest.Fill(t, e.agentMount)
	id := e.mustStartRollout(a)
	v := e.waitRolloutSays(id, "no space")
	if _, reason := v.agentStep(); v.final() && !strings.Contains(reason, "no space") {
		t.Errorf("rollout to an agent whose disk is full: %s; want web-1's step to say there is no space", v)
	}
	// Meanwhile the agent runs on, at its version.
	if r, _ := e.agentRow(); !r.Connected || r.Version != "1.0.0" {
		t.Errorf("with its disk full during a rollout: %s; want it connected at 1.0.0", r)
	}
	free()
	if v, _ = e.rollout(id); v.final() {
		// Ended for the full disk: the operator upgrades again.
		e.checkRollout(id, false)
		id = e.mustStartRollout(a)
	}
	e.checkRollout(id, true)
}

func agentDiskFullRotation(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	free := tmpfstest.Fill(t, e.agentMount)
	r, err := e.rotate(a)
	if err != nil {
		t.Fatalf("certificate rotate with an agent's disk full: %v; want the coordinator to rotate", err)
	}
	t.Logf("rotation with the agent's disk full: notified %d, failed %v", r.Notified, r.Failed)
	if row, _ := e.agentRow(); !row.Connected {
		t.Errorf("with its disk full: %s; want the agent still connected", row)
	}
	free()
	e.checkRotated(a)
}

// === coordinator-disk-full ===

func coordinatorDiskFullTask(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	// Lines of 1 KiB, 5 MiB in all: more than the database can put in
	// room it already has.
	const lines = 5000
	id := e.createTask(a, e.taskScript(lines, 1024, true))
	e.waitRunning(id)
	free := tmpfstest.Fill(t, e.dataMount)
	e.openGate(id)
	e.waitScriptEnd(id)
	// The coordinator keeps serving, and the task says what holds it.
	if _, ok := e.agentRow(); !ok {
		t.Error("agents list with the data folder full: no answer; want the coordinator serving")
	}
	e.waitTaskShown(id)
	free()
	e.checkTask(id, taskWant{lines: lines})
}

func coordinatorDiskFullPush(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	free := tmpfstest.Fill(t, e.dataMount)
	_, err := e.pushCalamari(a, "2.0.0", bundleFiller)
	wantRefusal(t, "calamari push with the data folder full", err, 507, "no space left in the data folder")
	if _, ok := e.agentRow(); !ok {
		t.Error("agents list with the data folder full: no answer; want the coordinator serving")
	}
	free()
	if out := e.mustCLI(a, "calamari", "list", "--json"); strings.Contains(out, `"2.0.0"`) {
		t.Errorf("calamari list after a refused push: %s; want 2.0.0 absent", out)
	}
	if _, err := e.pushCalamari(a, "2.0.0", bundleFiller); err != nil {
		t.Fatalf("calamari push with space again: %v", err)
	}
	e.checkCalamari("2.0.0")
}

func coordinatorDiskFullRollout(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	e.drip(true)
	from := a.proxy.BytesForwarded()
	id := e.mustStartRollout(a)
	waitTransfer(t, a.proxy, from, "the agent package to web-1")
	free := tmpfstest.Fill(t, e.dataMount)
	e.drip(false)
	// The agent swaps to the new version while the coordinator cannot
	// record it.
	settle(t, "web-1's binary on disk at 2.0.0", func() (bool, string) {
		v := e.installedVersion()
		return v == "2.0.0", "binary on disk " + v
	})
	free()
	e.checkRollout(id, true)
}

func coordinatorDiskFullBackup(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	free := tmpfstest.Fill(t, e.dataMount)
	out, done := e.backupCmd(a)
	r := await(t, "a backup with the data folder full", done)
	if r.code == 0 {
		t.Errorf("backup with the data folder full: exit 0; want a refusal")
	}
	wantRefusal(t, "backup with the data folder full", errors.New(r.stderr), 507, "no space left in the data folder")
	e.checkBackup(out, r)
	if _, ok := e.agentRow(); !ok {
		t.Error("agents list with the data folder full: no answer; want the coordinator serving")
	}
	free()
	out, done = e.backupCmd(a)
	if !e.checkBackup(out, await(t, "a backup with space again", done)) {
		t.Error("a backup with space again failed; want it to succeed")
	}
}

func coordinatorDiskFullRotation(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	before := e.thumbprint(a)
	free := tmpfstest.Fill(t, e.dataMount)
	_, err := e.rotate(a)
	wantRefusal(t, "certificate rotate with the data folder full", err, 507, "no space left in the data folder")
	if got := e.thumbprint(a); got != before {
		t.Errorf("after a refused rotation: serves %s; want %s still", got, before)
	}
	if row, _ := e.agentRow(); !row.Connected {
		t.Errorf("with the data folder full: %s; want the agent still connected", row)
	}
	free()
	e.checkRotated(a)
}

// === connection-cut ===

func connectionCutTask(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	// The create's answer is lost on the way back: the command sends it
	// again, and the coordinator answers with the task it made.
	ri, err := api.ReadRunInfo(a.data)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(a.data, api.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	httpProxy, err := faultproxy.New(ri.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { httpProxy.Close() })
	httpProxy.CutReplies(1)
	before := e.tasks()
	out, err := run(t, "tendril-server", "task", "run", "--url", "http://"+httpProxy.Addr(), "--api-key", strings.TrimSpace(string(key)),
		"--agent", e.agent.name, "--json", "--", "run-script", "--inline", e.taskScript(taskLines, 0, true))
	if err != nil {
		t.Fatalf("task run whose answer was cut: %v", err)
	}
	id := oneTaskID(t, out)
	if n := httpProxy.Accepted(); n < 2 {
		t.Errorf("task run through a proxy cutting its first answer: %d connections; want the cut one and the retry", n)
	}
	if n := e.tasks() - before; n != 1 {
		t.Errorf("task run whose answer was cut: %d tasks made; want 1", n)
	}
	// The log is cut on its way from the agent.
	e.waitRunning(id)
	a.proxy.Pause()
	e.openGate(id)
	e.waitScriptEnd(id)
	a.proxy.KillAll()
	a.proxy.Resume()
	e.checkTask(id, taskWant{lines: taskLines})
}

func connectionCutPush(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	e.drip(true)
	from := a.proxy.BytesForwarded()
	if _, err := e.pushCalamari(a, "2.0.0", bundleFiller); err != nil {
		t.Fatal(err)
	}
	waitTransfer(t, a.proxy, from, "Calamari 2.0.0 to web-1")
	e.cutAgentLinks()
	e.drip(false)
	e.checkCalamari("2.0.0")
}

func connectionCutRollout(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	e.drip(true)
	from := a.proxy.BytesForwarded()
	id := e.mustStartRollout(a)
	waitTransfer(t, a.proxy, from, "the agent package to web-1")
	e.cutAgentLinks()
	e.drip(false)
	e.checkRollout(id, true)
}

func connectionCutRotation(t *testing.T, e *faultEnv) {
	a := e.nodes[0]
	a.proxy.Pause()
	done := e.cliAsync(a, "certificate", "rotate", "--json")
	e.waitAnnouncing(a)
	a.proxy.KillAll()
	a.proxy.Resume()
	r := await(t, "certificate rotate whose announcement was cut", done)
	if r.code != 0 {
		t.Errorf("certificate rotate with the agent's link cut: exit %d %s; want the rotation done, the agent learning on reconnect", r.code, r.stderr)
	}
	e.checkRotated(a)
}
