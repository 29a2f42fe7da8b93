// Package agent is the deployment agent: it registers with the coordinator,
// keeps one mutually authenticated session to it, answers its requests,
// and rotates its own certificate without dropping the connection. It
// keeps the coordinator's Calamari bundles (package agent/calamari) and
// runs deployment tasks through them (package agent/task).
//
// The agent's state is its home folder (see State and the layout in
// state.go); nothing else on the machine is needed to resume.
package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/agent/calamari"
	"github.com/tendrildeploy/tendril/agent/diagnostics"
	"github.com/tendrildeploy/tendril/agent/task"
	"github.com/tendrildeploy/tendril/agent/upgrade"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/proxy"
	"github.com/tendrildeploy/tendril/version"
)

// Config tunes a running agent. Zero values mean the documented defaults.
type Config struct {
	// Home is the agent's home folder, made by Register. Required.
	Home string
	// Version is reported to the coordinator. Default: version.Version.
	Version string
	// Logger receives the agent's log; it is named "agent". Default:
	// discard.
	Logger *zap.Logger
	// DialTimeout bounds a TCP connect. Default 10s.
	DialTimeout time.Duration
	// HandshakeTimeout bounds a TLS handshake. Default 10s.
	HandshakeTimeout time.Duration
	// Dial, if set, makes a direct TCP connection to the coordinator in
	// place of a net.Dialer bounded by DialTimeout (a proxy or a
	// WebSocket is dialed as always). It is set only by the fleet
	// simulator (package fleet), whose thousands of agents share one
	// host's CPU: it holds a connect back until that agent's ClientHello
	// can follow at once, as it does from a real agent's own host.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MinBackoff and MaxBackoff bound the wait between connection
	// attempts: the cap doubles from MinBackoff to MaxBackoff and each
	// wait is random below it. Defaults 1s and 60s.
	MinBackoff, MaxBackoff time.Duration
	// KeepAlive is the session ping interval that detects a dead path.
	// Default 30s.
	KeepAlive time.Duration
	// RotationCheck is how often a connected agent looks for a pending
	// certificate made by RotateCertificate. Default 5s.
	RotationCheck time.Duration
	// TLSMinVersion and TLSMaxVersion bound the TLS versions offered; 0
	// means the protocol defaults.
	TLSMinVersion, TLSMaxVersion uint16
	// ProtocolMin and ProtocolMax are the protocol versions offered in
	// Hello; 0 means protocol.MinProtocol and protocol.ProtocolVersion.
	// Tests lower them to act as an old agent.
	ProtocolMin, ProtocolMax int
	// CalamariKeep is how many Calamari versions to keep; older ones are
	// removed after each install, except those running tasks use.
	// Default 3.
	CalamariKeep int
	// TaskKillGrace is how long a cancelled task may take to stop after
	// SIGTERM before its process group is killed. Default 5s.
	TaskKillGrace time.Duration
	// RetentionInterval is how often finished task folders are cleaned
	// up when no task finishes. Default task.DefaultRetentionInterval.
	RetentionInterval time.Duration
	// Supervised is true when a service manager restarts the agent when
	// it exits. After a failed upgrade the watchdog then leaves the
	// restart to it instead of starting the agent itself.
	Supervised bool
	// Service is the name of the OS service that runs the agent, "" when
	// it runs in the foreground. After a failed upgrade the watchdog
	// restarts the agent through that service manager.
	Service string
	// Proxy overrides the HTTP proxy the agent was registered with (see
	// RegisterConfig.Proxy): a URL, or "none". "" keeps the registered
	// one.
	Proxy string
	// ProxyEnv is what the environment says about proxies, used when the
	// setting in force is "" (the environment's).
	ProxyEnv proxy.Env
	// NoHomeLock skips the lock on <home>/agent.lock that keeps two
	// agents off one home. It is set only by the fleet simulator
	// (package fleet), which runs many agents in one process and owns
	// their homes: one lock file descriptor per agent would double its
	// open files. A real agent always locks its home.
	NoHomeLock bool
	// SimulateUpgradeSwap makes an agent upgrade stop short of the host.
	// The package is received (resumably) and verified (platform,
	// version, signature, size, SHA-256) as always, but it is not
	// smoke-tested, no binary is kept or replaced and no watchdog starts;
	// the upgrade state records the swap as a real one does (marked
	// simulated) and Run returns ErrRestart. The caller then runs a new
	// Agent with Version set to the state's To, which commits the
	// upgrade at its Welcome and reports it like a restarted real agent.
	// It is set only by the fleet simulator (package fleet), whose agents
	// all run in its one binary, which must not be replaced. A real agent
	// always swaps.
	SimulateUpgradeSwap bool

	// exe is the agent binary an upgrade replaces; tests point it at a
	// copy. Default: the running executable.
	exe string
	// args are the arguments the watchdog restarts an unsupervised agent
	// with (args[1:]). Default: os.Args.
	args []string
}

