package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// taskVariables checks a request's variables and resolves the ones taken
// from earlier tasks' outputs. Plain and sensitive variables come back
// apart: the sensitive ones are sealed per task before they are stored.
func (s *Server) taskVariables(ctx context.Context, req api.TaskRequest) (plain []store.TaskVariable, sensitive []api.Variable, err error) {
	all := slices.Clone(req.Variables)
	for _, vf := range req.VariablesFrom {
		v, err := s.variableFrom(ctx, vf)
		if err != nil {
			return nil, nil, err
		}
		all = append(all, v)
	}
	wire := make([]protocol.Variable, len(all))
	for i, v := range all {
		wire[i] = protocol.Variable{Name: v.Name, Value: v.Value, Sensitive: v.Sensitive}
	}
	if err := protocol.ValidateVariables(wire); err != nil {
		return nil, nil, kind.Errorf(kind.ErrBadRequest, "%v", err)
	}
	for _, v := range all {
		if v.Sensitive {
			sensitive = append(sensitive, v)
		} else {
			plain = append(plain, store.TaskVariable{Name: v.Name, Value: v.Value})
		}
	}
	if len(sensitive) > 0 && s.sealer == nil {
		return nil, nil, kind.Errorf(kind.ErrConflict, "this coordinator's data folder has no master key (master.key), so it cannot keep sensitive variables; restore the file from a backup of the data folder")
	}
	return plain, sensitive, nil
}

// variableFrom is the variable an earlier task's output gives.
func (s *Server) variableFrom(ctx context.Context, vf api.VariableFrom) (api.Variable, error) {
	name := vf.Name
	if name == "" {
		name = vf.Output
	}
	t, err := s.store.Task(ctx, vf.Task)
	if errors.Is(err, store.ErrNotFound) {
		return api.Variable{}, kind.Errorf(store.ErrNotFound, "variable %s: no task %q (see tendril-server task list)", name, vf.Task)
	}
	if err != nil {
		return api.Variable{}, err
	}
	if !t.Finished() {
		return api.Variable{}, kind.Errorf(kind.ErrConflict, "variable %s: task %s is still %s; its outputs are known once it has finished", name, vf.Task, t.State)
	}
	v, ok := t.Outputs[vf.Output]
	if !ok {
		has := "it set no outputs"
		if len(t.Outputs) > 0 {
			has = "its outputs are " + strings.Join(slices.Sorted(maps.Keys(t.Outputs)), ", ")
		}
		return api.Variable{}, kind.Errorf(kind.ErrBadRequest, "variable %s: task %s has no output %q (%s)", name, vf.Task, vf.Output, has)
	}
	return api.Variable{Name: name, Value: v}, nil
}

// sealContext binds a sealed value to its task and name.
func sealContext(taskID, name string) string { return "task/" + taskID + "/variable/" + name }

// sealVariables seals a task's sensitive variables under the master key.
func (s *Server) sealVariables(taskID string, vars []api.Variable) []store.SealedVariable {
	if len(vars) == 0 {
		return nil
	}
	out := make([]store.SealedVariable, len(vars))
	for i, v := range vars {
		out[i] = store.SealedVariable{Name: v.Name, Sealed: s.sealer.Seal([]byte(v.Value), sealContext(taskID, v.Name))}
	}
	return out
}

// wireVariables is what the agent gets: the plain values and the
// sensitive ones opened.
func (s *Server) wireVariables(t store.Task) ([]protocol.Variable, error) {
	out := make([]protocol.Variable, 0, len(t.Variables)+len(t.Sensitive))
	for _, v := range t.Variables {
		out = append(out, protocol.Variable{Name: v.Name, Value: v.Value})
	}
	for _, v := range t.Sensitive {
		if s.sealer == nil {
			return nil, fmt.Errorf("sensitive variable %s: this coordinator has no master key", v.Name)
		}
		value, err := s.sealer.Open(v.Sealed, sealContext(t.ID, v.Name))
		if err != nil {
			return nil, fmt.Errorf("sensitive variable %s: %w (was master.key replaced?)", v.Name, err)
		}
		out = append(out, protocol.Variable{Name: v.Name, Value: string(value), Sensitive: true})
	}
	return out, nil
}

// variableViews is how the API shows a task's variables: sensitive ones
// by name only.
func variableViews(t store.Task) []api.Variable {
	if len(t.Variables)+len(t.Sensitive) == 0 {
		return nil
	}
	out := make([]api.Variable, 0, len(t.Variables)+len(t.Sensitive))
	for _, v := range t.Variables {
		out = append(out, api.Variable{Name: v.Name, Value: v.Value})
	}
	for _, v := range t.Sensitive {
		out = append(out, api.Variable{Name: v.Name, Sensitive: true})
	}
	return out
}

// taskAgents resolves a request's targets: named agents (every name must
// exist, or nothing runs anywhere) or an environment's.
func (s *Server) taskAgents(ctx context.Context, req api.TaskRequest) ([]store.Agent, error) {
	var names []string
	for _, n := range append([]string{req.Agent}, req.Agents...) {
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) > 0 && req.Environment != "" {
		return nil, kind.Errorf(kind.ErrBadRequest, "name exactly one of agents or an environment, not both")
	}
	if len(names) == 0 {
		return s.targetAgents(ctx, api.UpdateTarget{Environment: req.Environment})
	}
	var agents []store.Agent
	var unknown []string
	for _, n := range names {
		a, err := s.store.AgentByName(ctx, n)
		if errors.Is(err, store.ErrNotFound) {
			unknown = append(unknown, n)
			continue
		}
		if err != nil {
			return nil, err
		}
		agents = append(agents, a)
	}
	if len(unknown) > 0 {
		return nil, kind.Errorf(store.ErrNotFound, "no agent named %s; nothing was started (see tendril-server agents list)", quoteAll(unknown))
	}
	return agents, nil
}

// quoteAll is names quoted and joined for a message.
func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}
