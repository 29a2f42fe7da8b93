package httpapi

// Roles: who may call which route (the Roles of each row of Routes, which
// the OpenAPI document declares as x-roles and Register enforces), and a
// deployer's scope, its environments, which the handlers of the routes a
// deployer may call apply. The console asks the same questions through
// Permit and Scope, so that a button it shows does what the API would do.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
)

// Caller is who makes a request: an API key, or a console session opened
// with a key or a user's password.
type Caller struct {
	// Who names it for messages: `API key "ci"` or `user "alice"`.
	Who  string
	Role api.Role
	// Environments are a deployer's: the only ones it may act in.
	Environments []string
}

// KeyCaller is the caller a valid API key makes.
func KeyCaller(k api.APIKeyView) Caller {
	return Caller{Who: fmt.Sprintf("API key %q", k.Name), Role: k.Role, Environments: k.Environments}
}

// UserCaller is the caller a console user makes.
func UserCaller(u api.UserView) Caller {
	return Caller{Who: fmt.Sprintf("user %q", u.Name), Role: u.Role, Environments: u.Environments}
}

// scoped reports whether c acts only in its environments. Any role but
// the three that act everywhere is scoped, so that a caller whose role was
// never set (a bug) may act nowhere rather than everywhere.
func (c Caller) scoped() bool {
	switch c.Role {
	case api.RoleAdmin, api.RoleOperator, api.RoleViewer:
		return false
	}
	return true
}

// InEnvironment reports whether c may act on agents of env.
func (c Caller) InEnvironment(env string) bool {
	return !c.scoped() || api.InEnvironments(c.Environments, env)
}

// outside is the refusal of something outside a deployer's environments.
func (c Caller) outside(what string) error {
	envs := "none"
	if len(c.Environments) > 0 {
		envs = strings.Join(c.Environments, ", ")
	}
	return kind.Errorf(kind.ErrForbidden, "%s has the role %s, for the environments %s only: %s", c.Who, c.Role, envs, what)
}

type callerContext struct{}

// WithCaller returns ctx carrying c: the API's authorization puts the key's
// caller there, and the console its session's before it calls the API's
// handlers.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerContext{}, c)
}

// requestCaller is the caller ctx carries. Without one it is a caller of
// no role, whom Permit and Scope refuse everything.
func requestCaller(ctx context.Context) Caller {
	c, _ := ctx.Value(callerContext{}).(Caller)
	if c.Who == "" {
		c.Who = "this request"
	}
	return c
}

// routeTable is Routes by "METHOD /path" pattern, built once.
var routeTable = sync.OnceValue(func() map[string]Route {
	m := map[string]Route{}
	for _, rt := range Routes() {
		m[rt.Method+" "+rt.Path] = rt
	}
	return m
})

// RouteRoles returns the roles that may call route ("POST /api/tasks"),
// nil for a public route or one that does not exist.
func RouteRoles(route string) []api.Role {
	return slices.Clone(routeTable()[route].Roles)
}

// Permit returns nil if c may call route ("POST /api/tasks", as in
// Routes), else an error of kind ErrForbidden naming c's role, what it
// may do, and the roles the route needs. A route not in the table is
// refused: only a bug asks about one.
func Permit(c Caller, route string) error {
	rt, ok := routeTable()[route]
	switch {
	case !ok:
		return kind.Errorf(kind.ErrForbidden, "%s is not a route of this API", route)
	case rt.Public, slices.Contains(rt.Roles, c.Role):
		return nil
	}
	role := string(c.Role)
	if role == "" {
		role = "none"
	}
	return kind.Errorf(kind.ErrForbidden, "%s has the role %s, which may %s: %s needs the role %s",
		c.Who, role, api.RoleAllows(c.Role, c.Environments), route, roleList(rt.Roles))
}

