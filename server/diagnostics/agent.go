// Package diagnostics writes the coordinator's diagnostics archives
// (package diag): one agent's, with the coordinator's view of it (its
// record, recent health, tasks and upgrades) and, when the agent can send
// it over its session, the agent's own archive inside; and the
// coordinator's own, collected from its data folder on its host, with
// what the running coordinator says through its API.
//
// It reaches live agents through its Fleet interface, which the core
// implements: asking an agent for its archive needs its session.
package diagnostics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/healthlog"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// ErrUnsupported means the agent answered that it does not know the
// diagnostics request: it is older than diagnostics.
var ErrUnsupported = errors.New("the agent does not know the diagnostics request")

// AgentArchiveName is the agent's own archive inside an agent's archive
// from the coordinator.
const AgentArchiveName = "agent/diagnostics.tar.gz"

const (
	// agentTimeout bounds how long the agent has to collect and send its
	// archive; the coordinator's side is written whatever happens.
	agentTimeout = 3 * time.Minute
	// maxTasks and maxRollouts bound the history an archive holds.
	maxTasks    = 100
	maxRollouts = 50
	// maxCollections bounds the agents' archives collected at once on a
	// node: each keeps two temporary files of up to
	// protocol.MaxDiagnosticsSize and its agent busy for minutes, and a
	// script asking for a whole fleet must not fill the coordinator's
	// disk.
	maxCollections = 2
)

// Fleet is what the collector asks of the coordinator core.
type Fleet interface {
	// Agent returns one agent by name as the API shows it; an error
	// wrapping kind.ErrNotFound when there is none.
	Agent(ctx context.Context, name string) (api.AgentView, error)
	// HealthHistory is an agent's recent health checks, oldest first.
	HealthHistory(agentID string) []healthlog.Point
	// AgentArchive asks the agent for its diagnostics archive, through
	// the node holding its session, and receives it into the empty file
	// at path: an error wrapping kind.ErrNotConnected when it is not
	// connected to any live node, kind.ErrNoAnswer when the node holding
	// it did not answer, ErrUnsupported when it is too old to collect
	// one.
	AgentArchive(ctx context.Context, agentID, path string) error
}

// Config configures a Collector. Every field but Logger is required.
type Config struct {
	Store store.Store
	Fleet Fleet
	// Version is the coordinator's, and Node this node's name.
	Version, Node string
	Logger        *zap.Logger
}

// Collector writes agents' diagnostics archives.
type Collector struct {
	cfg Config
	log *zap.Logger
	// running holds a token per collection in progress (maxCollections).
	running chan struct{}
}

// New returns a Collector over cfg.
func New(cfg Config) *Collector {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Collector{cfg: cfg, log: log.Named("diagnostics"), running: make(chan struct{}, maxCollections)}
}

// Archive is a finished archive in a temporary file, removed by Close.
type Archive struct {
	// Name is a file name to offer it under.
	Name string
	Size int64
	*os.File
}

// Close closes and removes the archive's file.
func (a *Archive) Close() error {
	err := a.File.Close()
	os.Remove(a.File.Name())
	return err
}

