package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"golang.org/x/mod/semver"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/calamari"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/rollout"
	"github.com/tendrildeploy/tendril/server/secret"
	"github.com/tendrildeploy/tendril/server/store"
)

// Agents lists every agent with its live state.
func (s *Server) Agents(ctx context.Context) ([]api.AgentView, error) {
	var out []api.AgentView
	err := s.eachAgentView(ctx, func(n int, v api.AgentView) {
		if out == nil {
			out = make([]api.AgentView, 0, n)
		}
		out = append(out, v)
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []api.AgentView{}
	}
	return out, nil
}

// eachAgentView calls f with every agent's view, one at a time, and the
// number of agents. A caller that only counts them (the fleet metrics)
// holds no list of views: at 10,000 agents that is megabytes the heap
// would grow to at every scrape.
func (s *Server) eachAgentView(ctx context.Context, f func(n int, v api.AgentView)) error {
	all, err := s.store.ListAgents(ctx)
	if err != nil {
		return fmt.Errorf("list agents: %w", err)
	}
	vc, err := s.viewContext(ctx)
	if err != nil {
		return fmt.Errorf("list agents: %w", err)
	}
	for _, a := range all {
		f(len(all), s.view(a, vc))
	}
	return nil
}

// Agent returns one agent by name.
func (s *Server) Agent(ctx context.Context, name string) (api.AgentView, error) {
	a, err := s.store.AgentByName(ctx, name)
	if err != nil {
		return api.AgentView{}, fmt.Errorf("agent %q: %w", name, err)
	}
	vc, err := s.viewContext(ctx)
	if err != nil {
		return api.AgentView{}, fmt.Errorf("agent %q: %w", name, err)
	}
	return s.view(a, vc), nil
}

// viewContext is what every agent's view is judged against, loaded once
// per listing.
type viewContext struct {
	latestCalamari string
	newestAgent    map[string]string // "os/arch" -> newest agent package version
	nodes          map[string]store.Node
}

func (s *Server) viewContext(ctx context.Context) (viewContext, error) {
	latest, err := s.latestCalamari(ctx)
	if err != nil {
		return viewContext{}, err
	}
	pkgs, err := s.store.AgentPackages(ctx)
	if err != nil {
		return viewContext{}, err
	}
	// Agents connected to other nodes are connected too, for as long as
	// their node is alive.
	nodes, err := s.members.Refresh(ctx)
	if err != nil {
		return viewContext{}, err
	}
	byID := make(map[string]store.Node, len(nodes))
	for _, n := range nodes {
		byID[n.ID] = n
	}
	return viewContext{latestCalamari: latest.Version, newestAgent: rollout.NewestPackages(pkgs), nodes: byID}, nil
}

// upgradeRequired reports whether the agent speaks only protocols below
// this coordinator's minimum: it can be upgraded and nothing else.
func (s *Server) upgradeRequired(a store.Agent) bool {
	as := s.sessions.get(a.ID)
	return a.Protocol != 0 && a.Protocol < s.cfg.ProtocolMin || as != nil && as.upgradeOnly
}

// features are what this coordinator offers that an agent must say it
// can do, in the words the API and the console show.
var features = []struct{ name, words string }{
	{protocol.FeatureIsolation, "task isolation and locks"},
	{protocol.FeatureVariables, "task variables, output variables and artifacts"},
	{protocol.FeatureWorkRetention, "disk retention"},
	{protocol.FeatureSignedRequests, "signed requests"},
	{protocol.FeatureEndorsedCertificates, "reconnecting after coordinator certificate rotations it missed"},
	{protocol.FeatureTaskOutcome, "keeping and reporting task output its disk refuses"},
}

// lacks is what an agent that has connected cannot do of features.
func lacks(a store.Agent) []string {
	if a.Protocol == 0 {
		return nil // never connected: nothing is known
	}
	var out []string
	for _, f := range features {
		if !slices.Contains(a.Features, f.name) {
			out = append(out, f.words)
		}
	}
	return out
}

func (s *Server) view(a store.Agent, vc viewContext) api.AgentView {
	latestCalamari := vc.latestCalamari
	v := api.AgentView{
		ID: a.ID, Name: a.Name, Environment: a.Environment, Version: a.Version,
		Health: a.Health, HealthDetail: a.HealthDetail, TLSVersion: a.TLSVersion,
		Thumbprint: a.Thumbprint, CalamariVersion: newestVersion(a.CalamariVersions),
		Upgrade: api.UpgradeNone, OS: a.OS, Arch: a.Arch, Protocol: a.Protocol, DiskFree: a.DiskFree,
		HealthRTTMillis: float64(a.HealthRTT.Microseconds()) / 1000, RegisteredAt: a.RegisteredAt,
		LastSeen: rfc3339(a.LastSeen), LastHealthAt: rfc3339(a.LastHealthAt),
		Mode: api.ModePolling, Address: a.Address, Work: a.Work,
		Features: a.Features, Lacks: lacks(a),
	}
	if a.Listening() {
		v.Mode = api.ModeListening
	}
	v.CalamariCurrent = calamari.Current(latestCalamari, a.CalamariVersions)
	as := s.sessions.get(a.ID)
	n, known := vc.nodes[a.Node]
	elsewhere := as == nil && a.Node != "" && a.Node != s.nodeID()
	remote := elsewhere && known && n.Alive()
	v.Connected = as != nil || remote
	if !v.Connected {
		// A late failure of another node's dial is not news while a
		// session is up.
		v.DialError = a.DialError
	}
	switch {
	case as != nil:
		// The session is live now; its TLS version is the one in force.
		v.LastSeen = rfc3339(time.Now().UTC())
		v.TLSVersion = protocol.TLSVersionName(as.tlsVersion)
		v.Protocol = as.protocol
		v.Node = s.members.Name()
		v.NodeState = api.NodeRunning
		if s.members.Draining() {
			v.NodeState = api.NodeDraining
		}
		if s.pinsOtherKey(as) {
			warn(&v, fmt.Sprintf("the agent trusts another signing key (%s): it refuses this coordinator's Calamari and upgrades; register it again with --force", as.signingKey))
		}
	case remote:
		// Another node holds the session; what it recorded at Hello is
		// in force.
		v.LastSeen = rfc3339(time.Now().UTC())
		v.Node = n.Name
		v.NodeState = liveNodeState(n)
		if n.Late() {
			warn(&v, fmt.Sprintf("coordinator node %s, which holds its session, last beat %s ago (it beats every %s): it may be down, and the agent unreachable until it reconnects to another node",
				n.Name, n.HeartbeatAge.Round(100*time.Millisecond), n.HeartbeatEvery))
		}
	case elsewhere:
		// The node that recorded the session is dead: the session went
		// with it, whatever the record says.
		v.Health, v.NodeState = api.HealthUnavailable, api.NodeDead
		switch {
		case !known:
			v.HealthDetail = "not connected: the coordinator node that held its session is gone"
		case !n.StoppedAt.IsZero():
			v.HealthDetail, v.NodeState = fmt.Sprintf("not connected: coordinator node %s, which held its session, has stopped", n.Name), api.NodeStopped
		default:
			v.HealthDetail = fmt.Sprintf("not connected: coordinator node %s, which held its session, stopped beating %s ago",
				n.Name, n.HeartbeatAge.Round(time.Second))
		}
	case a.DialError != "":
		v.Health = api.HealthUnavailable
		v.HealthDetail = "not connected: " + a.DialError
	case s.refusedFor(a.ID) != "":
		v.Health = api.HealthUnavailable
		v.HealthDetail = "not connected: refused: " + s.refusedFor(a.ID)
	default:
		v.Health = api.HealthUnavailable
		v.HealthDetail = "not connected"
	}
	newest := vc.newestAgent[a.OS+"/"+a.Arch]
	switch {
	case s.upgradeRequired(a):
		v.Upgrade, v.UpgradeTo = api.UpgradeRequired, newest
	case newest != "" && a.Version != "" && bundle.CompareVersions(newest, a.Version) > 0:
		v.Upgrade, v.UpgradeTo = api.UpgradeRecommended, newest
	}
	return v
}

// warn adds a note to an agent's health, and makes it a warning unless
// it is worse already: a note never hides a worse health.
func warn(v *api.AgentView, note string) {
	if v.Health == api.HealthHealthy || v.Health == "" {
		v.Health, v.HealthDetail = api.HealthWarning, note
		return
	}
	v.HealthDetail = strings.TrimPrefix(v.HealthDetail+"; "+note, "; ")
}

// liveNodeState is the state of a live node holding an agent's session
// as the agent's view shows it (not drained: it holds the agent).
func liveNodeState(n store.Node) string {
	switch {
	case n.Late():
		return api.NodeLate
	case n.Draining:
		return api.NodeDraining
	}
	return api.NodeRunning
}

// refusedFor is why this node refused the agent's last Hello, if it did.
func (s *Server) refusedFor(agentID string) string {
	why, _ := s.refused.Load(agentID)
	msg, _ := why.(string)
	return msg
}

// pinsOtherKey reports whether the agent said it pinned another signing
// key than this coordinator's: it would refuse everything signed here.
func (s *Server) pinsOtherKey(as *agentSession) bool {
	return as.signingKey != "" && as.signingKey != s.signing.Public()
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// newestVersion returns the highest semantic version in vs, or "".
func newestVersion(vs []string) string {
	best := ""
	for _, v := range vs {
		if best == "" || semver.Compare("v"+v, "v"+best) > 0 {
			best = v
		}
	}
	return best
}

// DeleteAgent removes an agent by name: its session is dropped at once and
// its certificate is refused from then on.
func (s *Server) DeleteAgent(ctx context.Context, name string) error {
	a, err := s.store.AgentByName(ctx, name)
	if err != nil {
		return fmt.Errorf("delete agent %q: %w", name, err)
	}
	if err := s.store.DeleteAgent(ctx, a.ID); err != nil {
		return fmt.Errorf("delete agent %q: %w", name, err)
	}
	s.dropAgent(a.ID, "this agent was deleted from the coordinator")
	s.health.Forget(a.ID)
	s.refused.Delete(a.ID)
	s.abandonAgentTasks(ctx, a.ID)
	// Its session may be on another node.
	s.notifyCluster(cluster.NotifyDrop, a.ID)
	s.log.Info("agent deleted", zap.String("agent", name), zap.String("thumbprint", a.Thumbprint))
	return nil
}

// CreateToken issues a one-time enrollment token for an environment.
// advertise is the coordinator addresses agents should dial; none means
// every live node's advertised address, this node's first.
func (s *Server) CreateToken(ctx context.Context, environment string, ttl time.Duration, advertise []string) (api.TokenResult, error) {
	if err := api.ValidateName("environment", environment); err != nil {
		return api.TokenResult{}, err
	}
	if ttl <= 0 || ttl > api.MaxTokenTTL {
		return api.TokenResult{}, fmt.Errorf("token lifetime %s: must be more than 0 and at most %s", ttl, api.MaxTokenTTL)
	}
	for _, a := range advertise {
		if err := protocol.ValidateAddress(a); err != nil {
			return api.TokenResult{}, err
		}
	}
	if len(advertise) == 0 {
		advertise = s.members.LiveAddrs(ctx)
	}
	tok := secret.New("tdt_")
	now := time.Now().UTC()
	t := store.Token{ID: uuid.NewString(), Hash: secret.Hash(tok), Environment: environment, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := s.store.CreateToken(ctx, t); err != nil {
		return api.TokenResult{}, fmt.Errorf("create token: %w", err)
	}
	join := protocol.Join{Servers: advertise, Thumbprint: s.Thumbprint(), Token: tok}
	return api.TokenResult{Token: tok, Join: join.String(), Environment: environment, ExpiresAt: t.ExpiresAt}, nil
}

// advertiseAddr is this node's agent address to put in join strings
// when the operator gave none: Config.Advertise, or else the listen
// address with a wildcard host replaced by this machine's name.
func (s *Server) advertiseAddr() string {
	return cluster.Advertised(s.AgentAddr(), s.cfg.Advertise)
}

// RotateCertificate replaces the coordinator's certificate without
// dropping agents: connected agents are told to trust the next certificate
// before it is served; agents that were away are served the previous
// certificate (they ask for it by hint) and learn the new one on their
// next session. The previous certificate is retired once every agent
// trusts the current one.
//
// An agent that has not learned the current certificate either (it was
// away for the last rotation too) knows neither certificate served after
// this one: it gets in only if it accepts certificates endorsed by the
// signing key. Unless force is set, the rotation is refused when it
// would lock out agents that do not.
func (s *Server) RotateCertificate(ctx context.Context, force bool) (api.RotationResult, error) {
	var res api.RotationResult
	behind, stranded, err := s.rotationBehind(ctx)
	if err != nil {
		return api.RotationResult{}, fmt.Errorf("rotate coordinator certificate: %w", err)
	}
	if len(stranded) > 0 && !force {
		return api.RotationResult{}, kind.Errorf(kind.ErrConflict,
			"rotating now would lock out %s: older agents that have not yet learned the current certificate, and cannot check a new one's endorsement; let them connect first (they learn it then), or rotate with --force and register them again with tendril-agent register --force",
			strings.Join(stranded, ", "))
	}
	res.Behind, res.Stranded = behind, stranded
	announce := func(ctx context.Context, trust []string) error {
		sessions := s.sessions.snapshot()
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for _, as := range sessions {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				err := s.sendServerCertificates(ctx, as, trust)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					res.Failed = append(res.Failed, as.name)
					s.log.Warn("announce coordinator certificate failed", zap.String("agent", as.name), zap.Error(err))
					return
				}
				res.Notified++
			}()
		}
		wg.Wait()
		slices.Sort(res.Failed)
		return nil
	}
	next, prev, err := s.ids.Rotate(ctx, s.signing, announce)
	if err != nil {
		return api.RotationResult{}, fmt.Errorf("rotate coordinator certificate: %w", err)
	}
	res.Thumbprint, res.Previous = next, prev
	s.log.Info("coordinator certificate rotated", zap.String("thumbprint", next), zap.String("previous", prev),
		zap.Int("notified", res.Notified), zap.Int("failed", len(res.Failed)))
	// Agents told before the switch acknowledged the new thumbprint
	// already; if that is all of them the previous certificate can go.
	s.maybeRetirePrevious(ctx)
	return res, nil
}

// rotationBehind lists the agents that have not acknowledged the current
// coordinator certificate, and of those the ones a rotation would lock out:
// they have connected (so what they can do is known) without saying they
// accept endorsed certificates.
func (s *Server) rotationBehind(ctx context.Context) (behind, stranded []string, err error) {
	all, err := s.store.ListAgents(ctx)
	if err != nil {
		return nil, nil, err
	}
	cur := s.ids.Current()
	for _, a := range all {
		if a.ServerThumbprintAck == cur || s.sessions.get(a.ID) != nil {
			continue // connected agents are told before the switch
		}
		behind = append(behind, a.Name)
		if a.Protocol > 0 && !slices.Contains(a.Features, protocol.FeatureEndorsedCertificates) {
			stranded = append(stranded, a.Name)
		}
	}
	slices.Sort(behind)
	slices.Sort(stranded)
	return behind, stranded, nil
}

// sendServerCertificates tells one agent which coordinator thumbprints to
// trust and records that it acknowledged the first (newest) one.
func (s *Server) sendServerCertificates(ctx context.Context, as *agentSession, trust []string) error {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.HealthTimeout)
	defer cancel()
	if err := protocol.CallSigned(cctx, as.sess, as.sign, protocol.TypeServerCertificates, protocol.ServerCertificates{Thumbprints: trust}, protocol.TypeAck, nil); err != nil {
		return err
	}
	return s.store.SetServerThumbprintAck(ctx, as.agentID, trust[0])
}

