package server

// Roles through the API: every key whose role a route does not name is
// refused with 403, naming its role and what it may do, with nothing
// changed; a viewer is refused every route that changes anything; a
// deployer sees and acts on its environments' agents and tasks only.

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

func TestAPIRoles(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.UpgradeIdleTimeout = time.Hour })
	fx := setUpAPIFixture(t, ts)
	table := apiEndpoints(fx)
	ctx := context.Background()
	keys := map[api.Role]string{}
	for _, r := range []api.Role{api.RoleOperator, api.RoleDeployer, api.RoleViewer} {
		var envs []string
		if r == api.RoleDeployer {
			envs = []string{"Away"}
		}
		k, err := ts.access.CreateAPIKey(ctx, "role-"+string(r), r, envs)
		if err != nil {
			t.Fatal(err)
		}
		keys[r] = k.Key
	}
	check := newResponseChecker(t, ts)

	names := make([]string, 0, len(table))
	for k := range table {
		names = append(names, k)
	}
	slices.Sort(names)
	mutating := 0
	for _, route := range names {
		ep := table[route]
		method, _, _ := strings.Cut(route, " ")
		if ep.roles == nil {
			continue // public
		}
		if method != http.MethodGet {
			mutating++
			if slices.Contains(ep.roles, api.RoleViewer) {
				t.Errorf("%s changes state, but a viewer may call it", route)
			}
		}
		for _, role := range []api.Role{api.RoleOperator, api.RoleDeployer, api.RoleViewer} {
			if slices.Contains(ep.roles, role) {
				continue
			}
			t.Run(route+" as "+string(role), func(t *testing.T) {
				before := apiState(t, ts)
				resp, got := ts.api(t, method, ep.path, keys[role], strings.NewReader(ep.body))
				var e api.APIError
				json.Unmarshal(got, &e)
				for _, want := range []string{`API key "role-` + string(role) + `" has the role ` + string(role),
					"which may " + api.RoleAllows(role, nil)[:20], route + " needs the role "} {
					if resp.StatusCode != http.StatusForbidden || !strings.Contains(e.Error, want) {
						t.Errorf("got %d %q, want 403 saying %q", resp.StatusCode, got, want)
					}
				}
				check.check(t, method, ep.path, resp, got)
				if after := apiState(t, ts); after != before {
					t.Errorf("refused, but the coordinator's state changed:\nbefore:\n%s\nafter:\n%s", before, after)
				}
			})
		}
	}
	if mutating == 0 {
		t.Error("no route that changes state was tried")
	}

	// The document declares each operation's roles, as tools read them
	// (x-roles) and as people do (the description).
	_, raw := ts.api(t, "GET", "/api/openapi.json", "-", nil)
	var doc struct {
		Paths map[string]map[string]struct {
			Roles       []api.Role `json:"x-roles"`
			Description string     `json:"description"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, route := range names {
		method, path, _ := strings.Cut(route, " ")
		op := doc.Paths[path][strings.ToLower(method)]
		if want := table[route].roles; !slices.Equal(op.Roles, want) || (want != nil && !strings.Contains(op.Description, "Roles: ")) {
			t.Errorf("%s in the document: got x-roles %v and %q, want %v in both", route, op.Roles, op.Description, want)
		}
	}
}

// TestDeployerOutsideItsEnvironments: a deployer for the environment Away
// runs and reads tasks there, and everything that names an agent, an
// environment or a task elsewhere is refused with 403 naming the
// environments it may use, nothing started.
func TestDeployerOutsideItsEnvironments(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.UpgradeIdleTimeout = time.Hour })
	fx := setUpAPIFixture(t, ts)
	ctx := context.Background()
	k, err := ts.access.CreateAPIKey(ctx, "away-deployer", api.RoleDeployer, []string{"away"})
	if err != nil {
		t.Fatal(err)
	}
	// A finished task on the Prod agent, with an output a deployer of
	// Away must not be able to read through variables_from.
	web, err := ts.store.AgentByName(ctx, fx.agent)
	if err != nil {
		t.Fatal(err)
	}
	prodTask := uuid.NewString()
	if err := ts.store.CreateTasks(ctx, []store.Task{{ID: prodTask, Group: uuid.NewString(), AgentID: web.ID, AgentName: web.Name,
		Args: []string{"run-script", "--inline", "echo hi"}, Calamari: "1.0.0", State: api.TaskQueued, CreatedAt: time.Now().UTC()}}); err != nil {
		t.Fatal(err)
	}
	const outside = `API key "away-deployer" has the role deployer, for the environments away only`
	refused := []struct {
		name, method, path, body, msg string
	}{
		{"a task on another environment's agent", "POST", "/api/tasks", `{"agent": "web-1", "args": ["run-script", "--inline", "id"]}`, "agent web-1 (environment Prod)"},
		{"a task on another environment", "POST", "/api/tasks", `{"environment": "Prod", "args": ["x"]}`, "the environment Prod"},
		{"a list with one agent elsewhere", "POST", "/api/tasks", `{"agent": "away-1", "agents": ["web-1", "dmz-1"], "args": ["x"]}`, "agent web-1 (environment Prod), agent dmz-1 (environment DMZ); nothing was started"},
		{"outputs of a task elsewhere", "POST", "/api/tasks", `{"agent": "away-1", "args": ["x"], "variables_from": [{"task": "` + prodTask + `", "output": "X"}]}`, "the outputs of task " + prodTask},
		{"an agent elsewhere", "GET", "/api/agents/web-1", "", "agent web-1 is in the environment Prod"},
		{"tasks of an agent elsewhere", "GET", "/api/tasks?agent=web-1", "", "agent web-1 is in the environment Prod"},
		{"a task elsewhere", "GET", "/api/tasks/" + prodTask, "", "is on agent web-1, in the environment Prod"},
		{"its log", "GET", "/api/tasks/" + prodTask + "/log", "", "in the environment Prod"},
		{"its artifact", "GET", "/api/tasks/" + prodTask + "/artifacts/report.txt", "", "in the environment Prod"},
		{"cancelling it", "POST", "/api/tasks/" + prodTask + "/cancel", "", "in the environment Prod"},
		{"an upgrade, even of its own agents", "POST", "/api/rollouts", `{"environment": "Away"}`, "POST /api/rollouts needs the role admin or operator"},
		{"a Calamari push to its agents", "POST", "/api/calamari/update", `{"environment": "Away"}`, "needs the role admin or operator"},
		{"deleting its agent", "DELETE", "/api/agents/away-1", "", "needs the role admin or operator"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			before := apiState(t, ts)
			resp, got := ts.api(t, tt.method, tt.path, k.Key, strings.NewReader(tt.body))
			var e api.APIError
			json.Unmarshal(got, &e)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(e.Error, tt.msg) ||
				(!strings.Contains(tt.msg, "needs the role") && !strings.Contains(e.Error, outside)) {
				t.Errorf("got %d %q, want 403 saying %q and %q", resp.StatusCode, got, outside, tt.msg)
			}
			if after := apiState(t, ts); after != before {
				t.Errorf("refused, but the coordinator's state changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}

	// Inside its environment it reads and acts.
	var agents []api.AgentView
	if resp, got := ts.api(t, "GET", "/api/agents", k.Key, nil); resp.StatusCode != 200 || json.Unmarshal(got, &agents) != nil ||
		len(agents) != 1 || agents[0].Name != fx.away {
		t.Errorf("GET /api/agents: got %d %s, want away-1 alone", resp.StatusCode, got)
	}
	var tasks []api.TaskView
	if resp, got := ts.api(t, "GET", "/api/tasks", k.Key, nil); resp.StatusCode != 200 || json.Unmarshal(got, &tasks) != nil ||
		len(tasks) != 1 || tasks[0].ID != fx.task {
		t.Errorf("GET /api/tasks: got %d %s, want the away agent's task alone", resp.StatusCode, got)
	}
	for _, p := range []string{"/api/tasks/" + fx.task, "/api/tasks/" + fx.task + "/artifacts/report.txt", "/api/agents/" + fx.away} {
		if resp, got := ts.api(t, "GET", p, k.Key, nil); resp.StatusCode != 200 {
			t.Errorf("GET %s: got %d %s, want 200", p, resp.StatusCode, got)
		}
	}
	// Past the role: the coordinator's own answer (the agent is away).
	if resp, got := ts.api(t, "POST", "/api/tasks", k.Key, strings.NewReader(`{"environment": "AWAY", "args": ["x"]}`)); resp.StatusCode != http.StatusConflict ||
		!strings.Contains(string(got), "not connected") {
		t.Errorf("a task on its own environment: got %d %s, want 409 as the agent is not connected", resp.StatusCode, got)
	}
	if resp, got := ts.api(t, "POST", "/api/files", k.Key, strings.NewReader("payload")); resp.StatusCode != http.StatusCreated {
		t.Errorf("POST /api/files: got %d %s, want 201", resp.StatusCode, got)
	}
	if resp, got := ts.api(t, "POST", "/api/tasks/"+fx.task+"/cancel", k.Key, nil); resp.StatusCode != 200 {
		t.Errorf("cancel its own task: got %d %s, want 200", resp.StatusCode, got)
	}
}