func (c *Config) validate() error {
	if c.Home == "" {
		return errors.New("agent config: no home folder given")
	}
	// Tasks run in folders under the home, so every path the agent hands
	// to a child process must not depend on the working directory.
	abs, err := filepath.Abs(c.Home)
	if err != nil {
		return fmt.Errorf("agent config: home folder %q: %w", c.Home, err)
	}
	c.Home = abs
	if c.Version == "" {
		c.Version = version.Version
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"DialTimeout", &c.DialTimeout, defaultTimeout},
		{"HandshakeTimeout", &c.HandshakeTimeout, defaultTimeout},
		{"MinBackoff", &c.MinBackoff, time.Second},
		{"MaxBackoff", &c.MaxBackoff, time.Minute},
		{"KeepAlive", &c.KeepAlive, 30 * time.Second},
		{"RotationCheck", &c.RotationCheck, 5 * time.Second},
		{"TaskKillGrace", &c.TaskKillGrace, task.DefaultKillGrace},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return fmt.Errorf("agent config: %s is negative", d.name)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.MinBackoff > c.MaxBackoff {
		return fmt.Errorf("agent config: MinBackoff %s exceeds MaxBackoff %s", c.MinBackoff, c.MaxBackoff)
	}
	if c.TLSMinVersion != 0 && c.TLSMaxVersion != 0 && c.TLSMinVersion > c.TLSMaxVersion {
		return errors.New("agent config: TLSMinVersion exceeds TLSMaxVersion")
	}
	if c.ProtocolMin == 0 {
		c.ProtocolMin = protocol.MinProtocol
	}
	if c.ProtocolMax == 0 {
		c.ProtocolMax = protocol.ProtocolVersion
	}
	if c.ProtocolMin < 0 || c.ProtocolMin > c.ProtocolMax {
		return fmt.Errorf("agent config: protocol range [%d, %d] is invalid", c.ProtocolMin, c.ProtocolMax)
	}
	if c.CalamariKeep < 0 {
		return fmt.Errorf("agent config: CalamariKeep is negative (%d)", c.CalamariKeep)
	}
	if c.CalamariKeep == 0 {
		c.CalamariKeep = calamari.DefaultKeep
	}
	if c.args == nil {
		c.args = os.Args
	}
	if c.exe == "" {
		// Resolved now, before any upgrade replaces the file. Without it
		// the agent still runs; upgrades are refused with the reason.
		if exe, err := upgrade.Executable(); err == nil {
			c.exe = exe
		}
	}
	return nil
}

// Status is a snapshot of the agent's connection.
type Status struct {
	// Connected is true while a session to the coordinator is up.
	Connected bool
	// Server is the address of the coordinator node connected to.
	Server string
	// TLSVersion is the negotiated TLS version, "1.0" .. "1.3".
	TLSVersion string
	// Protocol is the protocol version the coordinator chose.
	Protocol int
	// UpgradeOnly is true when the coordinator considers this agent too
	// old for anything but an upgrade.
	UpgradeOnly bool
	// Thumbprint is the agent's current certificate thumbprint.
	Thumbprint string
	// Listening is the address a listening agent accepts the coordinator
	// on, "" for an agent that dials it.
	Listening string
	// Sessions counts the sessions established since New.
	Sessions int64
	// LastError is why the last attempt or session failed, "" once
	// connected again.
	LastError string
}

