package server

import (
	"sync"
	"time"

	"github.com/hashicorp/yamux"
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
	connectedAt time.Time
	remote      string
	// serverAck is the coordinator thumbprint the agent had confirmed
	// when the session began (store.Agent.ServerThumbprintAck).
	serverAck string
	// signingKey is the coordinator signing key the agent said it pinned,
	// "" if it did not say (older agents).
	signingKey string
	// isolates is true when the agent honours tasks' isolation and locks
	// (protocol.FeatureIsolation); older agents run every task at once.
	isolates bool
	// variables is true when the agent gives tasks their variables, masks
	// sensitive ones and reports outputs and artifacts
	// (protocol.FeatureVariables).
	variables bool
}

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
