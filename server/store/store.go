// Package store persists the coordinator's state: agents, enrollment
// tokens, API keys, revoked thumbprints, tasks, rollouts, nodes and
// settings.
//
// Store is the one interface the rest of the coordinator uses. It has two
// backends: SQLite (OpenSQLite), the default, embedded in the coordinator's
// data folder, and PostgreSQL (OpenPostgres), which several coordinators
// share for high availability. Both satisfy the same contract and run the
// same tests.
//
// # One SQL store, two dialects
//
// The Store is implemented once, by sqlStore, on database/sql: every
// query is written once, with ? placeholders, and the two schemas
// (migrations/sqlite and migrations/postgres, mirroring each other file
// for file) have the same tables and columns, times as BIGINT unix
// nanoseconds and string lists as JSON in TEXT. SQLite and Postgres are
// thin types that embed it. What the two databases do differently is a
// dialect's (see the dialect interface):
//
//   - Concurrency. An SQLite file has one coordinator and one writer
//     connection, which serializes every write transaction. A PostgreSQL
//     database is shared by coordinators whose transactions run at once,
//     so the same transactions take advisory locks for the checks no
//     constraint can express (unique thumbprints, a token used once, a
//     live node's name, an agent in one running rollout), lock the rows
//     they read to change (FOR UPDATE), and run again when PostgreSQL
//     gives one up for a deadlock or a serialization failure. Where a
//     constraint can decide (a bundle's version, a user's name), an
//     INSERT's conflict decides, in both.
//   - Types. SQLite keeps booleans as integers and bytes in TEXT
//     (signatures as hex); PostgreSQL has BOOLEAN and BYTEA, and refuses
//     NUL bytes and invalid UTF-8 in TEXT, so free text from agents and
//     people is made valid first.
//   - Mechanics only one of them has, which stay on its own type:
//     PostgreSQL's LISTEN/NOTIFY wakes the other nodes, large objects hold
//     shared uploads, and statements are batched into one round trip;
//     pgx's stdlib driver gives database/sql, and sql.Conn.Raw pgx itself
//     for these. SQLite caches the prepared statements of the agent
//     connection path, backs a database up before migrating it and takes
//     consistent copies with VACUUM INTO; in one process a notification
//     is a function call.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/tendrildeploy/tendril/server/kind"
)

// Errors that callers branch on. Implementations wrap them with context, so
// compare with errors.Is.
var (
	// ErrNotFound is returned when the requested record does not exist.
	ErrNotFound = kind.ErrNotFound
	// ErrTokenInvalid means no token with that value exists, or it is for
	// another environment than the one asked for.
	ErrTokenInvalid = errors.New("enrollment token is not valid")
	// ErrTokenExpired means the token existed but its lifetime has passed.
	ErrTokenExpired = errors.New("enrollment token has expired")
	// ErrTokenUsed means the token was already used by another agent.
	ErrTokenUsed = errors.New("enrollment token has already been used")
	// ErrNameTaken means another agent already has the requested name.
	ErrNameTaken = errors.New("agent name is already taken")
	// ErrThumbprintTaken means an agent with that certificate is already
	// registered.
	ErrThumbprintTaken = errors.New("certificate is already registered")
	// ErrExists means a record with that key exists already.
	ErrExists = errors.New("already exists")
	// ErrInRollout means an agent of a new running rollout is already in
	// another running rollout.
	ErrInRollout = errors.New("agent is already in a running rollout")
	// ErrSchemaTooNew means the database was migrated by a newer coordinator.
	ErrSchemaTooNew = errors.New("database schema is newer than this coordinator")
)

// Health values, as shown by the API.
const (
	HealthHealthy     = "healthy"
	HealthWarning     = "warning"
	HealthUnhealthy   = "unhealthy"
	HealthUnavailable = "unavailable"
)