// syncServerCertificates brings an agent that connected during a rotation
// up to date and retires the previous certificate when it was the last.
func (s *Server) syncServerCertificates(ctx context.Context, as *agentSession) {
	if as.serverAck == s.ids.Current() || as.sess.IsClosed() {
		return
	}
	// The Welcome already carried the list; this confirms the agent stored
	// it, which is what allows the previous certificate to be retired.
	if err := s.ids.Announce(func(trust []string) error { return s.sendServerCertificates(ctx, as, trust) }); err != nil {
		if !errors.Is(err, context.Canceled) {
			s.log.Warn("update agent's coordinator certificates failed", zap.String("agent", as.name), zap.Error(err))
		}
		return
	}
	s.maybeRetirePrevious(ctx)
}

func (s *Server) maybeRetirePrevious(ctx context.Context) {
	if !s.ids.HasPrevious() {
		return
	}
	all, err := s.store.ListAgents(ctx)
	if err != nil {
		return
	}
	cur := s.ids.Current()
	for _, a := range all {
		if a.ServerThumbprintAck != cur {
			return
		}
	}
	if err := s.ids.RetirePrevious(); err != nil {
		s.log.Warn("remove previous coordinator certificate failed", zap.Error(err))
		return
	}
	s.log.Info("previous coordinator certificate retired: every agent trusts the current one")
}

// Info describes this coordinator.
func (s *Server) Info() api.ServerInfo {
	return api.ServerInfo{
		Version: s.cfg.Version, Thumbprint: s.Thumbprint(), Thumbprints: s.ids.Thumbprints(),
		AgentAddr: s.AgentAddr(), TLSMin: protocol.TLSVersionName(s.cfg.TLSMin),
		ProtocolMin: s.cfg.ProtocolMin, ProtocolMax: s.cfg.ProtocolMax,
		Connected: s.sessions.count(), Node: s.members.Name(), SigningKey: s.signing.Public(),
		HealthSeconds: s.policy.Current().HealthInterval.Seconds(),
	}
}
