package server

// High availability: several coordinator nodes in this process, sharing
// one PostgreSQL database (internal/pgtest), each with its own copy of
// the data folder, as an operator runs them on several hosts; real agents
// over real TLS.

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

// haHeartbeat is the nodes' heartbeat in these tests: a node is dead
// 1.5 s after its last one.
const haHeartbeat = 500 * time.Millisecond

// haCluster is a database and the data folder init made for it.
type haCluster struct {
	t   *testing.T
	url string
	dir string
}

func newHACluster(t *testing.T) *haCluster {
	t.Helper()
	url := pg.Cluster(t).NewDatabase(t)
	dir := t.TempDir()
	if _, err := datadir.InitWith(context.Background(), dir, datadir.InitOptions{Database: url}); err != nil {
		t.Fatal(err)
	}
	return &haCluster{t: t, url: url, dir: dir}
}

// node starts a coordinator node named name on a copy of the data folder.
func (c *haCluster) node(name string, mod func(*Config)) *testServer {
	c.t.Helper()
	dir := c.t.TempDir()
	servertest.CopyDir(c.t, c.dir, dir)
	return c.nodeIn(dir, name, mod)
}

// nodeIn starts a node on a data folder of its own, e.g. to restart it.
func (c *haCluster) nodeIn(dir, name string, mod func(*Config)) *testServer {
	c.t.Helper()
	st, err := sqlstore.OpenPostgres(context.Background(), c.url)
	if err != nil {
		c.t.Fatal(err)
	}
	return runServer(c.t, dir, func(cfg *Config) {
		cfg.Store, cfg.NodeName, cfg.HeartbeatInterval = st, name, haHeartbeat
		cfg.Logger = zaptest.NewLogger(c.t).Named(name)
		if mod != nil {
			mod(cfg)
		}
	})
}

// haAgent registers a real agent with a token from ts and the given
// coordinator addresses (the first is tried first), and runs it.
func haAgent(t *testing.T, ts *testServer, name string, servers ...string) *runningAgent {
	t.Helper()
	home := t.TempDir()
	tok, err := ts.CreateToken(context.Background(), "Test", time.Hour, servers)
	if err != nil {
		t.Fatal(err)
	}
	j, err := protocol.ParseJoin(tok.Join)
	if err != nil {
		t.Fatal(err)
	}
	_, err = agent.Register(context.Background(), agent.RegisterConfig{
		Home: home, Servers: j.Servers, ServerThumbprint: j.Thumbprint, Token: j.Token, Name: name,
		Version: "1.2.3", Logger: zaptest.NewLogger(t).Named(name),
	})
	if err != nil {
		t.Fatal(err)
	}
	return startAgent(t, home, nil)
}

// connectedTo waits until the agent is connected to the named node.
func (ts *testServer) connectedTo(t *testing.T, agentName, node string) {
	t.Helper()
	eventually(t, agentName+" connected to node "+node, func() bool {
		v := ts.agentView(t, agentName)
		return v.Connected && v.Node == node
	})
}

