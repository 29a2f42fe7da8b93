//go:build linux

package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
)

// TestTaskOutlivesDatabaseOutage stops PostgreSQL while a task prints and
// finishes: once the database is back the task reaches its final state,
// with its whole log and the agent's end time, with no agent restart; the
// node stops counting it, so draining it and maintenance mode's wait end.
func TestTaskOutlivesDatabaseOutage(t *testing.T) {
	ctx := context.Background()
	c, ts := outageNode(t)
	ra := haAgent(t, ts, "web-1", ts.AgentAddr())
	ts.connectedTo(t, "web-1", "a")
	ts.upload(t, packBundle(t, "1.0.0", 0))
	const printed = 5000
	gate := filepath.Join(t.TempDir(), "gate")
	task := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", gatedScript(gate, printed)}})
	ts.waitLine(t, task.ID, "stdout", "first")
	sessions := ra.Status().Sessions

	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(gate, nil, 0o600)
	var finishedAt time.Time
	eventually(t, "the task finished on the agent", func() bool {
		var ok bool
		finishedAt, ok = agentResult(t, ra.home, task.ID)
		return ok
	})
	// The database stays away for a few of the node's tries, growing
	// apart: an outage of some seconds.
	eventually(t, "the node tried a few times to store the log", func() bool {
		run := ts.tasks.get(task.ID)
		if run == nil {
			return false
		}
		run.mu.Lock()
		defer run.mu.Unlock()
		return run.failures >= 4 && strings.Contains(run.why, "cannot")
	})
	if err := c.Up(ctx); err != nil {
		t.Fatal(err)
	}

	ts.checkWholeGatedTask(t, task.ID, printed, finishedAt)

	// Nothing counts the task any more: maintenance mode's wait and the
	// node's drain end.
	if _, err := ts.SetMaintenance(ctx, true); err != nil {
		t.Fatal(err)
	}
	if v, err := ts.maint.View(ctx); err != nil || !v.Drained() {
		t.Fatalf("maintenance: got %+v, %v; want nothing running", v, err)
	}
	if _, err := ts.SetNodeDraining(ctx, "a", true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node a drained", func() bool {
		v := nodeNamed(t, ts, "a")
		return v.Tasks == 0 && v.State == api.NodeDrained
	})
	if got := ra.Status().Sessions; got != sessions {
		t.Logf("the agent reconnected during the outage (%d sessions, had %d)", got, sessions)
	}
}