// Agent collects the diagnostics archive of the agent named name: the
// coordinator's side always, the agent's own when it can send it, and a
// note saying why not when it cannot (not connected, too old). The
// archive is complete before Agent returns, so that a failure is an
// error rather than a truncated download. An unknown name is an error
// wrapping kind.ErrNotFound; one asked for while maxCollections others
// are collected is refused at once with an error wrapping
// kind.ErrConflict, rather than held for minutes behind them.
func (c *Collector) Agent(ctx context.Context, name string) (*Archive, error) {
	v, err := c.cfg.Fleet.Agent(ctx, name)
	if err != nil {
		return nil, err
	}
	select {
	case c.running <- struct{}{}:
		defer func() { <-c.running }()
	default:
		c.log.Warn("agent diagnostics refused: too many collections at once", zap.String("agent", v.Name), zap.Int("running", maxCollections))
		return nil, kind.Errorf(kind.ErrConflict, "this coordinator is already collecting %d agents' diagnostics, the most it collects at once: ask again for %s when one has finished", maxCollections, v.Name)
	}
	c.log.Info("collecting agent diagnostics", zap.String("agent", v.Name))
	own, err := os.CreateTemp("", "tendril-agent-side-*.tar.gz")
	if err != nil {
		return nil, fmt.Errorf("collect diagnostics of agent %s: %w", name, err)
	}
	own.Close()
	defer os.Remove(own.Name())
	actx, cancel := context.WithTimeout(ctx, agentTimeout)
	agentErr := c.cfg.Fleet.AgentArchive(actx, v.ID, own.Name())
	cancel()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("collect diagnostics of agent %s: %w", name, err)
	}

	f, err := os.CreateTemp("", "tendril-diagnostics-*.tar.gz")
	if err != nil {
		return nil, fmt.Errorf("collect diagnostics of agent %s: %w", name, err)
	}
	a := &Archive{Name: fmt.Sprintf("tendril-diagnostics-%s-%s.tar.gz", v.Name, time.Now().UTC().Format("20060102T150405Z")), File: f}
	if err := c.writeAgent(ctx, f, v, own.Name(), agentErr); err != nil {
		a.Close()
		return nil, fmt.Errorf("collect diagnostics of agent %s: %w", name, err)
	}
	if a.Size, err = f.Seek(0, io.SeekCurrent); err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("collect diagnostics of agent %s: %w", name, err)
	}
	c.log.Info("agent diagnostics collected", zap.String("agent", v.Name), zap.Int64("bytes", a.Size), zap.NamedError("agent_side", agentErr))
	return a, nil
}