// Agent is an enrolled deployment target.
type Agent struct {
	ID          string // UUID chosen by the coordinator at registration
	Name        string // unique
	Environment string
	// Thumbprint is the SHA-256 thumbprint of the certificate the agent
	// registered with (or rotated to). Unique.
	Thumbprint string
	// NextThumbprint is a certificate the agent presented over its live
	// session during a rotation; it is trusted alongside Thumbprint until
	// the agent connects with it, when it becomes Thumbprint. "" if none.
	NextThumbprint string

	// Facts reported by the agent in its Hello and health checks.
	Version          string
	OS               string
	Arch             string
	Protocol         int      // negotiated protocol version of the last session
	TLSVersion       string   // "1.0" .. "1.3" of the last session, "" if never connected
	CalamariVersions []string // verified versions present on the agent

	Health       string // one of the Health* constants
	HealthDetail string // why, for a person ("TLS 1.0 is deprecated", "disk low")
	HealthRTT    time.Duration
	DiskFree     int64 // bytes free in the agent's home, -1 if unknown

	// ServerThumbprintAck is the newest coordinator thumbprint the agent
	// confirmed it trusts; used to know when a rotated-out coordinator
	// certificate can be retired.
	ServerThumbprintAck string

	RegisteredAt time.Time
	LastSeen     time.Time // zero if never connected
	LastHealthAt time.Time // zero if never checked

	// Node is the ID of the coordinator node that recorded the agent's
	// current session, "" if none did. A dead node's agents are not
	// connected, whatever this says.
	Node string
}

// Token is a one-time enrollment token. Only its hash is stored.
type Token struct {
	ID          string
	Hash        string // lower-case hex SHA-256 of the token secret
	Environment string
	CreatedAt   time.Time
	ExpiresAt   time.Time
	UsedAt      time.Time // zero while unused
	UsedBy      string    // thumbprint of the agent that used it
}

// APIKey authorizes calls to the HTTP API. Only its hash is stored.
type APIKey struct {
	ID        string
	Name      string
	Hash      string // lower-case hex SHA-256 of the key
	CreatedAt time.Time
	RevokedAt time.Time // zero while valid
	// Admin keys may also manage users and API keys.
	Admin bool
}

// RegisterParams is one enrollment attempt.
type RegisterParams struct {
	TokenHash   string
	Thumbprint  string
	Name        string
	Environment string // "" means the token's environment
	Force       bool   // replace an agent with the same name or thumbprint
	Now         time.Time
	NewID       string // ID to give the new agent
}

// RegisterResult is the outcome of a successful enrollment.
type RegisterResult struct {
	Agent Agent
	// Replaced lists agents removed because Force was set; their sessions
	// must be dropped and their thumbprints are revoked (except the one the
	// new agent uses).
	Replaced []Agent
}

// Connection is what the coordinator records when an agent's session
// starts.
type Connection struct {
	AgentID          string
	Version          string
	OS               string
	Arch             string
	Protocol         int
	TLSVersion       string
	CalamariVersions []string
	At               time.Time
	// Node is the ID of the coordinator node that holds the session.
	Node string
}

// HealthResult is the outcome of one health check.
type HealthResult struct {
	AgentID          string
	Health           string
	Detail           string
	RTT              time.Duration
	Version          string
	CalamariVersions []string
	DiskFree         int64
	At               time.Time
}

