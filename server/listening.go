package server

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// AddListeningAgent adds an agent the coordinator dials: it is enrolled
// by its address and the thumbprint the operator read on its machine, and
// the dialer connects to it from then on.
func (s *Server) AddListeningAgent(ctx context.Context, req api.ListeningAgentRequest) (api.AgentView, error) {
	if err := protocol.ValidateAddress(req.Address); err != nil {
		return api.AgentView{}, kind.Errorf(kind.ErrBadRequest, "add listening agent: %v", err)
	}
	thumb, err := certs.NormalizeThumbprint(req.Thumbprint)
	if err != nil {
		return api.AgentView{}, kind.Errorf(kind.ErrBadRequest, "add listening agent: agent %v", err)
	}
	name := req.Name
	if name == "" {
		name, _, _ = net.SplitHostPort(req.Address)
	}
	if err := api.ValidateName("agent", name); err != nil {
		return api.AgentView{}, kind.Errorf(kind.ErrBadRequest, "add listening agent: %v", err)
	}
	if err := api.ValidateName("environment", req.Environment); err != nil {
		return api.AgentView{}, kind.Errorf(kind.ErrBadRequest, "add listening agent: %v", err)
	}
	a, err := s.store.AddListening(ctx, store.ListeningParams{
		NewID: uuid.NewString(), Name: name, Environment: req.Environment,
		Thumbprint: thumb, Address: req.Address, Now: time.Now().UTC(),
	})
	if err != nil {
		return api.AgentView{}, err // the store names the operation
	}
	s.log.Info("listening agent added", zap.String("agent", a.Name), zap.String("address", a.Address), zap.String("thumbprint", a.Thumbprint))
	s.dialer.Kick()
	return s.Agent(ctx, a.Name)
}

// SetAgentAddress moves a listening agent: its session, if any, ends and
// the dialer connects to the new address.
func (s *Server) SetAgentAddress(ctx context.Context, name, address string) (api.AgentView, error) {
	if err := protocol.ValidateAddress(address); err != nil {
		return api.AgentView{}, kind.Errorf(kind.ErrBadRequest, "set address of agent %q: %v", name, err)
	}
	a, err := s.store.AgentByName(ctx, name)
	if err != nil {
		return api.AgentView{}, fmt.Errorf("set address of agent %q: %w", name, err)
	}
	if !a.Listening() {
		return api.AgentView{}, kind.Errorf(kind.ErrBadRequest, "set address of agent %q: it is a polling agent, which dials the coordinator: there is no address to change", name)
	}
	if err := s.store.SetAgentAddress(ctx, a.ID, address); err != nil {
		return api.AgentView{}, fmt.Errorf("set address of agent %q: %w", name, err)
	}
	s.log.Info("listening agent moved", zap.String("agent", a.Name), zap.String("from", a.Address), zap.String("to", address))
	s.dialer.Redial(a.ID)
	// The node that holds it, or tries to, may be another.
	s.notifyCluster(cluster.NotifyRedial, a.ID)
	return s.Agent(ctx, name)
}
