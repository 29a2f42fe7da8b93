// Package fleet simulates a fleet of agents in one process, for the
// fleet-scale benchmarks (cmd/tendril-fleet, BENCHMARKS.md).
//
// Every simulated agent is a real agent: its home is made by agent.Register
// over real TLS with a token from the admin API, and it runs agent.New and
// agent.Run, so it speaks the real protocol over its own TCP connection,
// TLS session and yamux session. Nothing of the protocol is simulated.
// What the agents share is the host: every one reports this machine's
// host name, OS and free disk (its home's file system) as its own, since
// they all run on it. Two settings differ from a real agent's:
// agent.Config.NoHomeLock, since the simulator owns the homes and one lock
// file descriptor per agent would double the open files of the process;
// and agent.Config.SimulateUpgradeSwap, since all agents run in this one
// binary.
//
// Agent upgrades are real up to the binary swap, which is simulated: a
// simulated agent receives the package over its session (resumably) and
// verifies its platform, version, signature, size and SHA-256 exactly as a
// real agent does, then records the swap in its upgrade state without
// smoke-testing the package, replacing any binary or starting a watchdog.
// Its Run returns agent.ErrRestart, and the fleet restarts it in process:
// a new agent.New on the same home with Config.Version set to the version
// the upgrade state names, which connects, reports the upgrade committed
// in its Hello and commits it at its Welcome, as a restarted real agent
// does. Stats counts these restarts.
//
// Homes live under Dir/homes, one per agent, named fleet-00001 and so on.
// Registering them is a one-time setup: a home whose agent the coordinator
// already lists with the same certificate is reused as it is; any other is
// registered again (with Force, keeping its key).
package fleet

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/agent/upgrade"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
	"github.com/tendrildeploy/tendril/protocol"
)

// DefaultEnvironment is the environment simulated agents join.
const DefaultEnvironment = "Fleet"

// Config describes a simulated fleet.
type Config struct {
	// Dir holds the agents' homes (Dir/homes/<name>). Required.
	Dir string
	// Agents is how many agents to simulate. Required.
	Agents int
	// Coordinator is the host:port the agents dial. Required.
	Coordinator string
	// Admin issues the enrollment tokens and lists the registered agents.
	// Required.
	Admin *client.Client
	// Environment is the environment agents are enrolled into. Default
	// DefaultEnvironment.
	Environment string
	// RegisterConcurrency bounds registrations in progress. Default 16.
	RegisterConcurrency int
	// Ramp spreads the agents' starts evenly over this duration; 0 starts
	// them all at once.
	Ramp time.Duration
	// ConnectPace is how many agents may be between a TCP connect and
	// its ClientHello at once (see connectPacer); 0 means 64, a negative
	// number leaves connects unpaced, as in releases before it.
	ConnectPace int
	// Agent is the template of every agent's configuration; Home is set
	// per agent, NoHomeLock and SimulateUpgradeSwap are forced on, Dial
	// is the connect pacer's, and
	// Version is the version the agents start at (default: this
	// binary's).
	Agent agent.Config
	// Logger receives the simulator's progress. Default: discard.
	Logger *zap.Logger
}

