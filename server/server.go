// Package server is the Tendril coordinator's core and its wiring. The
// core is what needs the agents' live sessions: it accepts and holds one
// mutually authenticated session per agent, dispatches tasks to agents,
// checks their health, delivers Calamari and reacts to the other nodes
// sharing its database. New wires it to the packages around it (the HTTP
// API, the console, the rollout engine, the cluster, access, enrollment,
// settings and the rest, see ARCHITECTURE.md), which reach the core through
// interfaces of their own; Run serves until its context ends.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/access"
	"github.com/tendrildeploy/tendril/server/admission"
	"github.com/tendrildeploy/tendril/server/backup"
	"github.com/tendrildeploy/tendril/server/calamari"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/console"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/diagnostics"
	"github.com/tendrildeploy/tendril/server/dial"
	"github.com/tendrildeploy/tendril/server/enroll"
	"github.com/tendrildeploy/tendril/server/healthlog"
	"github.com/tendrildeploy/tendril/server/httpapi"
	"github.com/tendrildeploy/tendril/server/idempotency"
	"github.com/tendrildeploy/tendril/server/identity"
	"github.com/tendrildeploy/tendril/server/metrics"
	"github.com/tendrildeploy/tendril/server/releases"
	"github.com/tendrildeploy/tendril/server/rollout"
	"github.com/tendrildeploy/tendril/server/secret"
	"github.com/tendrildeploy/tendril/server/settings"
	"github.com/tendrildeploy/tendril/server/store"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

// Default addresses.
const (
	// DefaultHTTP is where the API listens unless told otherwise: loopback
	// only, since it is plain HTTP.
	DefaultHTTP = "127.0.0.1:10980"
)

// DefaultListen is where agents connect unless told otherwise.
var DefaultListen = fmt.Sprintf(":%d", protocol.DefaultPort)