// Store is the coordinator's persistence. All methods are safe for
// concurrent use.
type Store interface {
	// Register consumes a token and creates the agent atomically.
	// Errors: ErrTokenInvalid, ErrTokenExpired, ErrTokenUsed (unless the
	// same thumbprint used it and is still registered, which returns that
	// agent again so a lost reply can be retried), ErrNameTaken and
	// ErrThumbprintTaken (unless Force).
	Register(ctx context.Context, p RegisterParams) (RegisterResult, error)

	// AgentByThumbprint finds the agent whose Thumbprint or NextThumbprint
	// matches. ErrNotFound if none.
	AgentByThumbprint(ctx context.Context, thumbprint string) (Agent, error)
	// AgentByID returns the agent or ErrNotFound.
	AgentByID(ctx context.Context, id string) (Agent, error)
	// AgentByName returns the agent or ErrNotFound.
	AgentByName(ctx context.Context, name string) (Agent, error)
	// ListAgents returns every agent ordered by environment, then name.
	ListAgents(ctx context.Context) ([]Agent, error)
	// DeleteAgent removes the agent and revokes its thumbprints.
	// ErrNotFound if it does not exist.
	DeleteAgent(ctx context.Context, id string) error
	// IsRevoked reports whether the thumbprint belonged to a deleted or
	// replaced agent.
	IsRevoked(ctx context.Context, thumbprint string) (bool, error)

	// RecordConnection stores the facts of a new session and LastSeen.
	RecordConnection(ctx context.Context, c Connection) error
	// RecordHealth stores a batch of health results in one transaction. A
	// check that got an answer (any health but unhealthy) also sets
	// LastSeen.
	RecordHealth(ctx context.Context, results []HealthResult) error
	// TouchAgents sets LastSeen for the given agents.
	TouchAgents(ctx context.Context, ids []string, at time.Time) error

	// SetNextThumbprint records a certificate presented during rotation.
	// ErrThumbprintTaken if another agent uses it.
	SetNextThumbprint(ctx context.Context, id, next string) error
	// PromoteThumbprint makes NextThumbprint the agent's Thumbprint and
	// revokes the old one. A no-op if NextThumbprint is "".
	PromoteThumbprint(ctx context.Context, id string) error
	// SetServerThumbprintAck records which coordinator thumbprint the agent
	// has confirmed it trusts.
	SetServerThumbprintAck(ctx context.Context, id, thumbprint string) error

	// CreateToken stores a new token.
	CreateToken(ctx context.Context, t Token) error
	// ListTokens returns all tokens, newest first.
	ListTokens(ctx context.Context) ([]Token, error)

	// CreateAPIKey stores a new API key.
	CreateAPIKey(ctx context.Context, k APIKey) error
	// APIKeyByHash returns a valid (not revoked) key or ErrNotFound.
	APIKeyByHash(ctx context.Context, hash string) (APIKey, error)

	// Setting returns a stored value or ErrNotFound.
	Setting(ctx context.Context, key string) (string, error)
	// SetSetting stores a value.
	SetSetting(ctx context.Context, key, value string) error

	// AddBundle stores an uploaded Calamari bundle's record. ErrExists if
	// the version is already stored (the caller compares hashes).
	AddBundle(ctx context.Context, b Bundle) error
	// Bundle returns one version or ErrNotFound.
	Bundle(ctx context.Context, version string) (Bundle, error)
	// Bundles returns every stored bundle, in no particular order.
	Bundles(ctx context.Context) ([]Bundle, error)

	// CreateTasks stores new tasks in one transaction.
	CreateTasks(ctx context.Context, tasks []Task) error
	// Task returns one task or ErrNotFound.
	Task(ctx context.Context, id string) (Task, error)
	// ListTasks returns tasks matching f, newest first.
	ListTasks(ctx context.Context, f TaskFilter) ([]Task, error)
	// UpdateTask changes a task's state and result. ErrNotFound if it does
	// not exist.
	UpdateTask(ctx context.Context, id string, u TaskUpdate) error
	// AppendTaskLogs stores log lines after the task's last one, giving
	// each the next Seq. Agent lines (AgentSeq > 0) already stored are
	// skipped, so re-reading after a reconnect never duplicates a line.
	// It returns the lines stored, with their Seq.
	AppendTaskLogs(ctx context.Context, taskID string, lines []LogLine) ([]LogLine, error)
	// TaskLogs returns up to limit lines with Seq >= from, in order.
	TaskLogs(ctx context.Context, taskID string, from int64, limit int) ([]LogLine, error)

	UpgradeStore
	ClusterStore
	AccessStore
	PolicyStore

	// Close releases the database. It is idempotent.
	Close() error
}

