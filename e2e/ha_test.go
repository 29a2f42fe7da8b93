package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

// failoverWithin is how long agents of a killed node may take to be
// connected to the other one: the bound.
const failoverWithin = 30 * time.Second

func listNodes(t *testing.T, data string) []api.NodeView {
	t.Helper()
	out, err := run(t, "tendril-server", "nodes", "list", "--data", data, "--json")
	if err != nil {
		return nil
	}
	var nodes []api.NodeView
	if err := json.Unmarshal([]byte(out), &nodes); err != nil {
		t.Fatalf("nodes list --json: %v\n%s", err, out)
	}
	return nodes
}

// TestKillNodeAgentsMoveTasksRunOnce runs two coordinator nodes as real
// processes on one PostgreSQL, 20 agents split between them and tasks on
// all of them, some running and some still queued when one node is killed
// with SIGKILL: every agent is connected to the other node within 30 s,
// and every task runs exactly once, as the agents themselves record.
func TestKillNodeAgentsMoveTasksRunOnce(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the test bundle's entry point is a shell script")
	}
	const agents = 20
	ctx := context.Background()
	dbURL := pg.Cluster(t).NewDatabase(t)
	dataA := filepath.Join(t.TempDir(), "a")
	dataB := filepath.Join(t.TempDir(), "b")
	mustRun(t, "tendril-server", "init", "--data", dataA, "--database", dbURL)
	servertest.CopyDir(t, dataA, dataB)
	addrA, addrB := servertest.FreeAddr(t), servertest.FreeAddr(t)
	nodeA := start(t, "tendril-server", "run", "--data", dataA, "--database", dbURL, "--node-name", "a",
		"--listen", addrA, "--http", servertest.FreeAddr(t), "--heartbeat-interval", "500ms")
	start(t, "tendril-server", "run", "--data", dataB, "--database", dbURL, "--node-name", "b",
		"--listen", addrB, "--http", servertest.FreeAddr(t), "--heartbeat-interval", "500ms")
	waitFor(t, "both nodes running", func() bool {
		n := listNodes(t, dataB)
		return len(n) == 2 && n[0].State == api.NodeRunning && n[1].State == api.NodeRunning
	})

	// Half the agents try a first, half b.
	marks := t.TempDir()
	for i := range agents {
		join := strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", dataB, "--environment", "Prod"))
		j, err := protocol.ParseJoin(join)
		if err != nil {
			t.Fatal(err)
		}
		servers := []string{addrA, addrB}
		if i%2 == 1 {
			servers = []string{addrB, addrA}
		}
		servertest.StartAgent(t, servertest.Agent{Name: fmt.Sprintf("web-%02d", i), Join: j, Servers: servers,
			MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second})
	}
	waitFor(t, "10 agents on each node", func() bool {
		n := listNodes(t, dataB)
		return len(n) == 2 && n[0].Agents == agents/2 && n[1].Agents == agents/2
	})

	// Pushed through b: a fetches the bundles from the database.
	for _, b := range []string{servertest.CalamariBundle(t, "1.0.0", 0), servertest.CalamariBundle(t, "2.0.0", 8<<20)} {
		mustRun(t, "tendril-server", "calamari", "push", b, "--data", dataB)
	}
	script := `echo ran >> ` + marks + `/$TENDRIL_TICKET; sleep 3; echo done`
	createTasks := func(calamari string) []api.TaskView {
		out := mustRun(t, "tendril-server", "task", "run", "--data", dataB, "--environment", "Prod", "--calamari", calamari,
			"--json", "--", "run-script", "--inline", script)
		var views []api.TaskView
		if err := json.Unmarshal([]byte(out), &views); err != nil || len(views) != agents {
			t.Fatalf("task run --json: got %d tasks (%v), want %d\n%s", len(views), err, agents, out)
		}
		return views
	}
	// The first wave runs when a is killed; the second, with a bundle
	// the agents must be sent first, is queued.
	tasks := createTasks("1.0.0")
	waitFor(t, "the first wave running on every agent", func() bool {
		files, _ := os.ReadDir(marks)
		return len(files) == agents
	})
	tasks = append(tasks, createTasks("2.0.0")...)
	nodeA.kill()

	st, err := sqlstore.OpenPostgres(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	queued := 0
	for _, tv := range tasks {
		task, err := st.Task(ctx, tv.ID)
		if err != nil {
			t.Fatal(err)
		}
		if task.State == api.TaskQueued {
			queued++
		}
	}
	t.Logf("when node a was killed: %d of %d tasks queued", queued, len(tasks))

	deadline := time.Now().Add(failoverWithin)
	for {
		n := listNodes(t, dataB)
		if len(n) == 2 && n[1].Name == "b" && n[1].Agents == agents && n[0].State == api.NodeDead {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after node a was killed: nodes %+v, want all %d agents on b and a dead", failoverWithin, n, agents)
		}
		time.Sleep(200 * time.Millisecond)
	}

	waitFor(t, "every task to finish", func() bool {
		for _, tv := range tasks {
			task, err := st.Task(ctx, tv.ID)
			if err != nil || !task.Finished() {
				return false
			}
		}
		return true
	})
	for _, tv := range tasks {
		task, err := st.Task(ctx, tv.ID)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := st.TaskLogs(ctx, tv.ID, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		var log strings.Builder
		for _, l := range lines {
			fmt.Fprintf(&log, "%s: %s\n", l.Stream, l.Text)
		}
		if task.State != api.TaskSucceeded || strings.Count(log.String(), "stdout: done") != 1 {
			t.Errorf("task %s on %s: got %s, want succeeded with its last line once:\n%s", tv.ID, tv.Agent, task.State, log.String())
		}
		// The agent's own record: the script ran once.
		b, err := os.ReadFile(filepath.Join(marks, tv.ID))
		if err != nil || string(b) != "ran\n" {
			t.Errorf("task %s on %s: the agent ran it %d times (%v), want exactly once", tv.ID, tv.Agent, strings.Count(string(b), "ran"), err)
		}
	}
}
