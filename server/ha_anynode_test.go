package server

// Any node answers for any agent: per-agent actions asked through a node
// other than the one holding the agent's session, a node killed under
// them, an agent's tasks taken over as soon as it reconnects elsewhere,
// and the agents of a node that stopped beating as the listing shows
// them.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/diagnostics"
	"github.com/tendrildeploy/tendril/server/store"
)

// kill stops a node as kill -9 would: nothing more reaches the database
// (no disconnect and no stop are recorded: its heartbeat goes stale, and
// its agents' records still name it), its agents' sessions and its API
// connections are cut without a word, and it takes no new ones.
func (ts *testServer) kill() {
	ts.store.Close()
	ts.agentLn.Close()
	ts.cut()
	ts.stop()
}

// updateThrough asks ts's API for a Calamari update of one agent.
func updateThrough(t *testing.T, ts *testServer, agentName string) api.UpdateResult {
	t.Helper()
	resp, body := ts.api(t, "POST", "/api/calamari/update", "", strings.NewReader(`{"agent":"`+agentName+`"}`))
	var res []api.UpdateResult
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &res) != nil || len(res) != 1 {
		t.Fatalf("POST /api/calamari/update: got %d %s, want 200 and one result", resp.StatusCode, body)
	}
	return res[0]
}

// noCallsLeft checks that the calls between nodes, and the files they
// carried, were deleted once answered.
func noCallsLeft(t *testing.T, ts *testServer) {
	t.Helper()
	ctx := context.Background()
	later := time.Now().Add(time.Hour)
	if n, err := ts.store.PruneNodeCalls(ctx, later); err != nil || n != 0 {
		t.Errorf("calls left in the database: %d (%v), want none", n, err)
	}
	if n, err := ts.store.DeleteBlobs(ctx, cluster.CallBlobPrefix, later); err != nil || n != 0 {
		t.Errorf("call files left in the database: %d (%v), want none", n, err)
	}
}

// TestPerAgentActionsThroughAnyNode: a Calamari update, a health check
// and diagnostics asked through the node that does not hold the agent's
// session are done by the node that does, and answered as if local.
func TestPerAgentActionsThroughAnyNode(t *testing.T) {
	c := newHACluster(t)
	a := c.node("a", nil)
	b := c.node("b", nil)
	haAgent(t, a, "web-1", a.AgentAddr(), b.AgentAddr())
	a.connectedTo(t, "web-1", "a")
	b.connectedTo(t, "web-1", "a")
	// Its first check done, nothing checks it again by itself for an
	// hour, nor pushes Calamari to it.
	eventually(t, "web-1's first health check", func() bool { return a.agentView(t, "web-1").LastHealthAt != "" })
	b.upload(t, packBundle(t, "1.0.0", 0))

	if got := updateThrough(t, b, "web-1"); got.Result != "installed" || got.Version != "1.0.0" || got.Error != "" {
		t.Fatalf("calamari update through b: got %+v, want 1.0.0 installed", got)
	}
	if v := b.agentView(t, "web-1"); v.CalamariVersion != "1.0.0" || !v.CalamariCurrent {
		t.Errorf("after the update: got calamari %q (current %v), want 1.0.0", v.CalamariVersion, v.CalamariCurrent)
	}
	if got := updateThrough(t, b, "web-1"); got.Result != "current" {
		t.Errorf("second update through b: got %+v, want current", got)
	}

	rec, err := b.store.AgentByName(context.Background(), "web-1")
	if err != nil {
		t.Fatal(err)
	}
	resp, body := b.api(t, "POST", "/api/agents/web-1/health-check", "", nil)
	var v api.AgentView
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &v) != nil {
		t.Fatalf("health check through b: got %d %s, want 200", resp.StatusCode, body)
	}
	if !v.Connected || v.Node != "a" || v.NodeState != api.NodeRunning || v.Health != api.HealthHealthy {
		t.Errorf("health check through b: got connected %v node %q (%s) health %s, want connected to a, healthy",
			v.Connected, v.Node, v.NodeState, v.Health)
	}
	if after, err := b.store.AgentByName(context.Background(), "web-1"); err != nil || !after.LastHealthAt.After(rec.LastHealthAt) {
		t.Errorf("health check through b: last checked %s (%v), want after %s", after.LastHealthAt, err, rec.LastHealthAt)
	}

	arch := diagnosticsOf(t, b, "web-1")
	hasAll(t, arch.Files, append(slices.Clone(coordinatorSide), diagnostics.AgentArchiveName)...)
	if len(arch.Manifest.Notes) != 0 || len(arch.Manifest.Missing) != 0 {
		t.Errorf("diagnostics through b: got notes %q, missing %+v; want the agent's side too", arch.Manifest.Notes, arch.Manifest.Missing)
	}
	noCallsLeft(t, b)
}