// Bundle is an uploaded, signed Calamari bundle. The archive itself lives
// in the coordinator's data folder, named by version.
type Bundle struct {
	Version    string
	SHA256     string // of the .tar.gz
	Size       int64
	Manifest   []byte // manifest.json as in the archive: what was signed
	Signature  []byte
	UploadedAt time.Time
}

// Task states. They are the protocol's, repeated here so the store does not
// depend on the wire format.
const (
	TaskQueued    = "queued"
	TaskRunning   = "running"
	TaskSucceeded = "succeeded"
	TaskFailed    = "failed"
	TaskCancelled = "cancelled"
)

// Task is Calamari run with arguments on one agent. Its ID is also the
// ticket the agent knows it by.
type Task struct {
	ID         string
	Group      string // tasks created by one request (an environment) share it
	AgentID    string
	AgentName  string
	Args       []string
	Calamari   string // version it runs
	FileName   string // a file pushed into the task's folder first, "" if none
	FileSHA256 string
	State      string
	ExitCode   int
	Error      string
	CreatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
	LastSeq    int64 // Seq of the last log line stored
	AgentSeq   int64 // highest agent sequence number stored: follow from AgentSeq+1
	// Node is the ID of the coordinator node driving the task, "" while
	// none is (see ClaimTask).
	Node string
}

// Finished reports whether the task reached a final state.
func (t Task) Finished() bool {
	return t.State == TaskSucceeded || t.State == TaskFailed || t.State == TaskCancelled
}

// TaskFilter selects tasks; zero fields match everything.
type TaskFilter struct {
	AgentID    string
	Group      string
	Unfinished bool // only queued and running
	Limit      int  // 0 means 100
}

// TaskUpdate is a change of a task's state. Zero times leave the stored
// ones unchanged.
type TaskUpdate struct {
	State      string
	ExitCode   int
	Error      string
	Calamari   string // "" leaves it unchanged
	StartedAt  time.Time
	FinishedAt time.Time
}

// LogLine is one line of a task's log.
type LogLine struct {
	Seq      int64 // display order within the task, from 1; set by the store
	AgentSeq int64 // the agent's sequence number; 0 for the coordinator's lines
	Time     time.Time
	Stream   string // "stdout", "stderr", "agent" or "coordinator"
	Text     string
}

// AgentPackage is an uploaded, signed agent binary for one os/arch. The
// binary itself lives in the coordinator's data folder.
type AgentPackage struct {
	Version    string
	OS         string
	Arch       string
	SHA256     string
	Size       int64
	Signature  []byte // over protocol.AgentPackage's signing bytes
	UploadedAt time.Time
}

// Rollout states.
const (
	RolloutRunning   = "running"
	RolloutSucceeded = "succeeded"
	RolloutHalted    = "halted"
)

// States of one agent in a rollout, in the order they normally happen.
// Succeeded, RolledBack and Failed are final.
const (
	UpgradeQueued            = "queued"
	UpgradeWaitingForIdle    = "waiting_for_idle"
	UpgradeSending           = "sending"
	UpgradeInstalling        = "installing"
	UpgradeAwaitingReconnect = "awaiting_reconnect"
	UpgradeSucceeded         = "succeeded"
	UpgradeRolledBack        = "rolled_back"
	UpgradeFailed            = "failed"
)

// UpgradeFinal reports whether an agent's rollout state is final.
func UpgradeFinal(state string) bool {
	return state == UpgradeSucceeded || state == UpgradeRolledBack || state == UpgradeFailed
}

// Rollout is a staged upgrade of agents to one agent version.
type Rollout struct {
	ID          string
	Environment string // "" means every environment (or, with NamedAgents, none)
	// NamedAgents is true when the rollout targets agents by name: its
	// agents are those of its RolloutAgent rows.
	NamedAgents    bool
	Version        string
	Batch          int
	MaxFailures    int
	AllowDowngrade bool
	GraceSeconds   int
	State          string
	Reason         string
	CreatedAt      time.Time
	FinishedAt     time.Time // zero while running
	// Node is the ID of the coordinator node driving the rollout's
	// batches, "" while none is (see ClaimRollout). CreateRollout stores
	// it as given.
	Node string
}