// Agent keeps the agent's session to the coordinator. Create it with New
// and call Run.
type Agent struct {
	cfg      Config
	log      *zap.Logger
	started  time.Time
	hostname string
	// servers are the addresses Run tries in turn; touched only by Run's
	// goroutine, which also establishes every session.
	servers []string
	// pins is shared by every TLS config the agent builds, so a changed
	// coordinator certificate list applies to the next handshake.
	pins *certs.Pins
	// proxy is the HTTP proxy sessions are dialed through, if any.
	proxy   proxy.Setting
	running atomic.Bool
	// stopped is set when Run returns: the task runner is closed then.
	stopped atomic.Bool
	// calamari is the agent's Calamari folder; tasks runs deployment
	// tasks, which outlive sessions.
	calamari *calamari.Store
	tasks    *task.Runner
	// lastRotationErr and lastReloadErr are touched only by Run's
	// goroutine.
	lastRotationErr string
	lastReloadErr   string

	// upgradeSlot admits one agent upgrade at a time, diagnosticsSlot one
	// diagnostics collection.
	upgradeSlot     chan struct{}
	diagnosticsSlot chan struct{}
	// gate keeps tasks from starting while an upgrade is under way: task
	// starts hold it shared, an upgrade sets upgrading holding it.
	gate      sync.RWMutex
	upgrading bool
	// restart is set once a new binary is swapped in: Run then returns
	// ErrRestart. restartc is closed at the same moment, for a listening
	// agent waiting on something else than the session the upgrade came
	// in (a newer session may have replaced it).
	restart     atomic.Bool
	restartc    chan struct{}
	restartOnce sync.Once
	// upMu guards up, the last upgrade's state as this process knows it.
	upMu sync.Mutex
	up   *upgrade.State

	// stateMu serialises changes to state and its file.
	stateMu sync.Mutex
	state   State

	// nonces are the signed requests' nonces seen and when they expire,
	// so that a replay within a request's lifetime is refused.
	noncesMu sync.Mutex
	nonces   map[string]time.Time

	// mu guards the fields below; Status reads them from any goroutine.
	mu     sync.Mutex
	id     *certs.Identity
	status Status
}