// roleList is "admin, operator or deployer".
func roleList(roles []api.Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// Scope is what one caller sees of agents and tasks, and may ask of
// them: everything for every role but deployer; for a deployer, only the
// agents of its environments and their tasks.
type Scope struct {
	co     Coordinator
	caller Caller
}

// Scope returns the scope of c.
func (h *API) Scope(c Caller) Scope { return Scope{co: h.co, caller: c} }

// Agents lists the agents the caller may see.
func (s Scope) Agents(ctx context.Context) ([]api.AgentView, error) {
	all, err := s.co.Agents(ctx)
	if err != nil || !s.caller.scoped() {
		return all, err
	}
	out := []api.AgentView{}
	for _, a := range all {
		if s.caller.InEnvironment(a.Environment) {
			out = append(out, a)
		}
	}
	return out, nil
}

// Agent returns one agent, refused (kind.ErrForbidden) outside the
// caller's environments.
func (s Scope) Agent(ctx context.Context, name string) (api.AgentView, error) {
	a, err := s.co.Agent(ctx, name)
	if err != nil {
		return api.AgentView{}, err
	}
	if !s.caller.InEnvironment(a.Environment) {
		return api.AgentView{}, s.caller.outside(fmt.Sprintf("agent %s is in the environment %s", a.Name, a.Environment))
	}
	return a, nil
}

// maxTaskList is the most tasks GET /api/tasks lists.
const maxTaskList = 1000

// Tasks lists the tasks the caller may see. A deployer's list is the
// newest tasks of its environments' agents among the newest maxTaskList,
// since the store filters by one agent at most: a list of a busy fleet
// may be shorter than its limit.
func (s Scope) Tasks(ctx context.Context, f api.TaskFilter) ([]api.TaskView, error) {
	if !s.caller.scoped() {
		return s.co.Tasks(ctx, f)
	}
	if f.Agent != "" {
		if _, err := s.Agent(ctx, f.Agent); err != nil {
			return nil, err
		}
		return s.co.Tasks(ctx, f)
	}
	visible, err := s.agentNames(ctx)
	if err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	f.Limit = maxTaskList
	all, err := s.co.Tasks(ctx, f)
	if err != nil {
		return nil, err
	}
	out := []api.TaskView{}
	for _, t := range all {
		if visible[t.Agent] && len(out) < limit {
			out = append(out, t)
		}
	}
	return out, nil
}

// agentNames are the names of the agents the caller may see.
func (s Scope) agentNames(ctx context.Context) (map[string]bool, error) {
	agents, err := s.Agents(ctx)
	if err != nil {
		return nil, err
	}
	names := make(map[string]bool, len(agents))
	for _, a := range agents {
		names[a.Name] = true
	}
	return names, nil
}

// Task returns one task, refused (kind.ErrForbidden) when its agent is
// outside the caller's environments or no longer exists.
func (s Scope) Task(ctx context.Context, id string) (api.TaskView, error) {
	t, err := s.co.Task(ctx, id)
	if err != nil {
		return api.TaskView{}, noSuchTask(id, err)
	}
	if !s.caller.scoped() {
		return t, nil
	}
	a, err := s.co.Agent(ctx, t.Agent)
	switch {
	case errors.Is(err, kind.ErrNotFound):
		return api.TaskView{}, s.caller.outside(fmt.Sprintf("task %s ran on agent %s, which no longer exists", id, t.Agent))
	case err != nil:
		return api.TaskView{}, err
	case !s.caller.InEnvironment(a.Environment):
		return api.TaskView{}, s.caller.outside(fmt.Sprintf("task %s is on agent %s, in the environment %s", id, a.Name, a.Environment))
	}
	return t, nil
}

// CheckTaskRequest refuses, as a whole and before anything starts, a
// task request that reaches outside the caller's environments: an agent
// or an environment of another, or a variable taken from the output of a
// task there. Agents and tasks that do not exist are left for
// CreateTasks to refuse.
func (s Scope) CheckTaskRequest(ctx context.Context, req api.TaskRequest) error {
	if !s.caller.scoped() {
		return nil
	}
	var outside []string
	if req.Environment != "" && !s.caller.InEnvironment(req.Environment) {
		outside = append(outside, fmt.Sprintf("the environment %s", req.Environment))
	}
	for _, n := range append([]string{req.Agent}, req.Agents...) {
		if n == "" {
			continue
		}
		a, err := s.co.Agent(ctx, n)
		if errors.Is(err, kind.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if !s.caller.InEnvironment(a.Environment) {
			outside = append(outside, fmt.Sprintf("agent %s (environment %s)", a.Name, a.Environment))
		}
	}
	for _, vf := range req.VariablesFrom {
		if _, err := s.Task(ctx, vf.Task); errors.Is(err, kind.ErrForbidden) {
			outside = append(outside, fmt.Sprintf("the outputs of task %s", vf.Task))
		} else if err != nil && !errors.Is(err, kind.ErrNotFound) {
			return err
		}
	}
	if len(outside) > 0 {
		return s.caller.outside("this request names " + strings.Join(outside, ", ") + "; nothing was started")
	}
	return nil
}