func nodeNamed(t *testing.T, ts *testServer, name string) api.NodeView {
	t.Helper()
	all, err := ts.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range all {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no node %s in %+v", name, all)
	return api.NodeView{}
}

func (ts *testServer) task(t *testing.T, id string) store.Task {
	t.Helper()
	task, err := ts.store.Task(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func (ts *testServer) startTaskOn(t *testing.T, agentName, script string) string {
	t.Helper()
	views, err := ts.CreateTasks(context.Background(), api.TaskRequest{Agent: agentName, Args: []string{"run-script", "--inline", script}})
	if err != nil {
		t.Fatal(err)
	}
	return views[0].ID
}

func (ts *testServer) waitTask(t *testing.T, id, state string) store.Task {
	t.Helper()
	var task store.Task
	eventually(t, "task "+id+" "+state, func() bool {
		task = ts.task(t, id)
		return task.State == state
	})
	return task
}

func (ts *testServer) waitLog(t *testing.T, id, text string) {
	t.Helper()
	eventually(t, "task "+id+" to log "+text, func() bool {
		l, _ := ts.store.TaskLogs(context.Background(), id, 1, 0)
		return strings.Contains(logText(l), text)
	})
}

// TestNodesShareAgentsAndTasks: two nodes list each other and their
// agents, join strings name both, and a task created through either node
// runs on its agent wherever it is connected, and can be cancelled
// through the other.
func TestNodesShareAgentsAndTasks(t *testing.T) {
	c := newHACluster(t)
	a := c.node("a", nil)
	b := c.node("b", nil)
	ctx := context.Background()

	tok, err := a.CreateToken(ctx, "Test", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := protocol.ParseJoin(tok.Join)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{a.AgentAddr(), b.AgentAddr()}; !slices.Equal(j.Servers, want) {
		t.Fatalf("join string servers: got %v, want %v (this node first, then every live node)", j.Servers, want)
	}

	haAgent(t, a, "on-a", a.AgentAddr(), b.AgentAddr())
	haAgent(t, a, "on-b", b.AgentAddr(), a.AgentAddr())
	a.connectedTo(t, "on-a", "a")
	a.connectedTo(t, "on-b", "b")
	b.connectedTo(t, "on-a", "a")

	eventually(t, "both nodes listed with one agent each", func() bool {
		all, err := a.Nodes(ctx)
		if err != nil || len(all) != 2 {
			return false
		}
		for _, n := range all {
			if !n.Alive || n.State != api.NodeRunning || n.Agents != 1 || n.Version != a.cfg.Version || n.Self != (n.Name == "a") {
				return false
			}
		}
		return all[0].Name == "a" && all[1].Name == "b"
	})

	// Uploaded to a only: b fetches the bundle and the file from the
	// database when it needs them.
	a.upload(t, packBundle(t, "1.0.0", 0))
	resp, body := a.api(t, "POST", "/api/files", "", strings.NewReader("package contents"))
	var file api.FileView
	if resp.StatusCode != 201 || json.Unmarshal(body, &file) != nil {
		t.Fatalf("upload file: %d %s", resp.StatusCode, body)
	}

	// Created through a, run by b, which holds the agent.
	gate := filepath.Join(t.TempDir(), "gate")
	views, err := a.CreateTasks(ctx, api.TaskRequest{Agent: "on-b", File: &api.FileRef{Name: "pkg.txt", SHA256: file.SHA256},
		Args: []string{"run-script", "--inline", `cat "$TENDRIL_FILES/pkg.txt"; echo; echo started; while [ ! -e ` + gate + ` ]; do sleep 0.05; done; echo done`}})
	if err != nil {
		t.Fatal(err)
	}
	id := views[0].ID
	a.waitLog(t, id, "stdout: started")
	if got := a.task(t, id).Node; got != b.nodeID() {
		t.Fatalf("task driven by node %q, want b (%s)", got, b.nodeID())
	}
	if l, _ := a.store.TaskLogs(ctx, id, 1, 0); !strings.Contains(logText(l), "stdout: package contents") {
		t.Fatalf("the file b sent, want its contents in the log:\n%s", logText(l))
	}
	for _, p := range []string{b.bundles.Path("1.0.0"), filepath.Join(b.filesDir(), file.SHA256)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("b's copy: %v", err)
		}
	}
	// Cancelled through a: b stops it.
	if _, err := a.CancelTask(ctx, id); err != nil {
		t.Fatal(err)
	}
	a.waitTask(t, id, api.TaskCancelled)

	// Created through b, run by a.
	id = b.startTaskOn(t, "on-a", "echo from a; exit 4")
	task := b.waitTask(t, id, api.TaskFailed)
	if task.Node != a.nodeID() || task.ExitCode != 4 {
		t.Fatalf("got node %q exit %d, want a (%s) and 4", task.Node, task.ExitCode, a.nodeID())
	}
	if l, _ := b.store.TaskLogs(ctx, id, 1, 0); strings.Count(logText(l), "stdout: from a") != 1 {
		t.Fatalf("want the line exactly once:\n%s", logText(l))
	}

	// Maintenance mode, turned on through a, holds on b too.
	if _, err := a.SetMaintenance(ctx, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b refusing tasks in maintenance", func() bool {
		_, err := b.CreateTasks(ctx, api.TaskRequest{Agent: "on-a", Args: []string{"run-script", "--inline", "true"}})
		return errors.Is(err, kind.ErrConflict) && err.Error() == maintenanceRefusal
	})
	if _, err := b.SetMaintenance(ctx, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a taking tasks again", func() bool {
		return !a.maint.On()
	})

	// An agent deleted through a loses its session on b at once.
	onB := b.sessions.get(b.agentView(t, "on-b").ID)
	if onB == nil {
		t.Fatal("on-b has no session on b")
	}
	if err := a.DeleteAgent(ctx, "on-b"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-onB.sess.CloseChan():
	case <-time.After(30 * time.Second):
		t.Fatal("the deleted agent's session on b still open after 30s")
	}
}

// TestDrainNode: a node drained with a long task running finishes the
// task, new tasks go to the other node, its agents move there, and once
// empty it can be stopped, started again (still draining) and undrained.
func TestDrainNode(t *testing.T) {
	c := newHACluster(t)
	a := c.node("a", nil)
	b := c.node("b", nil)
	ctx := context.Background()
	a.upload(t, packBundle(t, "1.0.0", 0))
	for _, n := range []string{"busy", "idle-1", "idle-2"} {
		haAgent(t, a, n, a.AgentAddr(), b.AgentAddr())
		a.connectedTo(t, n, "a")
	}
	haAgent(t, a, "other", b.AgentAddr(), a.AgentAddr())
	a.connectedTo(t, "other", "b")

	gate := filepath.Join(t.TempDir(), "gate")
	long := a.startTaskOn(t, "busy", `echo started; while [ ! -e `+gate+` ]; do sleep 0.05; done; echo finished`)
	a.waitLog(t, long, "stdout: started")

	if _, err := b.SetNodeDraining(ctx, "nope", true); !errors.Is(err, store.ErrNotFound) ||
		err.Error() != `no coordinator node named "nope" (see tendril-server nodes list)` {
		t.Fatalf("drain an unknown node: got %v", err)
	}
	// Drained through the other node.
	v, err := b.SetNodeDraining(ctx, "a", true)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Draining || v.Drained {
		t.Fatalf("got %+v, want draining, not yet drained", v)
	}
	// Idle agents move at once; the busy one stays for its task.
	a.connectedTo(t, "idle-1", "b")
	a.connectedTo(t, "idle-2", "b")
	if v := a.agentView(t, "busy"); !v.Connected || v.Node != "a" {
		t.Fatalf("busy agent: got connected %v to %q, want still on a", v.Connected, v.Node)
	}
	if v := nodeNamed(t, b, "a"); v.State != api.NodeDraining || v.Tasks != 1 || v.Agents != 1 {
		t.Fatalf("while its task runs: got %+v, want draining with 1 task and 1 agent", v)
	}

	// New tasks, even through the draining node, go to the other one.
	id := a.startTaskOn(t, "idle-1", "echo elsewhere")
	if task := a.waitTask(t, id, api.TaskSucceeded); task.Node != b.nodeID() {
		t.Fatalf("new task driven by %q, want b (%s)", task.Node, b.nodeID())
	}
	queued := a.startTaskOn(t, "busy", "echo after the move")

	// The long task finishes where it ran; then its agent moves too.
	os.WriteFile(gate, nil, 0o644)
	if task := a.waitTask(t, long, api.TaskSucceeded); task.Node != a.nodeID() {
		t.Fatalf("long task finished by %q, want a (%s)", task.Node, a.nodeID())
	}
	a.connectedTo(t, "busy", "b")
	if task := b.waitTask(t, queued, api.TaskSucceeded); task.Node != b.nodeID() {
		t.Fatalf("task queued while busy ran on %q, want b (%s)", task.Node, b.nodeID())
	}
	eventually(t, "a drained", func() bool {
		v := nodeNamed(t, b, "a")
		return v.State == api.NodeDrained && v.Drained && v.Agents == 0 && v.Tasks == 0
	})
	if l, _ := a.store.TaskLogs(ctx, long, 1, 0); strings.Count(logText(l), "stdout: finished") != 1 {
		t.Fatalf("long task log, want its last line once:\n%s", logText(l))
	}

	// Stopped, upgraded, started again: it is still draining.
	a.stop()
	if v := nodeNamed(t, b, "a"); v.State != api.NodeStopped || v.Alive {
		t.Fatalf("after stopping: got %+v, want stopped", v)
	}
	a2 := c.nodeIn(a.dir, "a", nil)
	if v := nodeNamed(t, a2, "a"); v.State != api.NodeDrained || !v.Self || !v.Draining {
		t.Fatalf("restarted: got %+v, want drained, as it stopped", v)
	}
	if v, err = a2.SetNodeDraining(ctx, "a", false); err != nil || v.State != api.NodeRunning {
		t.Fatalf("undrain: got %+v, %v; want running", v, err)
	}
	// It takes agents again: one that tries it first connects to it.
	haAgent(t, a2, "new", a2.AgentAddr(), b.AgentAddr())
	a2.connectedTo(t, "new", "a")
}

// TestRolloutAcrossNodes: each node upgrades the agents connected to it,
// one node drives the batches.
func TestRolloutAcrossNodes(t *testing.T) {
	c := newHACluster(t)
	a := c.node("a", nil)
	b := c.node("b", nil)
	a.pushPackage(t, "2.0.0", "linux", "amd64") // b fetches it
	x := newFakeAgent(t, a, "x", "Prod", "1.0.0")
	y := newFakeAgent(t, b, "y", "Prod", "1.0.0")
	v, err := b.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Prod", Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	if v = a.waitRollout(t, v.ID); v.State != api.RolloutSucceeded || v.Counts[api.UpgradeSucceeded] != 2 {
		t.Fatalf("got %s (%s) %v, want succeeded for both", v.State, v.Reason, agentStates(v))
	}
	if x.offerCount() != 1 || y.offerCount() != 1 {
		t.Fatalf("offers: x %d, y %d; want one each", x.offerCount(), y.offerCount())
	}
	r, err := a.store.Rollout(context.Background(), v.ID)
	if err != nil || r.Node != b.nodeID() {
		t.Fatalf("rollout driven by %q (%v), want b, which started it", r.Node, err)
	}
}

