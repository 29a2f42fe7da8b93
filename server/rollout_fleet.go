package server

import (
	"context"
	"io"

	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/metrics"
	"github.com/tendrildeploy/tendril/server/store"
)

// rolloutFleet is the coordinator as the rollout engine sees it: this
// node's sessions and the other nodes.
type rolloutFleet struct{ s *Server }

func (f rolloutFleet) NodeID() string                               { return f.s.nodeID() }
func (f rolloutFleet) Draining() bool                               { return f.s.members.Draining() }
func (f rolloutFleet) NodeGone(ctx context.Context, id string) bool { return f.s.nodeGone(ctx, id) }
func (f rolloutFleet) ConnectedAnywhere(a store.Agent) bool         { return f.s.connectedAnywhere(a) }
func (f rolloutFleet) NotifyRollout(id string)                      { f.s.notifyCluster(cluster.NotifyRollout, id) }
func (f rolloutFleet) NotifyUpgrade(id string)                      { f.s.notifyCluster(cluster.NotifyUpgrade, id) }
func (f rolloutFleet) BeginWork() (func(), error)                   { return f.s.maint.Begin() }
func (f rolloutFleet) Connected(agentID string) bool                { return f.s.sessions.get(agentID) != nil }
func (f rolloutFleet) SessionsChanged() <-chan struct{}             { return f.s.sessions.changed() }
func (f rolloutFleet) CheckHealth(ctx context.Context, agentID string) {
	if as := f.s.sessions.get(agentID); as != nil {
		f.s.checkHealth(ctx, []*agentSession{as})
	}
}

func (f rolloutFleet) SendAgentPackage(ctx context.Context, agentID string, hdr protocol.AgentUpgrade, src io.ReaderAt, size int64, sent func()) error {
	as := f.s.sessions.get(agentID)
	if as == nil {
		// The engine retries this like any interrupted transfer.
		return kind.Errorf(kind.ErrNotConnected, "agent is no longer connected to this node")
	}
	var ready protocol.UpgradeReady
	// A receiver that already held every byte (done) answers no
	// UpgradeReady; the outcome is then judged, like every other, by the
	// agent's next Hello.
	_, err := protocol.PushSigned(ctx, as.sess, as.sign, protocol.TypeAgentUpgrade, hdr,
		f.s.metrics.CountPushed(metrics.PushAgentPackage, src), size, protocol.TypeUpgradeReady, &ready, sent)
	return err
}