// TestPerAgentActionsHolderKilled: asked through the other node while the
// node holding the agent's session is killed, a Calamari update, a health
// check and diagnostics answer an error naming that node: at once when it
// counts as dead, after the answer timeout while it still counts as
// alive.
func TestPerAgentActionsHolderKilled(t *testing.T) {
	tests := []struct {
		name string
		// heartbeat is the killed node's.
		heartbeat time.Duration
		// dead waits for b to count a dead.
		dead     bool
		status   int
		want     string
		wantNote string
	}{
		{name: "still counted alive", heartbeat: time.Minute, status: http.StatusGatewayTimeout,
			want: "agent web-1 is connected to coordinator node a, which did not answer within 2s"},
		{name: "counted dead", heartbeat: haHeartbeat, dead: true, status: http.StatusConflict,
			want: "agent web-1 is not connected: coordinator node a, which held its session, stopped beating"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newHACluster(t)
			a := c.node("a", func(cfg *Config) { cfg.HeartbeatInterval = tt.heartbeat })
			b := c.node("b", func(cfg *Config) { cfg.NodeAnswerTimeout = 2 * time.Second })
			b.upload(t, packBundle(t, "1.0.0", 0))
			// A peer that never reconnects: it stays a's.
			enrolled(t, a, "web-1")
			b.connectedTo(t, "web-1", "a")
			a.kill()
			if tt.dead {
				eventually(t, "b counting a dead", func() bool { return !nodeNamed(t, b, "a").Alive })
			}

			if got := updateThrough(t, b, "web-1"); got.Result != "failed" || !strings.Contains(got.Error, tt.want) {
				t.Errorf("calamari update: got %+v, want failed: %s", got, tt.want)
			}
			resp, body := b.api(t, "POST", "/api/agents/web-1/health-check", "", nil)
			var e api.APIError
			json.Unmarshal(body, &e)
			if resp.StatusCode != tt.status || !strings.Contains(e.Error, tt.want) {
				t.Errorf("health check: got %d %s, want %d: %s", resp.StatusCode, body, tt.status, tt.want)
			}
			arch := diagnosticsOf(t, b, "web-1")
			hasAll(t, arch.Files, coordinatorSide...)
			hasNote(t, arch, tt.want)
			if _, ok := arch.Files[diagnostics.AgentArchiveName]; ok {
				t.Error("diagnostics: an agent's side from an agent whose node was killed")
			}
			noCallsLeft(t, b)
		})
	}
}