// New loads the agent's registration and identity from cfg.Home. It fails
// with an error naming the register command when the home is not
// registered, and with one wrapping ErrUnsafeHome, naming the fix, when
// another local user could change the home, a file in it the agent
// trusts, or the agent's binary. Tasks that an earlier agent process left
// running are marked failed: their output died with it.
func New(cfg Config) (*Agent, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// Before anything is read from the home: what another user could
	// have written there must not be believed.
	if err := checkTrust(cfg.Home, cfg.exe); err != nil {
		return nil, err
	}
	st, err := LoadState(cfg.Home)
	if err != nil {
		return nil, err
	}
	id, err := loadIdentity(cfg.Home)
	if err != nil {
		return nil, err
	}
	proxyText := st.Proxy
	if cfg.Proxy != "" {
		proxyText = cfg.Proxy
	}
	via, err := proxy.Parse(proxyText, cfg.ProxyEnv)
	if err != nil {
		return nil, fmt.Errorf("new agent: %w", err)
	}
	hostname, _ := os.Hostname() // only informative; "" is acceptable
	a := &Agent{
		cfg:      cfg,
		log:      cfg.Logger.Named("agent"),
		started:  time.Now(),
		hostname: hostname,
		servers:  serverList(st),
		pins:     certs.NewPins(st.ServerThumbprints...),
		state:    st,
		id:       id,
		proxy:    via,

		upgradeSlot:     make(chan struct{}, 1),
		diagnosticsSlot: make(chan struct{}, 1),
		restartc:        make(chan struct{}),
	}
	// The store asks the runner which versions are in use and the runner
	// asks the store for entry points; a.tasks is set before any push can
	// prune, because pushes arrive only once Run serves.
	a.calamari, err = calamari.New(calamari.Config{
		Dir:        filepath.Join(cfg.Home, calamariDir),
		SigningKey: st.SigningKey,
		Keep:       cfg.CalamariKeep,
		InUse:      func() []string { return a.tasks.InUse() },
		Logger:     a.log,
	})
	if err != nil {
		return nil, err
	}
	a.tasks, err = task.New(task.Config{
		Dir:       filepath.Join(cfg.Home, workDir),
		Home:      cfg.Home,
		Resolve:   a.calamari.Entrypoint,
		KillGrace: cfg.TaskKillGrace,
		Logger:    a.log,
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Proxy describes the HTTP proxy in force, without its credentials:
// "none", "from the environment", or the proxy's URL. Call it before Run:
// a new registration taken while it runs may change the proxy.
func (a *Agent) Proxy() string { return a.proxy.String() }

// Status returns a snapshot of the connection.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.status
	s.Thumbprint = a.id.Thumbprint
	return s
}

func (a *Agent) identity() *certs.Identity {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.id
}

func (a *Agent) setIdentity(id *certs.Identity) {
	a.mu.Lock()
	a.id = id
	a.mu.Unlock()
}

func (a *Agent) setConnected(s *liveSession) {
	a.mu.Lock()
	a.status.Connected = true
	a.status.Server = s.addr
	a.status.TLSVersion = protocol.TLSVersionName(s.tlsVersion)
	a.status.Protocol = s.welcome.Protocol
	a.status.UpgradeOnly = s.welcome.UpgradeOnly
	a.status.Sessions++
	a.status.LastError = ""
	a.mu.Unlock()
}

func (a *Agent) setDisconnected(err error) {
	a.mu.Lock()
	a.status.Connected = false
	a.status.Server = ""
	a.status.TLSVersion = ""
	a.status.Protocol = 0
	a.status.UpgradeOnly = false
	a.status.LastError = err.Error()
	a.mu.Unlock()
}

// requestRestart marks the binary swapped: Run returns ErrRestart.
func (a *Agent) requestRestart() {
	a.restartOnce.Do(func() {
		a.restart.Store(true)
		close(a.restartc)
	})
}

// stableSession is how long a session must last for the backoff to start
// again from the minimum even if it never completed Hello.
const stableSession = 30 * time.Second

// stopTasksTimeout bounds how long a stopping agent waits for its tasks
// to be cancelled: their grace period, the kill, and the reaping.
const stopTasksTimeout = 30 * time.Second

// ErrRestart is returned by Run once an upgrade swapped a new binary in
// place of the running one: the caller re-executes the binary (keeping
// the process id, so a service manager's tracking stays true). The
// upgrade watchdog restores the previous binary if the new one does not
// connect in time.
var ErrRestart = errors.New("the agent binary was upgraded; restart into it")

// Run keeps a session to the coordinator until ctx is done, reconnecting
// with backoff, trying the coordinator nodes in turn. It never gives up on
// its own, not even when the agent was deleted: an agent must not take its
// machine dark. It returns nil once ctx is done, its running tasks were
// cancelled (so no child outlives the agent) and every goroutine it
// started has ended. An Agent runs once. Only one agent runs on a home at
// a time: Run fails at once if another holds it. After an upgrade it
// returns ErrRestart (see there).
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("run agent: already running")
	}
	defer a.running.Store(false)
	if a.stopped.Load() {
		return errors.New("run agent: it already ran and stopped; create a new Agent")
	}
	unlock := func() {}
	if !a.cfg.NoHomeLock {
		var err error
		if unlock, err = lockHome(a.cfg.Home); err != nil {
			return err
		}
	}
	defer unlock()
	if !a.cfg.NoHomeLock {
		// "tendril-agent diagnostics" finds a running agent by its
		// home's lock and asks it for its goroutine dump.
		defer diagnostics.ServeDumps(a.cfg.Home, a.log)()
	}
	defer a.stopTasks(ctx) // before the unlock: no task outlives the lock
	a.tasks.Recover()
	// After Recover, so that the first cleanup sees the interrupted tasks
	// finished; stopped before the tasks are.
	defer a.startRetention(ctx)()
	a.recoverUpgrade()
	if a.state.Listen != "" {
		return a.listen(ctx, a.state.Listen)
	}
	retry := newRetryPolicy(a.cfg.MinBackoff, a.cfg.MaxBackoff)
	for attempt := 0; ; attempt++ {
		addr := a.servers[attempt%len(a.servers)]
		out := a.connect(ctx, addr)
		if a.restart.Load() {
			// The upgrade handler closed the session; every goroutine of
			// it has ended.
			return ErrRestart
		}
		if ctx.Err() != nil {
			return nil
		}
		a.setDisconnected(out.err)
		wait, deleted := retry.next(out)
		a.logOutcome(addr, out, wait, deleted, retry.deleted)
		again, ok := a.waitRetry(ctx, wait, retry.deleted)
		if !ok {
			return nil
		}
		if again {
			retry.registeredAgain()
			attempt = -1 // the new registration's first address next
		}
	}
}

