package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// CheckAgentHealth checks one connected agent's health now, rather than at
// the next interval, records the result and returns the agent's view. The
// node holding the agent's session checks it, whichever node is asked.
// An agent that lacks the latest Calamari gets it pushed in the
// background, as after any health check.
func (s *Server) CheckAgentHealth(ctx context.Context, name string) (api.AgentView, error) {
	a, err := s.store.AgentByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return api.AgentView{}, kind.Errorf(store.ErrNotFound, "no agent named %q", name)
	}
	if err != nil {
		return api.AgentView{}, fmt.Errorf("check health of agent %q: %w", name, err)
	}
	if s.sessions.get(a.ID) == nil && (a.Node == "" || a.Node == s.nodeID()) {
		return api.AgentView{}, kind.Errorf(kind.ErrNotConnected, "agent %s is not connected to this coordinator; its health cannot be checked until it reconnects", name)
	}
	if err := s.atHolder(ctx, a, actionHealthCheck, nil, nil, ""); err != nil {
		return api.AgentView{}, err
	}
	return s.Agent(ctx, name)
}

// healthCheckAction is the health check's agentAction: it records the
// result, which the node asked reads from the store.
func (s *Server) healthCheckAction(ctx context.Context, as *agentSession, _ json.RawMessage, _ string) (any, error) {
	if s.checkHealth(ctx, []*agentSession{as}) == 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("check health of agent %q: %w", as.name, ctx.Err())
	}
	return nil, nil
}
