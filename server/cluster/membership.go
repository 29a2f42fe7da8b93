package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// DefaultHeartbeatInterval is how often a node records that it is alive
// unless told otherwise; the others count it dead after store.DeadAfter
// missed beats.
const DefaultHeartbeatInterval = 5 * time.Second

// Notifications between nodes: a kind, then its arguments, space
// separated. "" (from the store) means some may have been missed.
const (
	NotifyTasks       = "tasks"       // tasks wait for a driver
	NotifyCancel      = "cancel"      // cancel TASK: its driver stops it
	NotifyDrop        = "drop"        // drop AGENT: deleted, end its session
	NotifyMoved       = "moved"       // moved AGENT NODE: it connected to NODE
	NotifyDrain       = "drain"       // drain NODE: its draining flag changed
	NotifyMaintenance = "maintenance" // maintenance mode changed
	NotifyRollout     = "rollout"     // rollout ID: a rollout's state changed
	NotifyUpgrade     = "upgrade"     // upgrade ID: a rollout's agents wait to be upgraded
	NotifyRedial      = "redial"      // redial AGENT: a listening agent's address changed
	NotifyCall        = "call"        // call NODE ID: a call waits for NODE to take it
	NotifyAnswer      = "answer"      // answer ID: the call ID was answered
)

const (
	// pruneAfter is how long the row of a node that stopped beating is
	// kept, so that nodes list can say what happened to it.
	pruneAfter = 24 * time.Hour
	// pruneEvery is how often a node prunes.
	pruneEvery = time.Hour
)

// MemberStore is the part of the store about nodes.
type MemberStore interface {
	RegisterNode(ctx context.Context, n store.Node) (store.Node, error)
	HeartbeatNode(ctx context.Context, id string) error
	StopNode(ctx context.Context, id string, at time.Time) error
	Nodes(ctx context.Context) ([]store.Node, error)
	PruneNodes(ctx context.Context, olderThan time.Duration) (int, error)
	Notify(ctx context.Context, payload string) error
}

// Config configures a node's Membership.
type Config struct {
	Store MemberStore
	// Name names the node among those sharing the database.
	Name string
	// Advertise is the address agents are told to dial this node at.
	Advertise string
	// HTTP is the node's API address, shown in nodes list.
	HTTP    string
	Version string
	// Interval is how often the node beats. Default
	// DefaultHeartbeatInterval.
	Interval time.Duration
	// Shared says whether other nodes may share the database; a node
	// alone on it (SQLite) tells agents of no other.
	Shared bool
	// OnRefresh is called with this node's row each time the nodes are
	// read: how a draining flag set through another node reaches this
	// one, should its notification be missed.
	OnRefresh func(self store.Node)
	Logger    *zap.Logger
}

// Membership is one coordinator node among those sharing a database: its
// registration and heartbeat, what it last read of the others, and the
// notifications it sends them.
type Membership struct {
	cfg      Config
	st       MemberStore
	log      *zap.Logger
	self     store.Node  // as registered
	draining atomic.Bool // refuse sessions, claim no queued task

	mu     sync.Mutex
	nodes  map[string]store.Node // every node as last read, by ID
	pruned time.Time
}

// Join records this node in the database. A previous run of the same name
// that was killed is still counted alive for a few heartbeats: Join waits
// that long, then refuses a name another running node uses.
func Join(ctx context.Context, cfg Config) (*Membership, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultHeartbeatInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	m := &Membership{cfg: cfg, st: cfg.Store, log: cfg.Logger}
	n := store.Node{
		ID: uuid.NewString(), Name: cfg.Name, Advertise: cfg.Advertise, HTTP: cfg.HTTP,
		Version: cfg.Version, StartedAt: time.Now().UTC(), HeartbeatEvery: cfg.Interval,
		Dials: true, Answers: true,
	}
	deadline := time.Now().Add((store.DeadAfter+1)*cfg.Interval + 2*time.Second)
	waited := false
	for {
		got, err := m.st.RegisterNode(ctx, n)
		if err == nil {
			m.self = got
			m.draining.Store(got.Draining)
			m.nodes = map[string]store.Node{got.ID: got}
			if got.Draining {
				m.log.Warn("this node starts draining, as it was when it stopped: it takes no agents until undrained (tendril-server node undrain)",
					zap.String("node", got.Name))
			}
			return m, nil
		}
		if !errors.Is(err, store.ErrNodeAlive) {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: another coordinator runs with node name %q; give each node its own --node-name", err, n.Name)
		}
		if !waited {
			m.log.Warn("a previous run of this node still counts as alive; waiting for its heartbeat to go stale",
				zap.String("node", n.Name), zap.Error(err))
			waited = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("register node %s: %w", n.Name, ctx.Err())
		case <-time.After(min(cfg.Interval, 500*time.Millisecond)):
		}
	}
}

