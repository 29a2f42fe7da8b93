package server

import (
	"context"
	"fmt"

	"github.com/tendrildeploy/tendril/api"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

func (s *Server) nodeView(n store.Node) api.NodeView {
	v := api.NodeView{
		ID: n.ID, Name: n.Name, Advertise: n.Advertise, HTTP: n.HTTP, Version: n.Version,
		StartedAt: n.StartedAt, Heartbeat: n.Heartbeat, HeartbeatAgeSeconds: n.HeartbeatAge.Seconds(),
		Alive: n.Alive(), Draining: n.Draining, Self: n.ID == s.nodeID(),
	}
	if v.Alive {
		v.Agents, v.Tasks, v.Rollouts = n.Agents, n.Tasks, n.Rollouts
	}
	switch {
	case !n.StoppedAt.IsZero():
		v.State = api.NodeStopped
	case !v.Alive:
		v.State = api.NodeDead
	case n.Draining && v.Agents == 0 && v.Tasks == 0 && v.Rollouts == 0:
		v.State, v.Drained = api.NodeDrained, true
	case n.Draining:
		v.State = api.NodeDraining
	default:
		v.State = api.NodeRunning
	}
	return v
}

// Nodes lists the coordinator nodes sharing this one's database, by name.
func (s *Server) Nodes(ctx context.Context) ([]api.NodeView, error) {
	all, err := s.refreshNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out := make([]api.NodeView, len(all))
	for i, n := range all {
		out[i] = s.nodeView(n)
	}
	return out, nil
}

// SetNodeDraining drains the named node, or undrains it. Draining, a node
// accepts no agent sessions and claims no new task, lets the tasks it
// drives finish, hands its rollouts to another node, and asks its agents
// to connect to another node: idle ones at once, busy ones once their
// tasks end. Its state is drained once it holds nothing: then it can be
// stopped, upgraded and started again (it starts draining: undrain it).
func (s *Server) SetNodeDraining(ctx context.Context, name string, draining bool) (api.NodeView, error) {
	all, err := s.refreshNodes(ctx)
	if err != nil {
		return api.NodeView{}, fmt.Errorf("drain node %s: %w", name, err)
	}
	var target *store.Node
	for i := range all {
		if all[i].Name == name {
			target = &all[i]
		}
	}
	if target == nil {
		return api.NodeView{}, kind.Errorf(store.ErrNotFound, "no coordinator node named %q (see tendril-server nodes list)", name)
	}
	if err := s.store.SetNodeDraining(ctx, target.ID, draining); err != nil {
		return api.NodeView{}, fmt.Errorf("drain node %s: %w", name, err)
	}
	s.log.Info("node draining flag set", zap.String("node", name), zap.Bool("draining", draining))
	if target.ID == s.nodeID() {
		s.applyDraining(draining)
	} else {
		s.notifyCluster(notifyDrain, target.ID)
	}
	all, err = s.refreshNodes(ctx)
	if err != nil {
		return api.NodeView{}, fmt.Errorf("drain node %s: %w", name, err)
	}
	for _, n := range all {
		if n.ID == target.ID {
			return s.nodeView(n), nil
		}
	}
	return api.NodeView{}, kind.Errorf(store.ErrNotFound, "coordinator node %q is gone", name)
}