// waitRetry waits before the next attempt, until wait has passed or ctx
// is done (then ok is false). An agent the coordinator deleted waits long
// (retryPolicy.next), and meanwhile looks for a new registration of its
// home every RotationCheck, so that register --force takes effect at
// once: again reports one was taken.
func (a *Agent) waitRetry(ctx context.Context, wait time.Duration, deleted bool) (again, ok bool) {
	t := time.NewTimer(wait)
	defer t.Stop()
	var poll <-chan time.Time
	if deleted {
		tick := time.NewTicker(a.cfg.RotationCheck)
		defer tick.Stop()
		poll = tick.C
	}
	for {
		select {
		case <-ctx.Done():
			return false, false
		case <-t.C:
			return false, true
		case <-poll:
			if a.reloadRegistration() {
				return true, true
			}
		}
	}
}

// stopTasks cancels the tasks still running when Run ends.
func (a *Agent) stopTasks(ctx context.Context) {
	a.stopped.Store(true)
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTasksTimeout)
	defer cancel()
	if err := a.tasks.Close(stopCtx); err != nil {
		a.log.Error("tasks did not stop with the agent", zap.Error(err))
	}
}

// outcome is how one connection attempt ended.
type outcome struct {
	// err says why; never nil.
	err error
	// welcomed is true if the session got as far as Welcome.
	welcomed bool
	// lasted is how long the session was up.
	lasted time.Duration
	// goAway is what the coordinator said before closing, if anything.
	goAway *protocol.GoAway
	// spread is the reconnect window the coordinator named in Welcome
	// (protocol.Welcome.ReconnectSpreadMillis).
	spread time.Duration
}

// retryPolicy decides the wait before the next attempt. It is separate
// from Run so the decision can be tested without a clock.
type retryPolicy struct {
	bo       *jitterBackOff
	min, max time.Duration
	// deleted is set by a GoAway that forbids reconnecting and cleared by
	// the next Welcome (the operator registered the agent again).
	deleted bool
}

func newRetryPolicy(min, max time.Duration) *retryPolicy {
	return &retryPolicy{bo: newJitterBackOff(min, max), min: min, max: max}
}

// next returns the wait after out, and whether out is the first sign that
// the agent was deleted.
func (p *retryPolicy) next(out outcome) (wait time.Duration, newlyDeleted bool) {
	if out.welcomed || out.lasted >= stableSession {
		p.bo.Reset()
	}
	if after, ok := protocol.BusyAfter(out.err); ok {
		// The coordinator shed the connection before TLS and named the
		// moment it has room for this agent: then, once, rather than
		// after a backoff that grows over a ramp and comes back in
		// waves. The coordinator already spread the fleet over the
		// moments it named, so the jitter is small, and the backoff
		// does not grow.
		wait = busyWait(after, p.max)
	} else if after, ok := refusedUntil(out.err); ok {
		// The coordinator refused for a reason that passes (its database
		// is unreachable) and said when to come back: then, not after a
		// backoff grown over the outage, so that the agent is back within
		// seconds of the cause's end. The backoff does not grow meanwhile.
		wait = refusalWait(after, p.min, p.max)
	} else {
		wait = p.bo.NextBackOff()
	}
	switch {
	case out.goAway != nil && !out.goAway.Reconnect, protocol.IsCode(out.err, protocol.CodeRevoked):
		newlyDeleted = !p.deleted
		p.deleted = true
	case out.welcomed:
		p.deleted = false
	}
	if out.welcomed && out.goAway == nil && out.spread > 0 && !p.deleted {
		// The session broke without a goodbye, most likely for the whole
		// fleet at once (a coordinator crash): come back at a random
		// moment of the window the coordinator sized for its fleet.
		wait = time.Duration(rand.Int64N(int64(min(out.spread, p.max)) + 1))
	}
	if p.deleted {
		// Keep knocking, slowly: the operator may register it again.
		wait = p.max
	}
	if out.goAway != nil && out.goAway.RetryAfterMillis > 0 {
		wait = max(wait, time.Duration(out.goAway.RetryAfterMillis)*time.Millisecond)
	}
	return wait, newlyDeleted
}