// TestTasksAdoptedWhenAgentMoves: when the node driving a task is killed
// and the agent reconnects to another node, that node takes the task
// over at once, on the proof of the agent's new session, rather than
// once the killed node counts as dead (here a minute at the least): the
// task reaches its end, its log whole and nothing run twice, while the
// killed node still counts as alive.
func TestTasksAdoptedWhenAgentMoves(t *testing.T) {
	c := newHACluster(t)
	a := c.node("a", func(cfg *Config) { cfg.HeartbeatInterval = 30 * time.Second })
	b := c.node("b", nil)
	a.upload(t, packBundle(t, "1.0.0", 0))
	haAgent(t, a, "web-1", a.AgentAddr(), b.AgentAddr())
	a.connectedTo(t, "web-1", "a")

	gate := filepath.Join(t.TempDir(), "gate")
	const lines = 40
	id := a.startTaskOn(t, "web-1", fmt.Sprintf(`echo started; while [ ! -e %s ]; do sleep 0.05; done; for i in $(seq 1 %d); do echo line $i; done; echo done`, gate, lines))
	a.waitLog(t, id, "stdout: started")
	if got := a.task(t, id).Node; got != a.nodeID() {
		t.Fatalf("task driven by %q, want a (%s)", got, a.nodeID())
	}

	a.kill()
	b.connectedTo(t, "web-1", "b")
	os.WriteFile(gate, nil, 0o644)
	task := b.waitTask(t, id, api.TaskSucceeded)
	if n := nodeNamed(t, b, "a"); !n.Alive || n.State != api.NodeRunning {
		t.Fatalf("node a when the task ended: got %+v, want still counted alive (only the agent's new session can have moved the task)", n)
	}
	if task.Node != b.nodeID() || task.ExitCode != 0 {
		t.Fatalf("task: got node %q exit %d, want b (%s) and 0", task.Node, task.ExitCode, b.nodeID())
	}
	l, err := b.store.TaskLogs(context.Background(), id, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	text := logText(l)
	for _, want := range []string{"stdout: started", "stdout: done", "stdout: line 1\n", fmt.Sprintf("stdout: line %d\n", lines), "Started on web-1"} {
		if n := strings.Count(text, want); n != 1 {
			t.Errorf("log: %q %d times, want once:\n%s", want, n, text)
		}
	}
	for i := 1; i <= lines; i++ {
		if !strings.Contains(text, fmt.Sprintf("stdout: line %d\n", i)) {
			t.Errorf("log: line %d missing:\n%s", i, text)
			break
		}
	}
}

// TestAgentsListShowsStaleNode: an agent whose node stopped beating is
// shown with a warning naming the node while the node still counts as
// alive, and as not connected, naming the node, once it counts as dead;
// never as connected and healthy without a word.
func TestAgentsListShowsStaleNode(t *testing.T) {
	c := newHACluster(t)
	// Late once it missed a beat (4 s after the last), dead after 6 s.
	a := c.node("a", func(cfg *Config) { cfg.HeartbeatInterval = 2 * time.Second })
	b := c.node("b", nil)
	enrolled(t, a, "web-1") // a peer that never reconnects: it stays a's
	a.checkAllHealth()
	eventually(t, "web-1 healthy on a, seen through b", func() bool {
		v := b.agentView(t, "web-1")
		return v.Connected && v.Node == "a" && v.NodeState == api.NodeRunning && v.Health == api.HealthHealthy
	})

	a.kill()
	var v api.AgentView
	eventually(t, "web-1 shown with a late node", func() bool {
		v = b.agentView(t, "web-1")
		if v.NodeState == api.NodeDead {
			t.Fatalf("web-1's node went from running to dead (%q), never shown late", v.HealthDetail)
		}
		return v.NodeState == api.NodeLate
	})
	if !v.Connected || v.Node != "a" || v.Health != api.HealthWarning ||
		!strings.Contains(v.HealthDetail, "coordinator node a, which holds its session, last beat") {
		t.Errorf("late node: got connected %v node %q health %s %q, want connected to a with a warning naming it",
			v.Connected, v.Node, v.Health, v.HealthDetail)
	}
	eventually(t, "web-1 shown with a dead node", func() bool {
		v = b.agentView(t, "web-1")
		return v.NodeState == api.NodeDead
	})
	if v.Connected || v.Node != "" || v.Health != api.HealthUnavailable ||
		!strings.HasPrefix(v.HealthDetail, "not connected: coordinator node a, which held its session, stopped beating ") {
		t.Errorf("dead node: got connected %v node %q health %s %q, want not connected, naming a", v.Connected, v.Node, v.Health, v.HealthDetail)
	}
	resp, body := b.api(t, "GET", "/api/agents", "", nil)
	var listed []map[string]any
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &listed) != nil || len(listed) != 1 ||
		listed[0]["node_state"] != api.NodeDead || listed[0]["connected"] != false {
		t.Errorf("GET /api/agents: got %d %s, want web-1 not connected with node_state dead", resp.StatusCode, body)
	}
}