func (c *Config) validate() error {
	if c.Dir == "" {
		return errors.New("fleet: no work folder given")
	}
	if c.Agents <= 0 {
		return fmt.Errorf("fleet: agent count must be positive, got %d", c.Agents)
	}
	if err := protocol.ValidateAddress(c.Coordinator); err != nil {
		return fmt.Errorf("fleet: coordinator %w", err)
	}
	if c.Admin == nil {
		return errors.New("fleet: no admin API client given")
	}
	if c.Environment == "" {
		c.Environment = DefaultEnvironment
	}
	if c.RegisterConcurrency <= 0 {
		c.RegisterConcurrency = 16
	}
	if c.ConnectPace == 0 {
		c.ConnectPace = 64
	}
	if c.Ramp < 0 {
		return errors.New("fleet: ramp is negative")
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// Name is the name of the i-th simulated agent (from 0).
func Name(i int) string { return fmt.Sprintf("fleet-%05d", i+1) }

// Home is the home folder of the i-th simulated agent under dir.
func Home(dir string, i int) string { return filepath.Join(dir, "homes", Name(i)) }

// Prepare makes sure the first cfg.Agents homes are registered with the
// coordinator, registering those that are not. It returns how many it
// registered.
func Prepare(ctx context.Context, cfg Config) (registered int, err error) {
	if err := cfg.validate(); err != nil {
		return 0, err
	}
	listed, err := cfg.Admin.Agents(ctx)
	if err != nil {
		return 0, fmt.Errorf("fleet: list registered agents: %w", err)
	}
	known := make(map[string]string, len(listed)) // name -> thumbprint
	for _, a := range listed {
		known[a.Name] = a.Thumbprint
	}
	var todo []int
	for i := range cfg.Agents {
		home := Home(cfg.Dir, i)
		st, err := agent.LoadState(home)
		if err == nil && len(st.Servers) > 0 && st.Servers[0] == cfg.Coordinator {
			if t, terr := agent.Thumbprint(home); terr == nil && t != "" && known[Name(i)] == t {
				continue
			}
		}
		todo = append(todo, i)
	}
	if len(todo) == 0 {
		return 0, nil
	}
	cfg.Logger.Info("registering agents", zap.Int("agents", len(todo)))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		next     atomic.Int64
		done     atomic.Int64
		firstErr error
		errOnce  sync.Once
	)
	for range min(cfg.RegisterConcurrency, len(todo)) {
		wg.Go(func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= len(todo) || ctx.Err() != nil {
					return
				}
				if err := register(ctx, cfg, todo[k]); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return int(done.Load()), firstErr
	}
	return int(done.Load()), ctx.Err()
}

func register(ctx context.Context, cfg Config, i int) error {
	tok, err := cfg.Admin.CreateToken(ctx, api.TokenRequest{
		Environment: cfg.Environment, TTL: "1h", Servers: []string{cfg.Coordinator},
	})
	if err != nil {
		return fmt.Errorf("fleet: create token for %s: %w", Name(i), err)
	}
	join, err := protocol.ParseJoin(tok.Join)
	if err != nil {
		return fmt.Errorf("fleet: token for %s: %w", Name(i), err)
	}
	_, err = agent.Register(ctx, agent.RegisterConfig{
		Home:             Home(cfg.Dir, i),
		Servers:          []string{cfg.Coordinator},
		ServerThumbprint: join.Thumbprint,
		Token:            join.Token,
		Name:             Name(i),
		Environment:      cfg.Environment,
		Force:            true, // replaces a stale registration; keeps the key
	})
	if err != nil {
		return fmt.Errorf("fleet: register %s: %w", Name(i), err)
	}
	return nil
}

// Fleet is a running simulated fleet.
type Fleet struct {
	// mu guards agents and priorSessions: a restart replaces an agent.
	mu     sync.Mutex
	agents []*agent.Agent
	// priorSessions counts the sessions of agents replaced by a restart.
	priorSessions int64
	started       time.Time
	running       atomic.Int64
	// exited counts agents whose Run returned before the fleet was
	// stopped: an agent that gave up.
	exited atomic.Int64
	// restarts counts agents restarted at a new version after an
	// upgrade.
	restarts atomic.Int64
	errMu    sync.Mutex
	errs     []error
	wg       sync.WaitGroup
	cancel   context.CancelFunc
}

// Stats is a snapshot of the fleet.
type Stats struct {
	// Agents is the fleet's size; Running how many Run calls are active.
	Agents  int `json:"agents"`
	Running int `json:"running"`
	// Connected is how many agents have a session up now.
	Connected int `json:"connected"`
	// Sessions is the sessions established since start, over all agents:
	// one per agent plus one per reconnect.
	Sessions int64 `json:"sessions"`
	// Exited counts agents whose Run returned while the fleet ran, not
	// counting restarts after an upgrade.
	Exited int64 `json:"exited"`
	// Restarts counts agents restarted in process at the version they
	// upgraded to.
	Restarts int64 `json:"restarts"`
	// StartedUnixNano is when the first agent was started.
	StartedUnixNano int64 `json:"started_unix_nano"`
}

// Start creates every agent (agent.New on its registered home) and runs
// each in its own goroutine until ctx is done or Stop is called. The homes
// must have been registered (see Prepare).
func Start(ctx context.Context, cfg Config) (*Fleet, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	f := &Fleet{agents: make([]*agent.Agent, cfg.Agents)}
	if cfg.ConnectPace > 0 {
		timeout := cfg.Agent.DialTimeout
		if timeout <= 0 {
			timeout = 10 * time.Second // agent.Config's default
		}
		cfg.Agent.Dial = newConnectPacer(cfg.ConnectPace, timeout).dial
	}
	for i := range cfg.Agents {
		a, err := agent.New(agentConfig(cfg, i))
		if err != nil {
			return nil, fmt.Errorf("fleet: agent %s: %w", Name(i), err)
		}
		f.agents[i] = a
	}
	ctx, f.cancel = context.WithCancel(ctx)
	f.started = time.Now()
	var step time.Duration
	if cfg.Agents > 1 {
		step = cfg.Ramp / time.Duration(cfg.Agents-1)
	}
	f.running.Add(int64(len(f.agents)))
	for i, a := range f.agents {
		f.wg.Go(func() {
			defer f.running.Add(-1)
			if d := time.Duration(i) * step; d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			for {
				err := a.Run(ctx)
				if ctx.Err() != nil {
					return
				}
				if errors.Is(err, agent.ErrRestart) {
					next, rerr := f.restart(cfg, i)
					if rerr == nil {
						a = next
						continue
					}
					err = rerr
				}
				f.exited.Add(1)
				f.errMu.Lock()
				f.errs = append(f.errs, fmt.Errorf("agent %s stopped: %v", Name(i), err))
				f.errMu.Unlock()
				return
			}
		})
	}
	return f, nil
}

// agentConfig is the i-th agent's configuration.
func agentConfig(cfg Config, i int) agent.Config {
	ac := cfg.Agent
	ac.Home = Home(cfg.Dir, i)
	ac.NoHomeLock = true
	ac.SimulateUpgradeSwap = true
	return ac
}

// restart replaces the i-th agent, whose Run returned ErrRestart, with a
// new one at the version its upgrade state says it swapped to: what
// re-executing the new binary does for a real agent.
func (f *Fleet) restart(cfg Config, i int) (*agent.Agent, error) {
	home := Home(cfg.Dir, i)
	st, ok, err := upgrade.Load(home)
	switch {
	case err != nil:
		return nil, fmt.Errorf("restart after upgrade: %w", err)
	case !ok || st.Phase != upgrade.PhaseSwapped || !st.Simulated:
		// Not what a simulated swap leaves: nothing to restart into.
		return nil, fmt.Errorf("restart after upgrade: the upgrade state in %s is not a simulated swap (phase %q)", home, st.Phase)
	}
	ac := agentConfig(cfg, i)
	ac.Version = st.To
	next, err := agent.New(ac)
	if err != nil {
		return nil, fmt.Errorf("restart after upgrade to %s: %w", st.To, err)
	}
	f.mu.Lock()
	f.priorSessions += f.agents[i].Status().Sessions
	f.agents[i] = next
	f.mu.Unlock()
	f.restarts.Add(1)
	return next, nil
}

// Stats returns a snapshot of the fleet.
func (f *Fleet) Stats() Stats {
	s := Stats{
		Agents:          len(f.agents),
		Running:         int(f.running.Load()),
		Exited:          f.exited.Load(),
		Restarts:        f.restarts.Load(),
		StartedUnixNano: f.started.UnixNano(),
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s.Sessions = f.priorSessions
	for _, a := range f.agents {
		st := a.Status()
		if st.Connected {
			s.Connected++
		}
		s.Sessions += st.Sessions
	}
	return s
}

// Stop stops every agent and waits for them. It returns the errors of
// agents that stopped on their own before.
func (f *Fleet) Stop() error {
	f.cancel()
	f.wg.Wait()
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return errors.Join(f.errs...)
}