// RolloutAgent is one agent's progress in a rollout.
type RolloutAgent struct {
	RolloutID   string
	AgentID     string
	AgentName   string
	FromVersion string
	Position    int // order within the rollout: environment, then name
	Batch       int
	State       string
	Reason      string
	UpdatedAt   time.Time
	// Node is the ID of the coordinator node sending the agent its
	// package (set with the sending state), "" otherwise.
	Node string
}

// UpgradeStore is the part of Store about agent packages and rollouts.
type UpgradeStore interface {
	// AddAgentPackage stores an uploaded agent package's record. ErrExists
	// if that version, os and arch is already stored (the caller compares
	// hashes).
	AddAgentPackage(ctx context.Context, p AgentPackage) error
	// AgentPackages returns every stored package, in no particular order.
	AgentPackages(ctx context.Context) ([]AgentPackage, error)
	// AgentPackage returns one package or ErrNotFound.
	AgentPackage(ctx context.Context, version, os, arch string) (AgentPackage, error)

	// CreateRollout stores a rollout and its agents in one transaction. A
	// running rollout is refused, with ErrInRollout naming the agents, when
	// another running rollout holds one of its agents: the check and the
	// insert are one step even with several coordinators on one database.
	CreateRollout(ctx context.Context, r Rollout, agents []RolloutAgent) error
	// Rollout returns one rollout or ErrNotFound.
	Rollout(ctx context.Context, id string) (Rollout, error)
	// Rollouts returns rollouts, newest first; running only if asked.
	Rollouts(ctx context.Context, runningOnly bool, limit int) ([]Rollout, error)
	// RolloutAgents returns a rollout's agents in their rollout order.
	RolloutAgents(ctx context.Context, rolloutID string) ([]RolloutAgent, error)
	// RolloutAgent returns one agent's row of a rollout or ErrNotFound.
	RolloutAgent(ctx context.Context, rolloutID, agentID string) (RolloutAgent, error)
	// RunningRolloutAgents returns the rows of an agent in running
	// rollouts (at most one, since running rollouts never share agents).
	RunningRolloutAgents(ctx context.Context, agentID string) ([]RolloutAgent, error)
	// SetRolloutAgentState moves an agent to state `to` with a reason,
	// only if its current state is one of from (all states if from is
	// empty), and reports whether it did. Compare-and-set keeps a slow
	// writer from overwriting an outcome recorded meanwhile.
	SetRolloutAgentState(ctx context.Context, rolloutID, agentID string, from []string, to, reason string, at time.Time) (bool, error)
	// FinishRollout sets a rollout's state, reason and finish time.
	// ErrNotFound if it does not exist.
	FinishRollout(ctx context.Context, id, state, reason string, at time.Time) error
}

// numberLogLines picks the lines of an append that are new and numbers
// them after last: a line whose agent sequence is at or below agentSeq was
// stored already (the agent re-sent it after a reconnect). Lines without a
// time get now. It returns the new lines and the task's new last and
// agent sequences. Both stores number lines this way, inside the
// transaction that read last and agentSeq.
func numberLogLines(lines []LogLine, last, agentSeq int64, now time.Time) (fresh []LogLine, newLast, newAgentSeq int64) {
	for _, l := range lines {
		if l.AgentSeq > 0 && l.AgentSeq <= agentSeq {
			continue
		}
		if l.Time.IsZero() {
			l.Time = now
		}
		if l.AgentSeq > 0 {
			agentSeq = l.AgentSeq
		}
		last++
		l.Seq = last
		fresh = append(fresh, l)
	}
	return fresh, last, agentSeq
}