// TestPerAgentActionsBadHolder: what a node finds when it asks the node
// an agent's record names, and that node cannot act: a node of an older
// version that takes no calls, a node that holds no session for the agent
// (its record is stale; the call is not passed on, and the node asked
// answers at once), and a call for an action the node does not know.
func TestPerAgentActionsBadHolder(t *testing.T) {
	c := newHACluster(t)
	a := c.node("a", nil)
	b := c.node("b", func(cfg *Config) { cfg.NodeAnswerTimeout = 5 * time.Second })
	ctx := context.Background()

	// An agent enrolled and gone, whose record is then made to name a
	// node: as if the node's Hello had been the last word.
	recordOn := func(agentName, node string) {
		t.Helper()
		ag, err := b.store.AgentByName(ctx, agentName)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.store.RecordConnection(ctx, store.Connection{AgentID: ag.ID, Version: "1.0.0", OS: "linux", Arch: "amd64",
			Protocol: 1, TLSVersion: "1.3", At: time.Now().UTC(), Node: node}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"on-old", "ghost"} {
		p := enrolled(t, b, name)
		p.sess.Close()
		eventually(t, name+" disconnected", func() bool { return !b.agentView(t, name).Connected })
	}

	// A node of the version before calls: alive, but it takes none.
	old, err := b.store.RegisterNode(ctx, store.Node{ID: "old-node", Name: "old", Advertise: "127.0.0.1:1", Version: "1.0.0",
		StartedAt: time.Now().UTC(), HeartbeatEvery: time.Hour, Dials: true})
	if err != nil {
		t.Fatal(err)
	}
	recordOn("on-old", old.ID)
	// a, which holds no session for ghost.
	recordOn("ghost", a.nodeID())

	tests := []struct {
		agent  string
		status int
		want   string
	}{
		{"on-old", http.StatusConflict, "agent on-old is connected to coordinator node old, whose version (1.0.0) cannot act for other nodes: ask through that node, or upgrade it"},
		{"ghost", http.StatusConflict, "agent ghost is not connected to coordinator node a"},
	}
	for _, tt := range tests {
		resp, body := b.api(t, "POST", "/api/agents/"+tt.agent+"/health-check", "", nil)
		var e api.APIError
		json.Unmarshal(body, &e)
		if resp.StatusCode != tt.status || e.Error != tt.want {
			t.Errorf("%s: got %d %s, want %d %q", tt.agent, resp.StatusCode, body, tt.status, tt.want)
		}
	}
	noCallsLeft(t, b)

	// A call for an action a does not know (from a newer node) is
	// answered with a refusal, not left waiting.
	call := store.NodeCall{ID: "call-unknown", Node: a.nodeID(), From: b.nodeID(), AgentID: "ghost-id", Action: "reboot", Args: []byte("null"), CreatedAt: time.Now().UTC()}
	if err := b.store.CreateNodeCall(ctx, call); err != nil {
		t.Fatal(err)
	}
	b.notifyCluster(cluster.NotifyCall, a.nodeID(), call.ID)
	var got store.NodeCall
	eventually(t, "a to answer the call", func() bool {
		got, err = b.store.NodeCall(ctx, call.ID)
		return err == nil && got.Answered()
	})
	if got.ErrorKind != "bad-request" || !strings.Contains(got.Error, `does not know the action "reboot"`) {
		t.Errorf("unknown action: got %q %q, want a bad-request naming it", got.ErrorKind, got.Error)
	}
}