// TestRolloutHandedOverByDrainingNode: a node draining hands the
// rollouts it drives to another node, which finishes them.
func TestRolloutHandedOverByDrainingNode(t *testing.T) {
	c := newHACluster(t)
	a := c.node("a", nil)
	b := c.node("b", nil)
	ctx := context.Background()
	a.pushPackage(t, "2.0.0", "linux", "amd64")
	x := newFakeAgent(t, b, "x", "Prod", "1.0.0")
	x.set(func(f *fakeAgent) { f.running = 1 }) // holds the rollout until told
	b.checkAllHealth()
	v, err := a.rollouts.StartRollout(ctx, api.RolloutRequest{Environment: "Prod"})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := a.store.Rollout(ctx, v.ID); r.Node != a.nodeID() {
		t.Fatalf("rollout driven by %q, want a, which started it", r.Node)
	}
	if _, err := b.SetNodeDraining(ctx, "a", true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b driving the rollout", func() bool {
		r, _ := a.store.Rollout(ctx, v.ID)
		return r.Node == b.nodeID()
	})
	eventually(t, "a drained", func() bool { return nodeNamed(t, b, "a").Drained })
	x.set(func(f *fakeAgent) { f.running = 0 })
	b.checkAllHealth()
	if v = b.waitRollout(t, v.ID); v.State != api.RolloutSucceeded {
		t.Fatalf("got %s (%s), want succeeded", v.State, v.Reason)
	}
}

