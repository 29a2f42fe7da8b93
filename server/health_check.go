package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// CheckAgentHealth checks one connected agent's health now, rather than at
// the next interval, records the result and returns the agent's view. An
// agent that lacks the latest Calamari gets it pushed in the background,
// as after any health check.
func (s *Server) CheckAgentHealth(ctx context.Context, name string) (api.AgentView, error) {
	a, err := s.store.AgentByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return api.AgentView{}, kind.Errorf(store.ErrNotFound, "no agent named %q", name)
	}
	if err != nil {
		return api.AgentView{}, fmt.Errorf("check health of agent %q: %w", name, err)
	}
	as := s.sessions.get(a.ID)
	if as == nil {
		return api.AgentView{}, kind.Errorf(kind.ErrNotConnected, "agent %s is not connected to this coordinator; its health cannot be checked until it reconnects", name)
	}
	if s.checkHealth(ctx, []*agentSession{as}) == 0 {
		if err := ctx.Err(); err != nil {
			return api.AgentView{}, fmt.Errorf("check health of agent %q: %w", name, err)
		}
	}
	return s.Agent(ctx, name)
}
