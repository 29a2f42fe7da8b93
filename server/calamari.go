package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/metrics"
	"github.com/tendrildeploy/tendril/server/store"
)

// UploadCalamari stores a bundle read from r (see calamari.Library.Upload).
func (s *Server) UploadCalamari(ctx context.Context, r io.Reader) (api.BundleView, error) {
	return s.bundles.Upload(ctx, r)
}

// CalamariBundles lists the stored bundles, newest version first.
func (s *Server) CalamariBundles(ctx context.Context) ([]api.BundleView, error) {
	return s.bundles.List(ctx)
}

// latestCalamari returns the newest stored bundle, or a zero Bundle if none
// was uploaded.
func (s *Server) latestCalamari(ctx context.Context) (store.Bundle, error) {
	return s.bundles.Latest(ctx)
}

// pushLocks serializes pushes to one agent, so a health-triggered update
// and a task never send the same bundle twice at once.
type pushLocks struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex
}

func (p *pushLocks) lock(agentID string) func() {
	p.mu.Lock()
	if p.m == nil {
		p.m = make(map[string]*sync.Mutex)
	}
	l, ok := p.m[agentID]
	if !ok {
		l = new(sync.Mutex)
		p.m[agentID] = l
	}
	p.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// checkCalamari asks the agent whether a version is installed and intact.
func (s *Server) checkCalamari(ctx context.Context, as *agentSession, version string) (protocol.CalamariState, error) {
	var st protocol.CalamariState
	cctx, cancel := context.WithTimeout(ctx, s.cfg.HealthTimeout+30*time.Second) // verification hashes every file
	defer cancel()
	err := protocol.CallSigned(cctx, as.sess, as.sign, protocol.TypeCalamariCheck, protocol.CalamariCheck{Version: version}, protocol.TypeCalamariState, &st)
	if err != nil {
		return st, fmt.Errorf("check calamari %s on %s: %w", version, as.name, err)
	}
	return st, nil
}

// ensureCalamari makes sure the agent has bundle b installed and intact,
// pushing it if not. note receives a line for the task log when a push is
// needed. It returns whether a push happened.
func (s *Server) ensureCalamari(ctx context.Context, as *agentSession, b store.Bundle, note func(string)) (bool, error) {
	unlock := s.pushLocks.lock(as.agentID)
	defer unlock()
	st, err := s.checkCalamari(ctx, as, b.Version)
	if err != nil {
		return false, err
	}
	if st.Installed {
		return false, nil
	}
	why := st.Problem
	if why == "" {
		why = "not installed"
	}
	note(fmt.Sprintf("Calamari on %s is out of date (%s); installing %s", as.name, why, b.Version))
	if err := s.pushCalamari(ctx, as, b); err != nil {
		return true, err
	}
	return true, nil
}

// pushCalamari sends a bundle to an agent, resuming from what the agent
// already holds of it. The bundle is streamed from disk, so memory does
// not grow with the bundle's size or the number of agents.
func (s *Server) pushCalamari(ctx context.Context, as *agentSession, b store.Bundle) error {
	f, err := s.bundles.Open(ctx, b)
	if err != nil {
		return fmt.Errorf("push calamari %s to %s: %w", b.Version, as.name, err)
	}
	defer f.Close()
	var installed protocol.CalamariInstalled
	// ManifestOnly: the agent checks the bundle against its signed
	// manifest, which covers all it installs, and skips a second SHA-256
	// of every byte; older agents ignore it and hash the bundle too.
	hdr := protocol.CalamariPush{Version: b.Version, Signature: b.Signature, Bundle: protocol.Transfer{Size: b.Size, SHA256: b.SHA256},
		Keep: s.policy.Current().CalamariKeep, ManifestOnly: true}
	done, err := protocol.PushSigned(ctx, as.sess, as.sign, protocol.TypeCalamariPush, hdr,
		s.metrics.CountPushed(metrics.PushCalamari, f), hdr.Bundle.Size, protocol.TypeCalamariInstalled, &installed, nil)
	if err != nil {
		return fmt.Errorf("push calamari %s to %s: %w", b.Version, as.name, err)
	}
	if !done {
		s.log.Info("calamari installed", zap.String("agent", as.name), zap.String("version", b.Version), zap.Strings("pruned", installed.Pruned))
	}
	// Listed current at once: what the agent holds now is what it held,
	// with this version and without what it pruned. The next health
	// check, which verifies every file, has the last word.
	if err := s.noteCalamariInstalled(ctx, as.agentID, b.Version, installed.Pruned); err != nil {
		s.log.Warn("record installed calamari failed", zap.String("agent", as.name), zap.Error(err))
	}
	return nil
}

// noteCalamariInstalled records that an agent holds version, and no
// longer the pruned ones.
func (s *Server) noteCalamariInstalled(ctx context.Context, agentID, version string, pruned []string) error {
	a, err := s.store.AgentByID(ctx, agentID)
	if err != nil {
		return err
	}
	versions := []string{version}
	for _, v := range a.CalamariVersions {
		if v != version && !slices.Contains(pruned, v) {
			versions = append(versions, v)
		}
	}
	slices.SortFunc(versions, func(x, y string) int { return bundle.CompareVersions(y, x) })
	return s.store.SetCalamariVersions(ctx, agentID, versions)
}

// UpdateCalamari pushes the latest bundle to every targeted agent that
// lacks it, a bounded number at once, and reports each result: the
// "Update" button of the reference's environments page. The node holding
// each agent's session pushes to it, whichever node is asked.
func (s *Server) UpdateCalamari(ctx context.Context, target api.UpdateTarget) ([]api.UpdateResult, error) {
	latest, err := s.latestCalamari(ctx)
	if err != nil {
		return nil, err
	}
	if latest.Version == "" {
		return nil, kind.Errorf(kind.ErrBadRequest, "no Calamari bundle has been uploaded; run \"tendril-server calamari push FILE\"")
	}
	agents, err := s.targetAgents(ctx, target)
	if err != nil {
		return nil, err
	}
	results := make([]api.UpdateResult, len(agents))
	sem := make(chan struct{}, s.cfg.PushConcurrency)
	var wg sync.WaitGroup
	for i, a := range agents {
		results[i] = api.UpdateResult{Agent: a.Name, Version: latest.Version}
		if s.sessions.get(a.ID) == nil && (a.Node == "" || a.Node == s.nodeID()) {
			results[i].Result, results[i].Error = "failed", "agent is not connected"
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var done calamariUpdated
			err := s.atHolder(ctx, a, actionCalamariUpdate, calamariUpdate{Version: latest.Version}, &done, "")
			switch {
			case err != nil:
				results[i].Result, results[i].Error = "failed", err.Error()
			case done.Pushed:
				results[i].Result = "installed"
			default:
				results[i].Result = "current"
			}
		}()
	}
	wg.Wait()
	return results, nil
}

// calamariUpdate is the input of the Calamari update's agentAction, and
// calamariUpdated its result.
type calamariUpdate struct {
	Version string `json:"version"`
}

type calamariUpdated struct {
	Pushed bool `json:"pushed"`
}

// calamariUpdateAction is the Calamari update's agentAction: the bundle
// pushed unless the agent holds it intact, then a health check, to show
// the new state at once rather than at the next interval.
func (s *Server) calamariUpdateAction(ctx context.Context, as *agentSession, args json.RawMessage, _ string) (any, error) {
	var in calamariUpdate
	if err := json.Unmarshal(args, &in); err != nil {
		return nil, kind.Errorf(kind.ErrBadRequest, "update calamari on %s: %v", as.name, err)
	}
	b, err := s.store.Bundle(ctx, in.Version)
	if errors.Is(err, store.ErrNotFound) {
		return nil, kind.Errorf(kind.ErrNotFound, "no Calamari bundle %s is stored", in.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("update calamari on %s: %w", as.name, err)
	}
	pushed, err := s.ensureCalamari(ctx, as, b, func(string) {})
	if err != nil {
		return nil, err
	}
	s.checkHealth(ctx, []*agentSession{as})
	return calamariUpdated{Pushed: pushed}, nil
}

// targetAgents resolves an UpdateTarget or task target to agents.
func (s *Server) targetAgents(ctx context.Context, t api.UpdateTarget) ([]store.Agent, error) {
	switch {
	case (t.Agent == "") == (t.Environment == ""):
		return nil, kind.Errorf(kind.ErrBadRequest, "name exactly one of an agent or an environment")
	case t.Agent != "":
		a, err := s.store.AgentByName(ctx, t.Agent)
		if errors.Is(err, store.ErrNotFound) {
			return nil, kind.Errorf(store.ErrNotFound, "no agent named %q", t.Agent)
		}
		if err != nil {
			return nil, err
		}
		return []store.Agent{a}, nil
	}
	all, err := s.store.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	var out []store.Agent
	for _, a := range all {
		if strings.EqualFold(a.Environment, t.Environment) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, kind.Errorf(store.ErrNotFound, "environment %q has no agents", t.Environment)
	}
	return out, nil
}

// autoUpdate pushes the latest bundle, in the background, to checked
// agents that lack it: Calamari follows the coordinator without operator
// action. At most PushConcurrency pushes run at once; an agent already
// being updated is skipped.
func (s *Server) autoUpdate(results []store.HealthResult) {
	latest, err := s.latestCalamari(s.ctx)
	if err != nil || latest.Version == "" {
		return
	}
	for _, r := range results {
		if r.Health == api.HealthUnhealthy || slices.Contains(r.CalamariVersions, latest.Version) {
			continue
		}
		as := s.sessions.get(r.AgentID)
		if as == nil || as.upgradeOnly {
			continue
		}
		if _, busy := s.updating.LoadOrStore(as.agentID, true); busy {
			continue
		}
		s.goFunc(func() {
			defer s.updating.Delete(as.agentID)
			select {
			case s.pushSem <- struct{}{}:
			case <-s.ctx.Done():
				return
			}
			defer func() { <-s.pushSem }()
			if _, err := s.ensureCalamari(s.ctx, as, latest, func(string) {}); err != nil {
				s.log.Warn("automatic calamari update failed", zap.String("agent", as.name), zap.String("version", latest.Version), zap.Error(err))
				return
			}
			s.checkHealth(s.ctx, []*agentSession{as})
		})
	}
}

// LatestCalamari is the newest uploaded Calamari version, "" if none.
func (s *Server) LatestCalamari(ctx context.Context) (string, error) {
	b, err := s.latestCalamari(ctx)
	return b.Version, err
}

// CalamariVersions lists the Calamari versions verified on an agent.
func (s *Server) CalamariVersions(ctx context.Context, agentID string) ([]string, error) {
	a, err := s.store.AgentByID(ctx, agentID)
	if err != nil {
		return nil, err
	}
	return a.CalamariVersions, nil
}