// Config configures a coordinator. Zero values take the documented
// defaults.
type Config struct {
	// DataDir is the folder made by Init. Required.
	DataDir string
	// SigningKey is the path of the signing key that agents pinned, which
	// signs bundles, packages and the requests that make agents act.
	// Default: signing.key in DataDir. Kept elsewhere (a separate disk, a
	// secrets mount), a copy of the data folder cannot drive agents.
	SigningKey string
	// SigningKeyPassphrase opens a SigningKey sealed with
	// "tendril-server signing-key seal"; nil for a plain key.
	SigningKeyPassphrase []byte
	// Listen is where agents connect. Default ":10943".
	Listen string
	// HTTP is where the API listens. Default "127.0.0.1:10980". A
	// non-loopback address requires HTTPTLS.
	HTTP string
	// HTTPTLS serves the API over TLS when set. New serves a copy held to
	// the TLS profile (see httpsProfile): the console speaks TLS 1.2 or
	// 1.3 and, at TLS 1.2, only ECDHE AEAD suites.
	HTTPTLS *tls.Config
	// TLSMin is the lowest TLS version agents may use. Default TLS 1.2;
	// TLS 1.0 and 1.1 only for old peers, and shown as a health warning.
	TLSMin uint16
	// HealthInterval is deprecated: how often agents are checked is the
	// machine policy's, kept in the database. A non-zero value is what
	// the old --health-interval flag gave: New copies it into the policy
	// (set by "flag") unless an operator set the policy, then ignores it.
	HealthInterval time.Duration
	// HealthTimeout bounds one health check. Default 10 seconds.
	HealthTimeout time.Duration
	// HealthConcurrency bounds how many checks run at once. Default 64.
	HealthConcurrency int
	// DiskWarning is the free space in an agent's home below which its
	// health is a warning. Default 1 GiB.
	DiskWarning int64
	// HandshakeTimeout bounds TLS plus Hello for a new connection, from
	// the moment it takes a handshake slot; a peer that connects and
	// sends nothing is dropped sooner, at FirstByteTimeout. Default 10 s.
	HandshakeTimeout time.Duration
	// FirstByteTimeout is how long a new connection may stay silent
	// before it is closed: an agent sends its TLS ClientHello at once, and
	// a connection takes a handshake slot only once it has sent a byte.
	// Default 2 s.
	FirstByteTimeout time.Duration
	// MaxHandshakesPerAddress caps, for one source address (an IPv6 /64),
	// the handshakes in progress at once. (Its connections waiting for
	// their first byte are capped at half the silent places, see
	// HandshakeQueue, where a newer one closes the oldest silent one.) A connection over the cap waits in
	// the handshake queue like one that found no free slot: a fleet
	// behind one NAT address is slowed to this many handshakes at once,
	// not refused. WebSocket connections are exempt (they all come from
	// the reverse proxy's address). Default a quarter of MaxHandshakes.
	MaxHandshakesPerAddress int
	// HandshakeQueue connections may wait up to HandshakeQueueWait for
	// one of the MaxHandshakes handshake slots instead of being shed at
	// once. Defaults 8192 and 5 s (below the agents' 10 s handshake
	// timeout, so a queued agent is never left waiting in vain). At most
	// 2048 of the places (fewer if HandshakeQueue is smaller) are for
	// connections still waiting for their first byte, half of them for
	// one address.
	HandshakeQueue     int
	HandshakeQueueWait time.Duration
	// HandshakeQueueLongWait is how long an agent that reads the wait
	// line (protocol.WaitALPN) may wait in the handshake queue: it is
	// told so when it is queued, and gives its handshake that much
	// longer. A fleet starting at once is then served in the order it
	// arrived, each agent connecting once, instead of mostly shed to
	// come back later. Default 30 s; never below HandshakeQueueWait.
	HandshakeQueueLongWait time.Duration
	// AcceptRate and AcceptBurst limit new connections per second, and
	// MaxHandshakes the handshakes in progress, so a reconnect storm is
	// shed (agents back off and retry) instead of overwhelming the
	// coordinator. Defaults 2000/s, 4000, and 256: the handshake queue
	// bounds the work, so the rate only guards against floods.
	AcceptRate    float64
	AcceptBurst   int
	MaxHandshakes int
	// PushConcurrency bounds Calamari pushes in progress at once, each
	// streamed from disk. Default 16.
	PushConcurrency int
	// ProtocolMin and ProtocolMax are the protocol range spoken. Defaults
	// protocol.MinProtocol and protocol.ProtocolVersion; tests raise the
	// minimum to exercise upgrade-only sessions.
	ProtocolMin, ProtocolMax int
	// UpgradeGrace is how long, by default, a new agent version has to
	// connect and commit before the agent's watchdog restores the previous
	// binary. Default 2 minutes; a rollout may set its own.
	UpgradeGrace time.Duration
	// UpgradeIdleTimeout bounds how long a rollout waits for an agent to
	// be connected and idle before it marks the agent failed. Default 30
	// minutes.
	UpgradeIdleTimeout time.Duration
	// UpgradeReconnectMargin is added to the grace period when waiting for
	// an upgraded agent to come back: time for the watchdog to restore
	// and restart the previous binary and for it to report. Default 60
	// seconds; tests shorten it.
	UpgradeReconnectMargin time.Duration
	// ReleaseFeed is where newer coordinator versions are listed: an
	// http(s) URL, a file:// URL or a file path. "" checks nothing.
	ReleaseFeed string
	// ReleaseCheckInterval is how often ReleaseFeed is read after the
	// first read at start. Default 6 hours.
	ReleaseCheckInterval time.Duration
	// Version is this coordinator's version.
	Version string
	// Logger receives the coordinator's logs. Default: no logs.
	Logger *zap.Logger
	// Store overrides the embedded SQLite database in DataDir: a
	// PostgreSQL store for nodes sharing one database, or a test's. The
	// coordinator closes it on exit either way.
	Store store.Store
	// NodeName names this coordinator among the nodes sharing its
	// database; a restarted node keeps its name. Default: this host's
	// name and the agent port, e.g. "web-a:10943".
	NodeName string
	// Advertise is the address agents are told to dial this node at
	// (join strings). Default: the listen address, a wildcard host
	// replaced by this host's name.
	Advertise string
	// HeartbeatInterval is how often this node records that it is
	// alive; the others count it dead after missing three. Default 5
	// seconds.
	HeartbeatInterval time.Duration
	// NodeAnswerTimeout is how long a node that does not hold an agent's
	// session waits for the node that does to take a request for the
	// agent (a health check, a Calamari update, diagnostics) before it
	// answers that the node did not answer. Default 10 seconds.
	NodeAnswerTimeout time.Duration
	// DialScan is how often the node looks for listening agents it should
	// dial and no node holds; adding or moving one dials it at once.
	// Default 5s.
	DialScan time.Duration
	// DialMaxBackoff caps the wait between attempts to dial a listening
	// agent that cannot be reached: it grows from about a second to this.
	// Default 60s.
	DialMaxBackoff time.Duration
}

