package server

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
)

func TestMaintenanceRefusesNewWorkAndLetsRunningFinish(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	ts.upload(t, packBundle(t, "1.0.0", 0))
	gate := filepath.Join(t.TempDir(), "gate")
	views, err := ts.CreateTasks(ctx, api.TaskRequest{Agent: "web-1",
		Args: []string{"run-script", "--inline", `echo started; while [ ! -e ` + gate + ` ]; do sleep 0.05; done; echo done`}})
	if err != nil {
		t.Fatal(err)
	}
	id := views[0].ID
	eventually(t, "task running", func() bool {
		l, _ := ts.store.TaskLogs(ctx, id, 1, 0)
		return strings.Contains(logText(l), "stdout: started")
	})

	v, err := ts.SetMaintenance(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !v.On || v.Since == nil || v.RunningTasks != 1 || v.Drained() {
		t.Fatalf("after turning on: got %+v, want on with one running task", v)
	}
	refusals := []struct {
		name string
		try  func() error
	}{
		{"task", func() error {
			_, err := ts.CreateTasks(ctx, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", "true"}})
			return err
		}},
		{"rollout", func() error {
			_, err := ts.rollouts.StartRollout(ctx, api.RolloutRequest{All: true})
			return err
		}},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			err := r.try()
			if !errors.Is(err, kind.ErrConflict) || err.Error() != maintenanceRefusal {
				t.Fatalf("got %v, want the maintenance refusal", err)
			}
		})
	}
	if all, _ := ts.Tasks(ctx, api.TaskFilter{}); len(all) != 1 {
		t.Fatalf("got %d tasks, want only the one started before maintenance", len(all))
	}

	// The running task finishes while maintenance is on.
	os.WriteFile(gate, nil, 0o644)
	eventually(t, "the running task finished", func() bool {
		task, _ := ts.Task(ctx, id)
		return task.State == api.TaskSucceeded
	})
	if v, err = ts.Maintenance(ctx); err != nil || !v.On || !v.Drained() {
		t.Fatalf("after the task finished: got %+v, %v, want on and drained", v, err)
	}

	if v, err = ts.SetMaintenance(ctx, false); err != nil || v.On || v.Since != nil {
		t.Fatalf("turning off: got %+v, %v", v, err)
	}
	if task, _ := ts.runTaskOn(t, "web-1", "run-script", "--inline", "true"); task.State != api.TaskSucceeded {
		t.Fatalf("after maintenance: task %s, want succeeded", task.State)
	}
}

func TestMaintenanceSurvivesRestart(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	on, err := ts.SetMaintenance(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	// Turning it on again keeps when it started.
	again, err := ts.SetMaintenance(ctx, true)
	if err != nil || !again.Since.Equal(*on.Since) {
		t.Fatalf("on twice: since %v then %v (%v)", on.Since, again.Since, err)
	}
	ts.stop()

	ts2 := runServer(t, ts.dir, nil)
	v, err := ts2.Maintenance(ctx)
	if err != nil || !v.On || v.Since == nil || !v.Since.Equal(*on.Since) {
		t.Fatalf("after restart: got %+v, %v, want on since %v", v, err, on.Since)
	}
	if _, err := ts2.CreateTasks(ctx, api.TaskRequest{Agent: "any", Args: []string{"x"}}); !errors.Is(err, kind.ErrConflict) {
		t.Fatalf("task after restart: got %v, want the maintenance refusal", err)
	}
	if _, err := ts2.SetMaintenance(ctx, false); err != nil {
		t.Fatal(err)
	}
	ts2.stop()
	ts3 := runServer(t, ts.dir, nil)
	if v, err := ts3.Maintenance(ctx); err != nil || v.On {
		t.Fatalf("after off and restart: got %+v, %v, want off", v, err)
	}
}

func TestMaintenanceAPI(t *testing.T) {
	ts := startServer(t, nil)
	tests := []struct {
		name, method, path, key, body string
		want                          int
		wantOn                        *bool
		wantMsg                       string
	}{
		{"get without key", "GET", "/api/maintenance", "-", "", 401, nil, "API key is required"},
		{"put without key", "PUT", "/api/maintenance", "-", `{"on":true}`, 401, nil, "API key is required"},
		{"put with wrong key", "PUT", "/api/maintenance", "tdk_wrong", `{"on":true}`, 401, nil, "not valid"},
		{"snapshot without key", "POST", "/api/backup/snapshot", "-", "", 401, nil, "API key is required"},
		{"put without on", "PUT", "/api/maintenance", "", `{}`, 400, nil, `field "on" is required`},
		{"put with unknown field", "PUT", "/api/maintenance", "", `{"on":true,"x":1}`, 400, nil, `unknown field "x"`},
		{"get while off", "GET", "/api/maintenance", "", "", 200, ptr(false), ""},
		{"turn on", "PUT", "/api/maintenance", "", `{"on":true}`, 200, ptr(true), ""},
		{"get while on", "GET", "/api/maintenance", "", "", 200, ptr(true), ""},
		{"task refused", "POST", "/api/tasks", "", `{"agent":"web-1","args":["x"]}`, 409, nil, "maintenance mode"},
		{"rollout refused", "POST", "/api/rollouts", "", `{"all":true}`, 409, nil, "maintenance mode"},
		{"turn off", "PUT", "/api/maintenance", "", `{"on":false}`, 200, ptr(false), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := ts.api(t, tt.method, tt.path, tt.key, strings.NewReader(tt.body))
			if resp.StatusCode != tt.want {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, body, tt.want)
			}
			if tt.wantMsg != "" {
				var e api.APIError
				json.Unmarshal(body, &e)
				if !strings.Contains(e.Error, tt.wantMsg) {
					t.Fatalf("got %q, want it to say %q", e.Error, tt.wantMsg)
				}
			}
			if tt.wantOn != nil {
				var raw map[string]any
				if err := json.Unmarshal(body, &raw); err != nil {
					t.Fatal(err)
				}
				if raw["on"] != *tt.wantOn || raw["running_tasks"] != float64(0) {
					t.Fatalf("got %s, want on=%v and running_tasks 0", body, *tt.wantOn)
				}
				if _, has := raw["since"]; has != *tt.wantOn {
					t.Fatalf("got %s: since should be there only while on", body)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// maintenanceRefusal is what a request refused in maintenance mode says,
// with the way out.
const maintenanceRefusal = "the coordinator is in maintenance mode; no new tasks start (turn it off with: tendril-server maintenance off)"