// refusedUntil returns the retry-after of a refusal the coordinator
// said passes (protocol.ErrorBody.RetryAfterMillis).
func refusedUntil(err error) (time.Duration, bool) {
	re, ok := errors.AsType[*protocol.RemoteError](err)
	if !ok || re.RetryAfter <= 0 {
		return 0, false
	}
	return re.RetryAfter, true
}

// refusalWait is the wait after a refusal that said to come back after
// about d: d plus up to a half of it at random, so that agents refused
// together do not come back together, within the agent's own bounds.
func refusalWait(d, lo, hi time.Duration) time.Duration {
	w := d + time.Duration(rand.Int64N(int64(d/2)+1))
	return min(max(w, lo), hi)
}

// busyJitter bounds the jitter added to a busy answer's wait, as a share
// of it and in all.
const (
	busyJitterShare = 10
	busyJitterMax   = time.Second
)

// busyWait is the wait after a busy answer that said to come back after
// d: d plus a little at random (the coordinator spread the moments it
// names already), at most hi.
func busyWait(d, hi time.Duration) time.Duration {
	j := min(d/busyJitterShare, busyJitterMax)
	return min(d+time.Duration(rand.Int64N(int64(j)+1)), hi)
}

// registeredAgain starts afresh after a new registration of the home
// was taken: the next attempt is made at once, as a new agent's.
func (p *retryPolicy) registeredAgain() {
	p.deleted = false
	p.bo.Reset()
}

func (a *Agent) logOutcome(addr string, out outcome, wait time.Duration, newlyDeleted, deleted bool) {
	fields := []zap.Field{zap.String("server", addr), zap.Error(out.err), zap.Duration("retry_in", wait)}
	var remote *protocol.RemoteError
	switch {
	case newlyDeleted && errors.As(out.err, &remote) && remote.Code == protocol.CodeRevoked:
		// The coordinator's words: why this certificate is refused, and
		// what to do about it.
		a.log.Error(remote.Message, fields...)
	case newlyDeleted:
		a.log.Error("this agent was deleted from the coordinator; register it again with --force", fields...)
	case deleted:
		// Already said once; repeating it every minute would bury the
		// rest of the log.
		a.log.Debug("still deleted from the coordinator", fields...)
	case protocol.IsCode(out.err, protocol.CodeIncompatible):
		// The coordinator is older than this agent's protocol: retrying
		// cannot help until it is upgraded, and this agent keeps trying.
		a.log.Error("the coordinator does not speak this agent's protocol; upgrade the coordinator (this agent keeps retrying)", fields...)
	case errors.Is(out.err, certs.ErrUntrusted):
		a.log.Error("coordinator certificate is not trusted: it is not one the agent was given at registration or told about since; check the coordinator's certificate", fields...)
	case errors.As(out.err, &remote) && remote.RetryAfter > 0:
		// Not a fault of the agent's or of the network's: the coordinator
		// said why (its database is unreachable) and when to come back.
		a.log.Warn("coordinator refused the session for now; trying again when it said", fields...)
	case errors.As(out.err, new(*protocol.BusyError)):
		// The coordinator is busy (a fleet is connecting at once) and
		// named when it has room: expected, and handled.
		a.log.Info("coordinator busy; trying again when it said", fields...)
	case out.welcomed:
		a.log.Warn("disconnected from coordinator", append(fields, zap.Duration("lasted", out.lasted))...)
	default:
		a.log.Warn("could not connect to coordinator", fields...)
	}
}
