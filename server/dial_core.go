package server

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/server/store"
)

// dialedKeepAlive is the ping interval of sessions the coordinator dialed.
// Accepted sessions need none on this side (their agents ping, and
// redial); for a dialed one the coordinator is the side that must notice
// a dead path and dial again.
const dialedKeepAlive = 30 * time.Second

// dialCore is the coordinator as the dialer of listening agents
// (package dial) sees it.
type dialCore struct{ s *Server }

// ShouldDial: not an agent held here already or by another live node,
// and only on the node cluster.Membership.Dialer picks for it. A record
// saying this node holds an agent it does not (a disconnect that could
// not be recorded) is cleared first: left, it would keep every node from
// dialing the agent.
func (c dialCore) ShouldDial(ctx context.Context, a store.Agent) bool {
	s := c.s
	if s.sessions.get(a.ID) != nil {
		return false
	}
	switch {
	case a.Node == s.nodeID():
		if err := s.store.DisconnectAgent(ctx, a.ID, a.Node, time.Now().UTC()); err != nil {
			s.log.Warn("clear a stale session record failed", zap.String("agent", a.Name), zap.Error(err))
			return false
		}
	case a.Node != "":
		if _, alive := s.nodeAlive(a.Node); alive {
			return false
		}
	}
	return s.members.Dialer(a.ID) == s.nodeID()
}

func (c dialCore) Start(raw, conn net.Conn, cs tls.ConnectionState, log *zap.Logger, release func()) (<-chan struct{}, error) {
	return c.s.startSession(raw, conn, cs, log, release, true)
}

func (c dialCore) End(agentID string) {
	if as := c.s.sessions.get(agentID); as != nil {
		as.sess.Close()
	}
}

func (c dialCore) Certificate(ack string) *tls.Certificate { return c.s.ids.ForAgent(ack) }
func (c dialCore) Thumbprint() string                      { return c.s.ids.Current() }
func (c dialCore) Go(f func()) bool                        { return c.s.goIfRunning(f) }

func (c dialCore) Refresh(ctx context.Context) error {
	_, err := c.s.members.Refresh(ctx)
	return err
}
