package server

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/kind"
)

// Nodes lists the coordinator nodes sharing this one's database, by name.
func (s *Server) Nodes(ctx context.Context) ([]api.NodeView, error) { return s.members.Nodes(ctx) }

// SetNodeDraining drains the named node, or undrains it. Draining, a node
// accepts no agent sessions and claims no new task, lets the tasks it
// drives finish, hands its rollouts to another node, and asks its agents
// to connect to another node: idle ones at once, busy ones once their
// tasks end. Its state is drained once it holds nothing: then it can be
// stopped, upgraded and started again (it starts draining: undrain it).
func (s *Server) SetNodeDraining(ctx context.Context, name string, draining bool) (api.NodeView, error) {
	target, err := s.members.Find(ctx, name)
	if errors.Is(err, kind.ErrNotFound) {
		return api.NodeView{}, err
	}
	if err != nil {
		return api.NodeView{}, fmt.Errorf("drain node %s: %w", name, err)
	}
	if err := s.store.SetNodeDraining(ctx, target.ID, draining); err != nil {
		return api.NodeView{}, fmt.Errorf("drain node %s: %w", name, err)
	}
	s.log.Info("node draining flag set", zap.String("node", name), zap.Bool("draining", draining))
	if target.ID == s.nodeID() {
		s.applyDraining(draining)
	} else {
		s.notifyCluster(cluster.NotifyDrain, target.ID)
	}
	v, err := s.members.Find(ctx, name)
	if errors.Is(err, kind.ErrNotFound) {
		return api.NodeView{}, kind.Errorf(kind.ErrNotFound, "coordinator node %q is gone", name)
	}
	if err != nil {
		return api.NodeView{}, fmt.Errorf("drain node %s: %w", name, err)
	}
	return v, nil
}