// httpsProfile returns a copy of the console's TLS config (nil for plain
// HTTP) held to the TLS profile. It is enforced here rather than left to
// whoever builds the config, so that no caller can serve the console with
// Go's default suites, which include the ECDHE CBC-SHA1 ones at TLS 1.2.
// The console never takes TLS 1.0 or 1.1: those exist only for old agents
// on the agent port, so its minimum is raised to TLS 1.2 if lower.
func httpsProfile(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	c = c.Clone()
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
	c.CipherSuites = protocol.CipherSuites(c.MinVersion)
	return c
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.HTTP == "" {
		c.HTTP = DefaultHTTP
	}
	if c.TLSMin == 0 {
		c.TLSMin = tls.VersionTLS12
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = 10 * time.Second
	}
	if c.HealthConcurrency <= 0 {
		c.HealthConcurrency = 64
	}
	if c.DiskWarning == 0 {
		c.DiskWarning = 1 << 30
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.AcceptRate <= 0 {
		c.AcceptRate = 2000
	}
	if c.AcceptBurst <= 0 {
		c.AcceptBurst = 4000
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 256
	}
	if c.FirstByteTimeout <= 0 {
		c.FirstByteTimeout = 2 * time.Second
	}
	if c.MaxHandshakesPerAddress <= 0 {
		c.MaxHandshakesPerAddress = max(c.MaxHandshakes/4, 1)
	}
	if c.HandshakeQueue <= 0 {
		c.HandshakeQueue = 8192
	}
	if c.HandshakeQueueWait <= 0 {
		c.HandshakeQueueWait = 5 * time.Second
	}
	if c.HandshakeQueueLongWait <= 0 {
		c.HandshakeQueueLongWait = 30 * time.Second
	}
	c.HandshakeQueueLongWait = min(max(c.HandshakeQueueLongWait, c.HandshakeQueueWait), protocol.MaxWait)
	if c.PushConcurrency <= 0 {
		c.PushConcurrency = 16
	}
	if c.ProtocolMin == 0 {
		c.ProtocolMin = protocol.MinProtocol
	}
	if c.ProtocolMax == 0 {
		c.ProtocolMax = protocol.ProtocolVersion
	}
	if c.UpgradeGrace <= 0 {
		c.UpgradeGrace = 2 * time.Minute
	}
	if c.UpgradeIdleTimeout <= 0 {
		c.UpgradeIdleTimeout = 30 * time.Minute
	}
	if c.UpgradeReconnectMargin <= 0 {
		c.UpgradeReconnectMargin = time.Minute
	}
	if c.ReleaseCheckInterval <= 0 {
		c.ReleaseCheckInterval = releases.DefaultInterval
	}
	if c.Version == "" {
		c.Version = "0.0.0-dev"
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = cluster.DefaultHeartbeatInterval
	}
	if c.NodeAnswerTimeout <= 0 {
		c.NodeAnswerTimeout = 10 * time.Second
	}
	if c.DialScan <= 0 {
		c.DialScan = 5 * time.Second
	}
	if c.DialMaxBackoff <= 0 {
		c.DialMaxBackoff = time.Minute
	}
}

// Server is a running coordinator. Create it with New, then call Run.
type Server struct {
	cfg   Config
	log   *zap.Logger
	store store.Store
	// idem keeps create requests' Idempotency-Keys; purged holds when
	// they were last purged (unix nanoseconds).
	idem    *idempotency.Keeper
	purged  atomic.Int64
	access  *access.Service
	uploads *cluster.Uploads
	bundles *calamari.Library
	enroll  *enroll.Enroller
	api     *httpapi.API
	console *console.Console
	ids     *identity.Set
	signing *certs.SigningKey
	// sealer seals tasks' sensitive variables under the master key; nil
	// for a data folder without one, which then refuses them.
	sealer   *secret.Sealer
	sessions *registry
	metrics  *metrics.Metrics
	tlsConf  *tls.Config

	agentLn net.Listener
	httpLn  net.Listener
	httpSrv *http.Server

	limiter   *rate.Limiter
	admission *admission.Gate // handshakes in progress and waiting
	// revokedLog rate-limits the log of refused revoked certificates:
	// a deleted agent keeps knocking.
	revokedLog *admission.Refusals
	// pace says when agents refused while the database is unreachable
	// should come back.
	pace *admission.Pace

	tasks     taskRuns              // tasks being driven by this coordinator
	pushLocks pushLocks             // one push per agent at a time
	pushSem   chan struct{}         // bounds automatic pushes
	updating  sync.Map              // agent IDs with an automatic push in progress
	rollouts  *rollout.Engine       // staged agent upgrades
	maint     *settings.Maintenance // maintenance mode: no new tasks or rollouts
	releases  *releases.Watcher     // what the release feed last said
	health    healthlog.Log         // recent health checks per agent, for the machine page
	node      nodeState             // this node's task sweeps and draining moves
	calls     callWaiters           // calls this node made to others, waiting for their answer
	members   *cluster.Membership   // this node among those sharing the database
	// refused holds, by agent ID, why this node refused an agent's last
	// Hello for a protocol it does not speak, until the agent connects.
	refused sync.Map
	dialer  *dial.Dialer // sessions to the listening agents this node dials
	// diagnostics collects agents' diagnostics archives.
	diagnostics *diagnostics.Collector
	// dialCtx ends the dialer's loops; it is cancelled first in shutdown,
	// so that no agent is dialed again after being told goodbye.
	dialCtx     context.Context
	stopDialing context.CancelFunc
	policy      *settings.Policy // the machine policy kept in the database
	// polling is closed once pollHealth has its ticker, so that a test
	// changing the interval knows the change is what resets it.
	polling chan struct{}
	// newcomers queues fresh sessions for their first health check; see
	// checkNewcomers.
	newcomers chan *agentSession

	// wg tracks every goroutine the server starts; Run waits for it.
	wg         sync.WaitGroup
	runMu      sync.Mutex // orders goIfRunning before shutdown's wait
	stopOnce   sync.Once
	finishOnce sync.Once
	done       chan struct{} // closed when shutdown begins
	// drained is closed once every goroutine the server started has
	// ended, after shutdown began.
	drained chan struct{}
	// ctx is cancelled when shutdown begins; sessions and their handlers
	// derive from it.
	ctx    context.Context
	cancel context.CancelFunc
}

// New validates cfg, opens the data folder and binds both listeners, so
// that configuration errors and busy ports are reported before Run.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg.setDefaults()
	if cfg.DataDir == "" {
		return nil, errors.New("new coordinator: no data folder given")
	}
	if cfg.TLSMin < tls.VersionTLS10 || cfg.TLSMin > tls.VersionTLS13 {
		return nil, fmt.Errorf("new coordinator: TLS minimum 0x%04x is not a TLS version", cfg.TLSMin)
	}
	if err := checkHTTPBind(cfg.HTTP, cfg.HTTPTLS != nil); err != nil {
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	cfg.HTTPTLS = httpsProfile(cfg.HTTPTLS)
	rw, err := releases.New(releases.Config{Feed: cfg.ReleaseFeed, Interval: cfg.ReleaseCheckInterval,
		Current: cfg.Version, Logger: cfg.Logger.Named("server")})
	if err != nil {
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	if cfg.Advertise != "" {
		if err := protocol.ValidateAddress(cfg.Advertise); err != nil {
			return nil, fmt.Errorf("new coordinator: advertised address: %w", err)
		}
	}
	ids, err := identity.Load(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	if cfg.SigningKey == "" {
		cfg.SigningKey = filepath.Join(cfg.DataDir, datadir.SigningFile)
	}
	signing, err := certs.LoadSigningKeyFile(cfg.SigningKey, cfg.SigningKeyPassphrase)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("new coordinator: no signing key at %s: if it is kept outside the data folder, give its path (--signing-key)", cfg.SigningKey)
	}
	if err != nil {
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	sealer, err := secret.LoadSealer(filepath.Join(cfg.DataDir, datadir.MasterFile))
	if errors.Is(err, fs.ErrNotExist) {
		sealer = nil
	} else if err != nil {
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	st := cfg.Store
	if st == nil {
		// A folder made for PostgreSQL opened on its own would be a lone
		// coordinator with the fleet's identity and an empty database.
		if url, err := datadir.LoadDatabase(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("new coordinator: %w", err)
		} else if url != "" {
			return nil, fmt.Errorf("new coordinator: %s was made for a PostgreSQL database, and none was opened: start it with tendril-server run --data %s (which uses the database the folder records) or give --database", cfg.DataDir, cfg.DataDir)
		}
		sq, err := sqlstore.OpenSQLiteWith(ctx, filepath.Join(cfg.DataDir, datadir.DBFile), sqlstore.Options{BackupDir: backupsDir(cfg.DataDir)})
		if errors.Is(err, store.ErrSchemaTooNew) {
			return nil, fmt.Errorf("new coordinator: %w; %s", err, restoreHint(cfg.DataDir))
		}
		if err != nil {
			return nil, fmt.Errorf("new coordinator: %w", err)
		}
		if b := sq.PreMigrationBackup(); b != "" {
			cfg.Logger.Named("server").Info("database backed up before its schema was migrated", zap.String("backup", b))
		}
		st = sq
	}
	// The metrics come first: the store every component is given is
	// timed by them.
	m := metrics.New(metrics.Build{Version: cfg.Version})
	st = m.TimeStore(st)
	gate := admission.New(admission.Config{Slots: cfg.MaxHandshakes, Queue: cfg.HandshakeQueue,
		Wait: cfg.HandshakeQueueWait, PerSource: cfg.MaxHandshakesPerAddress,
		// Queued connections each hold their ClientHello and a goroutine
		// (about 10 KiB); silent ones a socket alone, but whoever floods
		// the port holds them at no cost of its own, so they get fewer
		// places. Half of those for one address: one address cannot take
		// them all, and a fleet behind one NAT address whose ClientHellos
		// lag its connects (a burst of a thousand) is not closed for it.
		Silent:          min(cfg.HandshakeQueue, silentPlaces),
		SilentPerSource: max(min(cfg.HandshakeQueue, silentPlaces)/2, 1)})
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger.Named("server"),
		store:      st,
		metrics:    m,
		access:     access.New(st, cfg.Logger.Named("server")),
		uploads:    cluster.NewUploads(st, clustered(st), cfg.Logger.Named("server")),
		ids:        ids,
		signing:    signing,
		sealer:     sealer,
		sessions:   newRegistry(),
		newcomers:  make(chan *agentSession, newcomerQueue),
		limiter:    rate.NewLimiter(rate.Limit(cfg.AcceptRate), cfg.AcceptBurst),
		admission:  gate,
		revokedLog: admission.NewRefusals(revokedLogEvery),
		pace:       admission.NewPace(),
		pushSem:    make(chan struct{}, cfg.PushConcurrency),
		releases:   rw,
		done:       make(chan struct{}),
		drained:    make(chan struct{}),
	}
	s.dialer = dial.New(dial.Config{Core: dialCore{s}, Store: st, Scan: cfg.DialScan, MaxBackoff: cfg.DialMaxBackoff,
		HandshakeTimeout: cfg.HandshakeTimeout, TLSMin: cfg.TLSMin, Logger: s.log.Named("dial")})
	s.node.wake = make(chan struct{}, 1)
	s.maint, err = settings.LoadMaintenance(ctx, settings.MaintenanceConfig{Store: st,
		Announce: func() { s.notifyCluster(cluster.NotifyMaintenance) }, BusyRollouts: s.busyRollouts, Logger: s.log})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	if s.policy, err = settings.LoadPolicy(ctx, st, cfg.HealthInterval, s.log); err != nil {
		st.Close()
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	s.polling = make(chan struct{})
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.dialCtx, s.stopDialing = context.WithCancel(s.ctx)
	s.enroll = enroll.New(enroll.Config{Store: st, Signing: signing, Thumbprints: ids.Thumbprints, Logger: s.log,
		Replaced: func(agentID string) {
			s.dropAgent(agentID, "replaced by a new registration with --force")
			s.notifyCluster(cluster.NotifyDrop, agentID) // its session may be on another node
		}})
	s.bundles = calamari.New(calamari.Config{Store: st, Uploads: s.uploads, Signing: signing, DataDir: cfg.DataDir, Logger: s.log})
	s.rollouts = rollout.New(rollout.Config{Store: st, Fleet: rolloutFleet{s}, Uploads: s.uploads, Signing: signing, DataDir: cfg.DataDir,
		Grace: cfg.UpgradeGrace, IdleTimeout: cfg.UpgradeIdleTimeout, ReconnectMargin: cfg.UpgradeReconnectMargin, Logger: s.log})
	// The node functions are called per request, once the node has joined.
	s.idem, err = idempotency.New(idempotency.Config{Store: st, Node: s.nodeID, NodeGone: s.nodeGone})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	s.api = httpapi.New(httpapi.Config{Coordinator: s, Rollouts: s.rollouts, Access: s.access, Version: cfg.Version,
		Idempotency: s.idem, DiskFree: s.dataFree, Logger: s.log})
	s.console = console.New(console.Config{Coordinator: s, Rollouts: s.rollouts, Access: s.access, Machines: s, API: s.api,
		Version: cfg.Version, ReleaseFeed: cfg.ReleaseFeed != "", Logger: s.log})
	s.metrics.RegisterFleet(fleetMetrics{s}, fleetStates, fleetCountsMaxAge, s.log)
	// No VerifyClient: a revoked certificate passes the handshake and is
	// refused in the session (startSession), where the agent can be told
	// why; a refusal in the handshake reaches it as a bare EOF.
	s.tlsConf = protocol.ServerTLS{
		Certificate: ids.Certificate,
		MinVersion:  cfg.TLSMin,
	}.Config()
	if s.agentLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		st.Close()
		return nil, fmt.Errorf("new coordinator: listen for agents on %s: %w", cfg.Listen, err)
	}
	if s.httpLn, err = net.Listen("tcp", cfg.HTTP); err != nil {
		s.agentLn.Close()
		st.Close()
		return nil, fmt.Errorf("new coordinator: listen for HTTP on %s: %w", cfg.HTTP, err)
	}
	s.httpSrv = &http.Server{
		Handler:           s.handler(),
		TLSConfig:         cfg.HTTPTLS,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(&zapWriter{log: s.log, name: "http"}, "", 0),
	}
	if s.cfg.NodeName == "" {
		_, port, _ := net.SplitHostPort(s.AgentAddr())
		s.cfg.NodeName = net.JoinHostPort(cluster.Hostname(), port)
	}
	s.diagnostics = diagnostics.New(diagnostics.Config{Store: st, Fleet: diagnosticsFleet{s}, Version: cfg.Version, Node: s.cfg.NodeName, Logger: s.log})
	s.members, err = cluster.Join(ctx, cluster.Config{Store: st, Name: s.cfg.NodeName, Advertise: s.advertiseAddr(),
		HTTP: s.HTTPAddr(), Version: cfg.Version, Interval: cfg.HeartbeatInterval, Shared: clustered(st),
		OnRefresh: func(self store.Node) { s.applyDraining(self.Draining) }, Logger: s.log})
	if err != nil {
		s.httpLn.Close()
		s.agentLn.Close()
		st.Close()
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	return s, nil
}

// checkHTTPBind refuses to serve the API in plain HTTP beyond loopback:
// API keys would cross the network in clear.
func checkHTTPBind(addr string, hasTLS bool) error {
	if hasTLS {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("HTTP address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("refusing to serve the API on %s without TLS: bind to 127.0.0.1 or give a certificate and key for HTTPS", addr)
}

// AgentAddr is the address agents dial.
func (s *Server) AgentAddr() string { return s.agentLn.Addr().String() }

// HTTPAddr is the API's address.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// Thumbprint is the coordinator's current certificate thumbprint.
func (s *Server) Thumbprint() string { return s.ids.Current() }

// Run serves agents and the API until ctx is done, then shuts down: it
// stops accepting, tells connected agents to reconnect later (spread out
// so a restart is not followed by a storm), and waits for its goroutines.
func (s *Server) Run(ctx context.Context) error {
	ri := api.RunInfo{PID: os.Getpid(), Version: s.cfg.Version, HTTP: s.HTTPAddr(), HTTPS: s.cfg.HTTPTLS != nil, AgentAddr: s.AgentAddr()}
	if err := writeRunInfo(s.cfg.DataDir, ri); err != nil {
		s.Close()
		return fmt.Errorf("run coordinator: %w", err)
	}
	s.log.Info("coordinator started",
		zap.String("agents", s.AgentAddr()), zap.String("http", s.HTTPAddr()),
		zap.String("thumbprint", s.Thumbprint()), zap.String("tls_min", protocol.TLSVersionName(s.cfg.TLSMin)),
		zap.String("version", s.cfg.Version), zap.String("node", s.cfg.NodeName))

	if n := backup.RemoveLeftSnapshots(s.cfg.DataDir); n > 0 {
		s.log.Info("database snapshots left by an earlier run removed", zap.Int("snapshots", n))
	}
	// Rollouts resume before agents are accepted, so that an agent in the
	// middle of a transfer is not matched against stale steps.
	if err := s.rollouts.Resume(ctx); err != nil {
		s.log.Error("resume running rollouts failed", zap.Error(err))
	}
	serveErr := make(chan error, 2)
	s.goFunc(func() { serveErr <- s.acceptAgents() })
	s.goFunc(func() {
		var err error
		if s.cfg.HTTPTLS != nil {
			err = s.httpSrv.ServeTLS(s.httpLn, "", "")
		} else {
			err = s.httpSrv.Serve(s.httpLn)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		serveErr <- err
	})
	pollCtx, stopPoll := context.WithCancel(context.Background())
	s.goFunc(func() { s.pollHealth(pollCtx) })
	s.goFunc(func() { s.checkNewcomers(pollCtx) })
	retentionChanged := s.policy.Watch()
	s.goFunc(func() { s.spreadRetention(pollCtx, retentionChanged) })
	s.goFunc(func() { s.releases.Run(pollCtx) })
	s.goFunc(func() { s.dialer.Run(s.dialCtx) })
	// Unfinished tasks, this node's from its last run included, are
	// claimed as their agents connect.
	s.runCluster(pollCtx)

	var err error
	select {
	case <-ctx.Done():
	case <-s.done:
		// Shutdown was called: its caller's deadline rules, and the
		// caller's Shutdown or Close releases the store.
		stopPoll()
		<-s.drained
		s.stopped()
		return nil
	case err = <-serveErr:
		if err != nil {
			err = fmt.Errorf("run coordinator: %w", err)
		}
	}
	stopPoll()
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := s.Shutdown(shutCtx); serr != nil {
		s.log.Warn("shutdown did not finish in time; closing what is left", zap.Error(serr))
	}
	s.Close()
	s.stopped()
	return err
}

// stopped removes the run file and says so, once Run is done.
func (s *Server) stopped() {
	os.Remove(filepath.Join(s.cfg.DataDir, api.RunFile))
	s.log.Info("coordinator stopped")
}

// Shutdown stops the coordinator gracefully, as net/http.Server.Shutdown
// does: it stops accepting agents and API requests, lets requests under
// way finish, tells connected agents to come back later (spread out, so
// a restart is not followed by a storm), and waits for its goroutines,
// then records this node's stop and closes the store. If ctx ends first,
// it cuts the API requests and agent sessions still open and returns
// ctx's error; Close then waits for what is left and releases the store.
// Run returns once the server's goroutines have ended, leaving the
// deadline to Shutdown's caller. Calling it again waits again.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop(ctx)
	select {
	case <-s.drained:
	case <-ctx.Done():
		s.cut()
		return ctx.Err()
	}
	s.finish(ctx)
	return nil
}

// cut closes the API's connections, ending the requests under way, and
// every agent session.
func (s *Server) cut() {
	s.httpSrv.Close()
	for _, as := range s.sessions.snapshot() {
		as.sess.Close()
	}
}

// Close stops the coordinator at once, as net/http.Server.Close does: it
// closes the listeners, the API's connections (requests under way end
// with them) and every agent session without a goodbye, waits for its
// goroutines and closes the store. Use it for a server whose Run was never
// called, or after a Shutdown that ran out of time. It is idempotent and
// safe after Run.
func (s *Server) Close() error {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	s.stop(ended)
	s.cut()
	<-s.drained
	s.finish(context.Background())
	return nil
}

// stop begins the shutdown, once: no new connections or requests, a
// goodbye to every agent within ctx, and every goroutine told to end.
func (s *Server) stop(ctx context.Context) {
	s.stopOnce.Do(func() {
		s.runMu.Lock()
		close(s.done)
		s.runMu.Unlock()
		s.stopDialing()
		s.agentLn.Close()
		s.httpSrv.Shutdown(ctx)
		s.httpLn.Close()
		s.goAwayAll(ctx)
		s.cancel()
		go func() {
			s.rollouts.Close()
			s.wg.Wait()
			close(s.drained)
		}()
	})
}

// finish records this node's stop and closes the store, once, after
// every goroutine has ended.
func (s *Server) finish(ctx context.Context) {
	s.finishOnce.Do(func() {
		s.stopNode(ctx)
		s.store.Close()
	})
}

// goAwayAll tells every agent the coordinator is going away and when to
// come back, then closes the sessions.
func (s *Server) goAwayAll(ctx context.Context) {
	all := s.sessions.snapshot()
	spread := admission.ReconnectSpread(len(all))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, as := range all {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			callCtx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			protocol.CallSigned(callCtx, as.sess, as.sign, protocol.TypeGoAway, protocol.GoAway{
				Reason:           "coordinator is shutting down",
				Reconnect:        true,
				RetryAfterMillis: rand.Int64N(spread.Milliseconds()),
			}, protocol.TypeAck, nil)
			as.sess.Close()
		}()
	}
	wg.Wait()
}

// goIfRunning starts f as goFunc does unless shutdown has begun, and
// reports whether it did: what starts work from a goroutine the server
// does not track (an HTTP handler) must not start it after the server
// began waiting for its goroutines.
func (s *Server) goIfRunning(f func()) bool {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	select {
	case <-s.done:
		return false
	default:
	}
	s.goFunc(f)
	return true
}

func (s *Server) goFunc(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// zapWriter adapts the standard library's logger to zap, under the
// logger name name.
type zapWriter struct {
	log  *zap.Logger
	name string
}

func (w *zapWriter) Write(p []byte) (int, error) {
	w.log.Named(w.name).Warn("library message", zap.ByteString("text", p))
	return len(p), nil
}