func (c *Collector) writeAgent(ctx context.Context, w io.Writer, v api.AgentView, own string, agentErr error) error {
	dw := diag.NewWriter(w, diag.KindAgentFromCoordinator, v.Name, diag.ThisTool("tendril-server", c.cfg.Version))
	switch {
	case agentErr == nil:
	case errors.Is(agentErr, ErrUnsupported):
		dw.Note("agent version %s cannot collect diagnostics; upgrade it (tendril-server upgrade --agent %s), or run \"tendril-agent diagnostics\" on its machine", v.Version, v.Name)
	case errors.Is(agentErr, kind.ErrNotConnected) && !v.Connected:
		// The error says why, naming the node that held its session if
		// that node died.
		dw.Note("%v: this archive holds the coordinator's side only; run \"tendril-agent diagnostics\" on its machine for the agent's", agentErr)
	default:
		dw.Note("agent %s could not send its diagnostics: %v", v.Name, agentErr)
	}
	const ownDesc = "the agent's own diagnostics archive, collected by the agent (a .tar.gz with its own manifest.json)"
	steps := []func() error{
		func() error {
			return dw.AddJSON("coordinator/versions.json", "the coordinator that collected this archive: its version, Go version, platform and node", struct {
				Coordinator diag.Tool `json:"coordinator"`
				Node        string    `json:"node"`
			}{diag.ThisTool("tendril-server", c.cfg.Version), c.cfg.Node})
		},
		func() error {
			return dw.AddJSON("coordinator/agent.json", "the agent's record as the coordinator shows it (GET /api/agents/NAME)", v)
		},
		func() error { return c.health(dw, v) },
		func() error { return c.tasks(ctx, dw, v) },
		func() error { return c.upgrades(ctx, dw, v) },
		func() error {
			if agentErr != nil {
				dw.Missing(AgentArchiveName, ownDesc, agentErr)
				return nil
			}
			// Streamed: the agent's archive may be up to
			// protocol.MaxDiagnosticsSize.
			return dw.AddArchive(AgentArchiveName, ownDesc, filepath.Dir(own), filepath.Base(own), protocol.MaxDiagnosticsSize)
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return dw.Close()
}

// health adds the agent's recent health checks from this node's memory.
func (c *Collector) health(dw *diag.Writer, v api.AgentView) error {
	type point struct {
		At        time.Time `json:"at"`
		RTTMillis float64   `json:"rtt_ms"`
		Health    string    `json:"health"`
	}
	points := []point{}
	for _, p := range c.cfg.Fleet.HealthHistory(v.ID) {
		points = append(points, point{At: p.At.UTC(), RTTMillis: float64(p.RTT.Microseconds()) / 1000, Health: p.Health})
	}
	return dw.AddJSON("coordinator/health.json", "the agent's health now and its recent health checks on this node, oldest first", struct {
		Health       string  `json:"health"`
		Detail       string  `json:"detail,omitempty"`
		LastHealthAt string  `json:"last_health_at,omitempty"`
		Recent       []point `json:"recent"`
	}{v.Health, v.HealthDetail, v.LastHealthAt, points})
}

// tasks adds the agent's newest tasks, without their arguments: a
// deployment's command line can hold its secrets.
func (c *Collector) tasks(ctx context.Context, dw *diag.Writer, v api.AgentView) error {
	const name, desc = "coordinator/tasks.json", "the agent's newest tasks as the coordinator recorded them (never their arguments or output)"
	ts, err := c.cfg.Store.ListTasks(ctx, store.TaskFilter{AgentID: v.ID, Limit: maxTasks})
	if err != nil {
		dw.Missing(name, desc, err)
		return nil
	}
	type task struct {
		ID         string    `json:"id"`
		Calamari   string    `json:"calamari"`
		File       string    `json:"file,omitempty"`
		State      string    `json:"state"`
		ExitCode   int       `json:"exit_code"`
		Error      string    `json:"error,omitempty"`
		CreatedAt  time.Time `json:"created_at"`
		StartedAt  time.Time `json:"started_at,omitzero"`
		FinishedAt time.Time `json:"finished_at,omitzero"`
		LogLines   int64     `json:"log_lines"`
		Node       string    `json:"node,omitempty"`
	}
	out := make([]task, 0, len(ts))
	for _, t := range ts {
		out = append(out, task{ID: t.ID, Calamari: t.Calamari, File: t.FileName, State: t.State, ExitCode: t.ExitCode, Error: t.Error,
			CreatedAt: t.CreatedAt, StartedAt: t.StartedAt, FinishedAt: t.FinishedAt, LogLines: t.LastSeq, Node: t.Node})
	}
	return dw.AddJSON(name, desc, out)
}

// upgrades adds the agent's part in the newest rollouts.
func (c *Collector) upgrades(ctx context.Context, dw *diag.Writer, v api.AgentView) error {
	const name, desc = "coordinator/upgrades.json", "the agent's upgrade history: its state in each of the newest rollouts that included it"
	rs, err := c.cfg.Store.Rollouts(ctx, false, maxRollouts)
	if err != nil {
		dw.Missing(name, desc, err)
		return nil
	}
	type step struct {
		RolloutID    string    `json:"rollout_id"`
		RolloutState string    `json:"rollout_state"`
		Version      string    `json:"version"`
		From         string    `json:"from"`
		State        string    `json:"state"`
		Reason       string    `json:"reason,omitempty"`
		UpdatedAt    time.Time `json:"updated_at"`
		CreatedAt    time.Time `json:"rollout_created_at"`
	}
	out := []step{}
	for _, r := range rs {
		ra, err := c.cfg.Store.RolloutAgent(ctx, r.ID, v.ID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			dw.Missing(name, desc, err)
			return nil
		}
		out = append(out, step{RolloutID: r.ID, RolloutState: r.State, Version: r.Version, From: ra.FromVersion,
			State: ra.State, Reason: ra.Reason, UpdatedAt: ra.UpdatedAt, CreatedAt: r.CreatedAt})
	}
	return dw.AddJSON(name, desc, out)
}
