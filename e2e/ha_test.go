package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/store"
)

// failoverWithin is how long agents of a killed node may take to be
// connected to the other one: the bound.
const failoverWithin = 30 * time.Second

// shellCalamari is a Calamari bundle whose entry point is a shell script
// (run-script runs its script), padded with incompressible filler so that
// pushing it takes a moment.
func shellCalamari(t *testing.T, version string, filler int) string {
	t.Helper()
	src := t.TempDir()
	plat := runtime.GOOS + "-" + runtime.GOARCH
	if err := os.MkdirAll(filepath.Join(src, plat), 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\n[ \"$1\" = run-script ] && [ \"$2\" = --inline ] && exec /bin/sh -c \"$3\"\nexit 2\n"
	if err := os.WriteFile(filepath.Join(src, plat, "calamari"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	pad := make([]byte, filler)
	rand.Read(pad)
	if err := os.WriteFile(filepath.Join(src, plat, "filler"), pad, 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := bundle.Pack(context.Background(), &buf, "calamari", version, src,
		map[string]string{runtime.GOOS + "/" + runtime.GOARCH: plat + "/calamari"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "calamari-"+version+".tar.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), info.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

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
	copyDir(t, dataA, dataB)
	addrA, addrB := freePort(t), freePort(t)
	nodeA := start(t, "tendril-server", "run", "--data", dataA, "--database", dbURL, "--node-name", "a",
		"--listen", addrA, "--http", freePort(t), "--heartbeat-interval", "500ms")
	start(t, "tendril-server", "run", "--data", dataB, "--database", dbURL, "--node-name", "b",
		"--listen", addrB, "--http", freePort(t), "--heartbeat-interval", "500ms")
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
		home := t.TempDir()
		if _, err := agent.Register(ctx, agent.RegisterConfig{Home: home, Name: fmt.Sprintf("web-%02d", i), Version: "1.2.3",
			Servers: servers, ServerThumbprint: j.Thumbprint, Token: j.Token}); err != nil {
			t.Fatal(err)
		}
		a, err := agent.New(agent.Config{Home: home, Version: "1.2.3", MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		actx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(actx) }()
		t.Cleanup(func() {
			cancel()
			<-done
		})
	}
	waitFor(t, "10 agents on each node", func() bool {
		n := listNodes(t, dataB)
		return len(n) == 2 && n[0].Agents == agents/2 && n[1].Agents == agents/2
	})

	// Pushed through b: a fetches the bundles from the database.
	for _, b := range []string{shellCalamari(t, "1.0.0", 0), shellCalamari(t, "2.0.0", 8<<20)} {
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

	st, err := store.OpenPostgres(ctx, dbURL)
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
		if task.State == store.TaskQueued {
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
		if task.State != store.TaskSucceeded || strings.Count(log.String(), "stdout: done") != 1 {
			t.Errorf("task %s on %s: got %s, want succeeded with its last line once:\n%s", tv.ID, tv.Agent, task.State, log.String())
		}
		// The agent's own record: the script ran once.
		b, err := os.ReadFile(filepath.Join(marks, tv.ID))
		if err != nil || string(b) != "ran\n" {
			t.Errorf("task %s on %s: the agent ran it %d times (%v), want exactly once", tv.ID, tv.Agent, strings.Count(string(b), "ran"), err)
		}
	}
}