// TestNodeNameInUse: a node waits for a previous run of its name that
// was killed to count as dead, and refuses a name a running node has.
func TestNodeNameInUse(t *testing.T) {
	c := newHACluster(t)
	ctx := context.Background()
	st, err := sqlstore.OpenPostgres(ctx, c.url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A run of "a" killed a moment ago: it beat once and no more.
	if _, err := st.RegisterNode(ctx, store.Node{ID: "killed", Name: "a", Advertise: "127.0.0.1:1", Version: "1.0.0",
		StartedAt: time.Now().UTC(), HeartbeatEvery: haHeartbeat}); err != nil {
		t.Fatal(err)
	}
	a := c.node("a", nil)
	if v := nodeNamed(t, a, "a"); !v.Self || v.State != api.NodeRunning {
		t.Fatalf("got %+v, want this run of a, running", v)
	}

	dir := t.TempDir()
	servertest.CopyDir(t, c.dir, dir)
	st2, err := sqlstore.OpenPostgres(ctx, c.url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0", Store: st2, NodeName: "a",
		HeartbeatInterval: haHeartbeat, Logger: zaptest.NewLogger(t)})
	if !errors.Is(err, store.ErrNodeAlive) || !strings.Contains(err.Error(), `another coordinator runs with node name "a"; give each node its own --node-name`) {
		t.Fatalf("second node named a: got %v", err)
	}
}

// TestAgentLearnsNodes: an agent that registered with one node's address
// learns the others' from its Welcome, and connects to one of them when
// its node stops.
func TestAgentLearnsNodes(t *testing.T) {
	c := newHACluster(t)
	a := c.node("a", nil)
	b := c.node("b", nil)
	eventually(t, "a to see b", func() bool { return slices.Equal(a.members.WelcomeServers(), []string{a.AgentAddr(), b.AgentAddr()}) })
	ra := haAgent(t, a, "web-1", a.AgentAddr())
	a.connectedTo(t, "web-1", "a")
	// The agent saves what it learned once welcomed, which the
	// coordinator may see as connected a moment before.
	var st agent.State
	eventually(t, "the agent to learn b's address", func() bool {
		var err error
		st, err = agent.LoadState(ra.home)
		return err == nil && len(st.LearnedServers) > 0
	})
	if !slices.Equal(st.Servers, []string{a.AgentAddr()}) || !slices.Equal(st.LearnedServers, []string{b.AgentAddr()}) {
		t.Fatalf("agent state: servers %v learned %v, want %v and %v", st.Servers, st.LearnedServers, a.AgentAddr(), b.AgentAddr())
	}
	a.stop()
	b.connectedTo(t, "web-1", "b")
}
