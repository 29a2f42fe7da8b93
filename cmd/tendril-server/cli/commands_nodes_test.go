package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/protocol"
)

// startNodeCmd runs "tendril-server run" as node name of the database at
// dbURL on data folder dir, until stopped or the test ends.
func startNodeCmd(t *testing.T, dir, dbURL, name string) (logs *syncBuffer, stop func() int) {
	t.Helper()
	logs, stop = runInBackground(t, nil, "--data", dir, "--database", dbURL, "--node-name", name,
		"--heartbeat-interval", "500ms", "--health-interval", "1h")
	waitFor(t, "node "+name+" to start", func() bool { _, err := api.ReadRunInfo(dir); return err == nil })
	return logs, stop
}

func nodesJSON(t *testing.T, dir string) []api.NodeView {
	t.Helper()
	code, stdout, stderr := cli(t, context.Background(), nil, "nodes", "list", "--data", dir, "--json")
	if code != 0 {
		t.Fatalf("nodes list --json: %d %q", code, stderr)
	}
	var nodes []api.NodeView
	if err := json.Unmarshal([]byte(stdout), &nodes); err != nil {
		t.Fatalf("nodes list --json: %v\n%s", err, stdout)
	}
	return nodes
}

// TestHighAvailabilityCommands follows the README's "Running highly
// available": init against PostgreSQL, copy the data folder, start two
// nodes, a join string naming both, nodes list, then node drain --wait
// while a task runs, and node undrain.
func TestHighAvailabilityCommands(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the test bundle's entry point is a shell script")
	}
	old := drainPoll
	drainPoll = 20 * time.Millisecond
	t.Cleanup(func() { drainPoll = old })
	bg := context.Background()
	dbURL := pg.Cluster(t).NewDatabase(t)
	dirA := filepath.Join(t.TempDir(), "a")
	dirB := filepath.Join(t.TempDir(), "b")
	if code, _, stderr := cli(t, bg, nil, "init", "--data", dirA, "--database", dbURL); code != 0 {
		t.Fatalf("init: %d %q", code, stderr)
	}
	servertest.CopyDir(t, dirA, dirB)
	logsA, _ := startNodeCmd(t, dirA, dbURL, "node-a")
	logsB, _ := startNodeCmd(t, dirB, dbURL, "node-b")
	riA, _ := api.ReadRunInfo(dirA)
	riB, _ := api.ReadRunInfo(dirB)

	// The join string names both nodes, the one asked first.
	code, join, stderr := cli(t, bg, nil, "token", "create", "--data", dirA, "--environment", "Prod")
	if code != 0 {
		t.Fatalf("token create: %d %q", code, stderr)
	}
	j, err := protocol.ParseJoin(join)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Servers) != 2 || !strings.HasSuffix(j.Servers[0], portOf(riA.AgentAddr)) || !strings.HasSuffix(j.Servers[1], portOf(riB.AgentAddr)) {
		t.Fatalf("join string servers: got %v, want node-a's (%s) then node-b's (%s)", j.Servers, riA.AgentAddr, riB.AgentAddr)
	}

	// An agent that tries node-a first.
	servertest.StartAgent(t, servertest.Agent{Name: "web-1", Join: j, Servers: []string{riA.AgentAddr, riB.AgentAddr},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})

	waitFor(t, "nodes list to show web-1 on node-a", func() bool {
		nodes := nodesJSON(t, dirB)
		return len(nodes) == 2 && nodes[0].Name == "node-a" && nodes[0].Agents == 1 && nodes[1].Name == "node-b" &&
			nodes[1].Agents == 0 && nodes[1].Self && nodes[0].State == "running" && nodes[1].State == "running"
	})
	code, stdout, stderr := cli(t, bg, nil, "nodes", "list", "--data", dirA)
	if code != 0 || !strings.Contains(stdout, "node-a *") || !strings.Contains(stdout, "node-b ") || !strings.Contains(stdout, "running") {
		t.Fatalf("nodes list: %d %q %q", code, stdout, stderr)
	}

	// Calamari pushed through node-b, then a task that runs until told:
	// node-a, which holds the agent, fetches the bundle.
	if code, _, stderr := cli(t, bg, nil, "calamari", "push", servertest.CalamariBundle(t, "1.0.0", 0), "--data", dirB); code != 0 {
		t.Fatalf("calamari push: %d %q", code, stderr)
	}
	gate := filepath.Join(t.TempDir(), "gate")
	code, stdout, stderr = cli(t, bg, nil, "task", "run", "--data", dirB, "--agent", "web-1", "--json",
		"--", "run-script", "--inline", `echo started; while [ ! -e `+gate+` ]; do sleep 0.05; done`)
	if code != 0 {
		t.Fatalf("task run: %d %q %q", code, stdout, stderr)
	}
	// node-b created it; node-a, which holds the agent, claims it on
	// hearing so. Draining node-a before that would leave node-a driving
	// no task and the drain below with nothing to wait for.
	waitFor(t, "the task running, driven by node-a", func() bool {
		code, out, _ := cli(t, bg, nil, "task", "list", "--data", dirA, "--json")
		var tasks []api.TaskView
		return code == 0 && json.Unmarshal([]byte(out), &tasks) == nil && len(tasks) == 1 && tasks[0].State == api.TaskRunning
	})

	if code, _, stderr := cli(t, bg, nil, "node", "drain", "--node", "nope", "--data", dirA); code != 1 ||
		!strings.Contains(stderr, `no coordinator node named "nope" (see tendril-server nodes list)`) {
		t.Fatalf("drain an unknown node: %d %q", code, stderr)
	}

	// Drain node-a (the node the command talks to) and wait: it holds the
	// agent until its task ends.
	var drainOut, drainErr syncBuffer
	drained := make(chan int, 1)
	go func() {
		drained <- Run(bg, []string{"node", "drain", "--wait", "--data", dirA},
			Env{Stdout: &drainOut, Stderr: &drainErr, Getenv: func(string) string { return "" }})
	}()
	waitFor(t, "drain --wait to say what it waits for", func() bool {
		return strings.Contains(drainErr.String(), "Waiting: node node-a holds 1 agent and drives 1 task")
	})
	select {
	case code := <-drained:
		t.Fatalf("drain --wait returned %d while the task runs: %q %q", code, drainOut.String(), drainErr.String())
	default:
	}
	os.WriteFile(gate, nil, 0o644)
	if code := <-drained; code != 0 || !strings.Contains(drainOut.String(), "Node node-a is drained") {
		t.Fatalf("drain --wait: %d %q %q\nnode-a:\n%s", code, drainOut.String(), drainErr.String(), logsA)
	}
	waitFor(t, "web-1 on node-b", func() bool {
		nodes := nodesJSON(t, dirA)
		return nodes[1].Name == "node-b" && nodes[1].Agents == 1
	})
	nodes := nodesJSON(t, dirA)
	if nodes[0].State != "drained" || !nodes[0].Drained {
		t.Fatalf("nodes after the drain: %+v", nodes)
	}

	code, stdout, stderr = cli(t, bg, nil, "node", "undrain", "--node", "node-a", "--data", dirB)
	if code != 0 || stdout != "Node node-a is running: it takes agents and tasks.\n" {
		t.Fatalf("undrain: %d %q %q\nnode-b:\n%s", code, stdout, stderr, logsB)
	}
	if states := []string{nodesJSON(t, dirB)[0].State, nodesJSON(t, dirB)[1].State}; !slices.Equal(states, []string{"running", "running"}) {
		t.Fatalf("after undrain: got states %v, want both running", states)
	}
}

func TestNodeFlagsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"run", "--data", "x", "--heartbeat-interval", "0s"},
		{"node"},
		{"node", "drain", "extra"},
		{"nodes", "list", "extra"},
	} {
		code, _, stderr := cli(t, context.Background(), nil, args...)
		if code != 2 || !strings.HasPrefix(strings.TrimSpace(stderr[strings.LastIndex(strings.TrimSpace(stderr), "\n")+1:]), "tendril-server: ") {
			t.Errorf("%q: got %d %q, want 2 and a tendril-server: line", args, code, stderr)
		}
	}
}

func portOf(addr string) string {
	return addr[strings.LastIndex(addr, ":"):]
}
