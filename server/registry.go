package server

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tendrildeploy/tendril/protocol"
)

// agentSession is one connected agent.
type agentSession struct {
	agentID     string
	name        string
	thumbprint  string
	sess        *yamux.Session
	tlsVersion  uint16
	protocol    int
	upgradeOnly bool
	// listening is true for an agent that listens and is dialed
	// (store.Agent.Listening), for the sessions-by-mode metric.
	listening   bool
	connectedAt time.Time
	remote      string
	// serverAck is the coordinator thumbprint the agent had confirmed
	// when the session began (store.Agent.ServerThumbprintAck).
	serverAck string
	// signingKey is the coordinator signing key the agent said it pinned,
	// "" if it did not say (older agents).
	signingKey string
	// sign signs the requests sent to the agent (protocol.Intent).
	sign protocol.Signer
	// isolates is true when the agent honours tasks' isolation and locks
	// (protocol.FeatureIsolation); older agents run every task at once.
	isolates bool
	// variables is true when the agent gives tasks their variables, masks
	// sensitive ones and reports outputs and artifacts
	// (protocol.FeatureVariables).
	variables bool
	// retains is true when the agent applies the machine policy's work
	// retention (protocol.FeatureWorkRetention).
	retains bool
	// taskOutcome is true when the agent reports in TaskEnd when a task
	// finished and the output it lost (protocol.FeatureTaskOutcome).
	taskOutcome bool
	// startsCalamari is true when the agent answers a task start whose
	// Calamari version it lacks with protocol.CodeCalamariMissing when
	// asked to (protocol.FeatureStartCalamari): its tasks start without
	// a CalamariCheck first.
	startsCalamari bool
	// retention is the rule the agent acknowledged (or was welcomed
	// with), nil if none: server/retention.go.
	retention atomic.Pointer[protocol.WorkRetention]
}

// retentionSent is the work retention rule the agent was told last, or
// if none a rule no policy holds (Keep -1), which every rule differs from.
func (as *agentSession) retentionSent() protocol.WorkRetention {
	if p := as.retention.Load(); p != nil {
		return *p
	}
	return protocol.WorkRetention{Keep: -1}
}

func (as *agentSession) setRetentionSent(rule protocol.WorkRetention) { as.retention.Store(&rule) }

// registry maps agent IDs to their live session. An agent has at most one:
// a newer session (a reconnect, or the make-before-break of a certificate
// rotation) replaces the older one.
type registry struct {
	mu sync.RWMutex
	m  map[string]*agentSession
	// added is closed and replaced whenever a session is added, waking
	// everything waiting for an agent to connect.
	added chan struct{}
}

func newRegistry() *registry {
	return &registry{m: make(map[string]*agentSession), added: make(chan struct{})}
}

// add installs s and returns the session it replaced, if any.
func (r *registry) add(s *agentSession) (old *agentSession) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old = r.m[s.agentID]
	r.m[s.agentID] = s
	close(r.added)
	r.added = make(chan struct{})
	return old
}

// changed returns a channel closed when the next session is added.
func (r *registry) changed() <-chan struct{} {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.added
}

// remove deletes s if it is still the agent's session.
func (r *registry) remove(s *agentSession) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[s.agentID] == s {
		delete(r.m, s.agentID)
		return true
	}
	return false
}

func (r *registry) get(id string) *agentSession {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.m[id]
}

func (r *registry) snapshot() []*agentSession {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*agentSession, 0, len(r.m))
	for _, s := range r.m {
		out = append(out, s)
	}
	return out
}

func (r *registry) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.m)
}