// ID is this node's ID.
func (m *Membership) ID() string { return m.self.ID }

// Name is this node's name.
func (m *Membership) Name() string { return m.self.Name }

// Interval is how often the node beats.
func (m *Membership) Interval() time.Duration { return m.cfg.Interval }

// Draining reports whether this node drains.
func (m *Membership) Draining() bool { return m.draining.Load() }

// SetDraining switches draining here and reports whether that changed
// it.
func (m *Membership) SetDraining(on bool) (changed bool) { return m.draining.Swap(on) != on }

// Stop records a clean stop, so that the other nodes take over the tasks
// of this node's agents at once rather than after missed heartbeats.
func (m *Membership) Stop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := m.st.StopNode(ctx, m.ID(), time.Now().UTC()); err != nil {
		return fmt.Errorf("record the stop of node %s: %w", m.Name(), err)
	}
	m.Notify(ctx, NotifyTasks)
	return nil
}

// Beat records the heartbeat, reads the other nodes and, once an hour,
// prunes the nodes dead for a day.
func (m *Membership) Beat(ctx context.Context) error {
	err := m.st.HeartbeatNode(ctx, m.ID())
	if errors.Is(err, store.ErrNotFound) {
		// Pruned while this node could not reach the database for a day,
		// or marked stopped by mistake: record it again.
		n := m.self
		n.StartedAt = time.Now().UTC()
		if _, rerr := m.st.RegisterNode(ctx, n); rerr != nil {
			return fmt.Errorf("register again after the node's record was lost: %w", rerr)
		}
		m.log.Warn("this node's record had gone from the database; registered it again")
		err = nil
	}
	if err != nil {
		return err
	}
	if _, err := m.Refresh(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	prune := time.Since(m.pruned) > pruneEvery
	if prune {
		m.pruned = time.Now()
	}
	m.mu.Unlock()
	if prune {
		if n, err := m.st.PruneNodes(ctx, pruneAfter); err != nil {
			m.log.Warn("prune dead nodes failed", zap.Error(err))
		} else if n > 0 {
			m.log.Info("forgot nodes dead for a day", zap.Int("nodes", n))
		}
	}
	return nil
}

// Refresh reads every node, and hands this node's row to OnRefresh.
func (m *Membership) Refresh(ctx context.Context) ([]store.Node, error) {
	all, err := m.st.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	byID := make(map[string]store.Node, len(all))
	for _, n := range all {
		byID[n.ID] = n
	}
	m.mu.Lock()
	m.nodes = byID
	m.mu.Unlock()
	if self, ok := byID[m.ID()]; ok && m.cfg.OnRefresh != nil {
		m.cfg.OnRefresh(self)
	}
	return all, nil
}

// Alive reports whether the node is known, and alive, as last read.
func (m *Membership) Alive(id string) (known, alive bool) {
	if id == m.ID() {
		return true, true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[id]
	return ok, ok && n.Alive()
}

// Node returns a node as last read; false if none was read with that ID.
func (m *Membership) Node(id string) (store.Node, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[id]
	return n, ok
}

// Dialer picks the node that dials a listening agent: of the live nodes
// that are not draining and dial (not those of versions from before
// listening agents, during a rolling upgrade), as last read, the one rendezvous hashing ranks
// first for the agent, so that every node that read the same rows picks
// the same one, and a node's departure moves only its own agents. ""
// when every node drains.
func (m *Membership) Dialer(agentID string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	best, bestScore := "", uint64(0)
	consider := func(id string) {
		h := fnv.New64a()
		h.Write([]byte(agentID))
		h.Write([]byte{0})
		h.Write([]byte(id))
		if score := h.Sum64(); best == "" || score > bestScore || score == bestScore && id < best {
			best, bestScore = id, score
		}
	}
	if !m.Draining() {
		consider(m.self.ID)
	}
	for id, n := range m.nodes {
		if id != m.self.ID && n.Alive() && !n.Draining && n.Dials {
			consider(id)
		}
	}
	return best
}

// Gone reports whether a node other than this one is dead, or gone from
// the database. A node unknown here may have started since the last beat:
// the nodes are read again before it is taken for gone.
func (m *Membership) Gone(ctx context.Context, id string) bool {
	if id == m.ID() {
		return false
	}
	known, alive := m.Alive(id)
	if !known {
		if _, err := m.Refresh(ctx); err != nil {
			return false // when in doubt, it lives
		}
		_, alive = m.Alive(id)
	}
	return !alive
}

// Notify wakes every node, this one included. A failure is logged, not
// returned: every beat sweeps anyway, so the others learn it late, not
// never.
func (m *Membership) Notify(ctx context.Context, kind string, args ...string) {
	payload := strings.Join(append([]string{kind}, args...), " ")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := m.st.Notify(ctx, payload); err != nil {
		m.log.Warn("notify the other nodes failed", zap.String("notification", payload), zap.Error(err))
	}
}

// LiveAddrs are the agent addresses of every live node, this one first:
// what join strings carry.
func (m *Membership) LiveAddrs(ctx context.Context) []string {
	addrs := []string{m.cfg.Advertise}
	all, err := m.Refresh(ctx)
	if err != nil {
		m.log.Warn("read nodes for a join string failed; it names this node only", zap.Error(err))
		return addrs
	}
	for _, n := range all {
		if n.ID != m.ID() && n.Alive() && n.Advertise != "" && !slices.Contains(addrs, n.Advertise) {
			addrs = append(addrs, n.Advertise)
		}
	}
	return addrs
}

// WelcomeServers is what a Welcome tells an agent of the nodes, as last
// read: every live node's address, this one's first, when the database is
// shared; nothing when it is not, since its one node is the one the agent
// knows.
func (m *Membership) WelcomeServers() []string {
	if !m.cfg.Shared {
		return nil
	}
	m.mu.Lock()
	others := make([]store.Node, 0, len(m.nodes))
	for _, n := range m.nodes {
		if n.ID != m.ID() && n.Alive() && n.Advertise != "" {
			others = append(others, n)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(others, func(a, b store.Node) int { return strings.Compare(a.Name, b.Name) })
	addrs := []string{m.cfg.Advertise}
	for _, n := range others {
		if !slices.Contains(addrs, n.Advertise) {
			addrs = append(addrs, n.Advertise)
		}
	}
	return addrs
}

// Nodes lists the nodes sharing this one's database, as the API shows
// them.
func (m *Membership) Nodes(ctx context.Context) ([]api.NodeView, error) {
	all, err := m.Refresh(ctx)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out := make([]api.NodeView, len(all))
	for i, n := range all {
		out[i] = m.view(n)
	}
	return out, nil
}

// Find returns the node named name as just read, or an error wrapping
// kind.ErrNotFound.
func (m *Membership) Find(ctx context.Context, name string) (api.NodeView, error) {
	all, err := m.Refresh(ctx)
	if err != nil {
		return api.NodeView{}, err
	}
	var found *store.Node
	for i := range all {
		if all[i].Name == name {
			found = &all[i] // the last, should a name have two rows
		}
	}
	if found == nil {
		return api.NodeView{}, kind.Errorf(kind.ErrNotFound, "no coordinator node named %q (see tendril-server nodes list)", name)
	}
	return m.view(*found), nil
}

func (m *Membership) view(n store.Node) api.NodeView {
	v := api.NodeView{
		ID: n.ID, Name: n.Name, Advertise: n.Advertise, HTTP: n.HTTP, Version: n.Version,
		StartedAt: n.StartedAt, Heartbeat: n.Heartbeat, HeartbeatAgeSeconds: n.HeartbeatAge.Seconds(),
		Alive: n.Alive(), Draining: n.Draining, Self: n.ID == m.ID(),
	}
	if v.Alive {
		v.Agents, v.Tasks, v.Rollouts = n.Agents, n.Tasks, n.Rollouts
	}
	switch {
	case !n.StoppedAt.IsZero():
		v.State = api.NodeStopped
	case !v.Alive:
		v.State = api.NodeDead
	case n.Draining && v.Agents == 0 && v.Tasks == 0 && v.Rollouts == 0:
		v.State, v.Drained = api.NodeDrained, true
	case n.Draining:
		v.State = api.NodeDraining
	default:
		v.State = api.NodeRunning
	}
	return v
}

// Advertised is the agent address of a node listening on listen: given,
// if not "", or else listen with a wildcard host replaced by this
// machine's name.
func Advertised(listen, given string) string {
	if given != "" {
		return given
	}
	host, port, _ := net.SplitHostPort(listen)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = Hostname()
	}
	return net.JoinHostPort(host, port)
}

// Hostname is this machine's name, "localhost" if it has none.
func Hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}
