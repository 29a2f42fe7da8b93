package server

import (
	"context"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

// SetMaintenance turns maintenance mode on or off and stores it.
func (s *Server) SetMaintenance(ctx context.Context, on bool) (api.MaintenanceView, error) {
	return s.maint.Set(ctx, on)
}

// Maintenance returns the state and what is still running.
func (s *Server) Maintenance(ctx context.Context) (api.MaintenanceView, error) {
	return s.maint.View(ctx)
}

// Policy returns the stored machine policy.
func (s *Server) Policy(ctx context.Context) (api.PolicyView, error) { return s.policy.View(ctx) }

// SetPolicy changes the fields of the machine policy given in req.
func (s *Server) SetPolicy(ctx context.Context, req api.PolicyRequest) (api.PolicyView, error) {
	return s.policy.Set(ctx, req)
}

// busyRollouts counts the running rollouts that still upgrade agents,
// for maintenance mode's view.
func (s *Server) busyRollouts(ctx context.Context, rs []store.Rollout) (int, error) {
	return s.rollouts.BusyRollouts(ctx, rs)
}
