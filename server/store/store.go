package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
)

// ErrLastAdminKey means revoking the key would leave no valid admin API
// key: nobody could then manage users or keys through the API, and the
// admin commands run with --data would stop working.
var ErrLastAdminKey = errors.New("it is the last valid admin API key")

// AccessStore is the part of Store about who may act: console users, the
// listing and revocation of API keys, and the removal of enrollment
// tokens.
type AccessStore interface {
	// CreateUser stores a new user. ErrExists if a user has that name in
	// any case.
	CreateUser(ctx context.Context, u User) error
	// UserByName returns the user whose name matches in any case, or
	// ErrNotFound.
	UserByName(ctx context.Context, name string) (User, error)
	// UserByID returns the user or ErrNotFound.
	UserByID(ctx context.Context, id string) (User, error)
	// ListUsers returns every user ordered by name.
	ListUsers(ctx context.Context) ([]User, error)
	// DeleteUser removes the user whose name matches in any case and
	// returns it. ErrNotFound if none does.
	DeleteUser(ctx context.Context, name string) (User, error)

	// ListAPIKeys returns every API key, revoked ones too, newest first.
	ListAPIKeys(ctx context.Context) ([]APIKey, error)
	// RevokeAPIKey revokes a key at the given time and returns it.
	// Revoking a revoked key changes nothing and returns it as it is.
	// ErrNotFound if there is no such key; ErrLastAdminKey, with nothing
	// changed, if it is the last valid admin key.
	RevokeAPIKey(ctx context.Context, id string, at time.Time) (APIKey, error)

	// DeleteToken removes an enrollment token, used or not, so that it
	// can no longer enroll an agent. ErrNotFound if it does not exist.
	DeleteToken(ctx context.Context, id string) error
}

// ErrNodeAlive means a node with the name asked for is still alive.
var ErrNodeAlive = errors.New("a live node already has this name")

// ClusterStore is the part of Store about coordinator nodes: their
// registry, which node serves which agent and drives which task or
// rollout, and the wake-up calls between them.
//
// Work moves between nodes by compare-and-set claims: a claim names the
// node the caller saw (from) and succeeds only if that is still the
// owner, so of several nodes racing for the same task exactly one wins.
type ClusterStore interface {
	// RegisterNode records a node that starts. Earlier rows with the same
	// name that are no longer alive are removed and the newest one's
	// Draining passes to n; a live one refuses n with ErrNodeAlive. The
	// heartbeat is set now; StartedAt must be set. It returns n as stored.
	RegisterNode(ctx context.Context, n Node) (Node, error)
	// HeartbeatNode records that the node is alive. ErrNotFound if its
	// row is gone or it was stopped.
	HeartbeatNode(ctx context.Context, id string) error
	// StopNode records a clean stop: the node counts as dead at once, and
	// it no longer serves any agent.
	StopNode(ctx context.Context, id string, at time.Time) error
	// Nodes returns every node, by name then start, with its counts.
	Nodes(ctx context.Context) ([]Node, error)
	// SetNodeDraining sets a node's draining flag. ErrNotFound if there is
	// no such node.
	SetNodeDraining(ctx context.Context, id string, draining bool) error
	// PruneNodes removes nodes whose last heartbeat is older than age,
	// and returns how many.
	PruneNodes(ctx context.Context, age time.Duration) (int, error)

	// DisconnectAgent records that the agent's session on node ended:
	// LastSeen is set, and the agent's node cleared if it is still node
	// (the agent may have connected elsewhere meanwhile). Unknown agents
	// are skipped.
	DisconnectAgent(ctx context.Context, id, node string, at time.Time) error

	// ClaimTask makes node `to` the task's driver if its driver is still
	// `from` ("" for none) and it is unfinished; to == "" releases it. It
	// reports whether it did.
	ClaimTask(ctx context.Context, id, from, to string) (bool, error)
	// ClaimRollout does the same for a running rollout's batches.
	ClaimRollout(ctx context.Context, id, from, to string) (bool, error)
	// SetRolloutAgentNode moves an agent of a rollout to state `to`, and
	// its node from `fromNode` to `toNode`, only if its state is one of
	// from and its node is fromNode. It reports whether it did.
	SetRolloutAgentNode(ctx context.Context, rolloutID, agentID string, from []string, fromNode, to, toNode, reason string, at time.Time) (bool, error)

	// PutBlob stores what r yields under b.Key, unless a blob is stored
	// there already; r must yield b.Size bytes whose SHA-256 is b.SHA256,
	// or nothing is stored.
	PutBlob(ctx context.Context, b Blob, r io.Reader) error
	// BlobInfo describes a stored blob. ErrNotFound if there is none.
	BlobInfo(ctx context.Context, key string) (Blob, error)
	// ReadBlob writes a stored blob's content to w. ErrNotFound if there
	// is none.
	ReadBlob(ctx context.Context, key string, w io.Writer) (Blob, error)

	// DeleteBlob removes a stored blob; one that is not there is no
	// error.
	DeleteBlob(ctx context.Context, key string) error
	// DeleteBlobs removes the blobs whose key starts with prefix stored
	// before a time, and returns how many.
	DeleteBlobs(ctx context.Context, prefix string, before time.Time) (int, error)

	// CreateNodeCall records a call (see NodeCall) for its node to take;
	// its ID, nodes, agent, action and CreatedAt must be set.
	CreateNodeCall(ctx context.Context, c NodeCall) error
	// AcceptNodeCalls marks every call addressed to node that no one has
	// taken yet as accepted at `at`, and returns them: of two callers,
	// each call goes to one.
	AcceptNodeCalls(ctx context.Context, node string, at time.Time) ([]NodeCall, error)
	// AnswerNodeCall records the answer of an accepted call: its Result,
	// or ErrorKind and Error, at AnsweredAt. ErrNotFound if the call is
	// gone (its asker gave up).
	AnswerNodeCall(ctx context.Context, answer NodeCall) error
	// NodeCall returns a call, or ErrNotFound.
	NodeCall(ctx context.Context, id string) (NodeCall, error)
	// WithdrawNodeCall deletes a call no node has accepted, and reports
	// whether it did: false means it was accepted (or is gone).
	WithdrawNodeCall(ctx context.Context, id string) (bool, error)
	// DeleteNodeCall deletes a call, accepted or not; a call that is gone
	// is no error.
	DeleteNodeCall(ctx context.Context, id string) error
	// PruneNodeCalls deletes the calls created before a time, and returns
	// how many.
	PruneNodeCalls(ctx context.Context, before time.Time) (int, error)

	// Notify sends payload to every node's Listen, this one's included.
	// Delivery is not guaranteed (a listener may be reconnecting), so a
	// notification only hastens what a node would find out in time.
	Notify(ctx context.Context, payload string) error
	// Listen calls fn with each notification until ctx ends, and with ""
	// whenever notifications may have been missed (after connecting or
	// reconnecting). fn must not block. When the connection it listens on
	// fails, it calls lost (if not nil) with why and the wait before it
	// tries again. It returns when ctx ends.
	Listen(ctx context.Context, fn func(payload string), lost func(err error, wait time.Duration)) error
}

// ErrBadPolicy means a machine policy value is out of range. The wrapping
// error says which one.
var ErrBadPolicy = errors.New("invalid machine policy")

// PolicyStore is the part of Store about the machine policy.
type PolicyStore interface {
	// Policy returns the machine policy. The migration that made the
	// table filled it in, so it always exists.
	Policy(ctx context.Context) (Policy, error)
	// SetPolicy replaces the machine policy after validating it; an
	// invalid one (ErrBadPolicy) changes nothing.
	SetPolicy(ctx context.Context, p Policy) error
}

// Errors that callers branch on. Implementations wrap them with context, so
// compare with errors.Is.
var (
	// ErrNotFound is returned when the requested record does not exist.
	ErrNotFound = kind.ErrNotFound
	// ErrUnavailable wraps every error that means the database could not
	// be reached, or the connection to it broke: what waiting mends, as
	// opposed to a query it refused. An embedded database (SQLite) is
	// never unreachable: its I/O errors are not outages.
	ErrUnavailable = kind.ErrUnavailable
	// ErrTokenInvalid means no token with that value exists, or it is for
	// another environment than the one asked for.
	ErrTokenInvalid = errors.New("enrollment token is not valid")
	// ErrTokenExpired means the token existed but its lifetime has passed.
	ErrTokenExpired = errors.New("enrollment token has expired")
	// ErrTokenUsed means the token was already used by another agent.
	ErrTokenUsed = errors.New("enrollment token has already been used")
	// ErrNameTaken means another agent already has the requested name.
	ErrNameTaken = kind.Errorf(kind.ErrConflict, "agent name is already taken")
	// ErrThumbprintTaken means an agent with that certificate is already
	// registered.
	ErrThumbprintTaken = kind.Errorf(kind.ErrConflict, "certificate is already registered")
	// ErrOtherEnvironment means a registration would replace an agent of
	// another environment than the token's: a token enrols into its own
	// environment, and --force does not reach past it. The error is an
	// *EnvironmentError naming that agent.
	ErrOtherEnvironment = kind.Errorf(kind.ErrConflict, "the agent in the way is in another environment")
	// ErrRevoked means the certificate was revoked (see RevocationReason):
	// it is never registered again, with or without Force.
	ErrRevoked = kind.Errorf(kind.ErrConflict, "certificate was revoked")
	// ErrExists means a record with that key exists already.
	ErrExists = errors.New("already exists")
	// ErrInRollout means an agent of a new running rollout is already in
	// another running rollout.
	ErrInRollout = errors.New("agent is already in a running rollout")
	// ErrSchemaTooNew means the database was migrated by a newer coordinator.
	ErrSchemaTooNew = errors.New("database schema is newer than this coordinator")
	// ErrNotClaimed means an update made only while a task is claimed by
	// a node (TaskUpdate.IfNode) found it finished, or claimed by another
	// node or by none: nothing was changed.
	ErrNotClaimed = kind.Errorf(kind.ErrConflict, "task is finished or claimed by another node")
)

// EnvironmentError is ErrOtherEnvironment with the agent in the way.
type EnvironmentError struct {
	// Agent and Environment are the agent's name and environment.
	Agent, Environment string
	// ByName is true when the agent has the name asked for, false when
	// it holds the registering certificate.
	ByName bool
	// TokenEnvironment is the environment the token enrols into.
	TokenEnvironment string
}

func (e *EnvironmentError) Error() string {
	return fmt.Sprintf("agent %q is in environment %q, not the token's %q", e.Agent, e.Environment, e.TokenEnvironment)
}

func (e *EnvironmentError) Unwrap() error { return ErrOtherEnvironment }

// Why a thumbprint was revoked, as RevocationReason says it.
const (
	// RevokedDeleted: an operator deleted its agent.
	RevokedDeleted = "deleted"
	// RevokedReplaced: a registration with Force took its agent's name or
	// certificate.
	RevokedReplaced = "replaced"
	// RevokedRotated: its agent rotated to a new certificate.
	RevokedRotated = "rotated"
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
	// Features are what the agent said it can do in its last Hello
	// (protocol.Feature*).
	Features []string

	Health       string // one of api.Health*
	HealthDetail string // why, for a person ("TLS 1.0 is deprecated", "disk low")
	HealthRTT    time.Duration
	DiskFree     int64 // bytes free in the agent's home, -1 if unknown
	// Work is the agent's last report of its task folders, nil if it
	// never sent one (older agents).
	Work *api.AgentWork

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

	// Address is where the coordinator dials a listening agent, host:port;
	// "" for a polling agent, which dials the coordinator.
	Address string
	// DialError is why the coordinator's last attempt to dial a listening
	// agent failed, "" since one succeeded (or before any was made).
	DialError string
}

// Listening reports whether the coordinator dials the agent.
func (a Agent) Listening() bool { return a.Address != "" }

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
	// Role is what the key may do (api.Role*); Environments are a
	// deployer's.
	Role         api.Role
	Environments []string
	// Admin is Role == api.RoleAdmin, stored in a column of its own that
	// the refusal to revoke the last admin key counts; the store sets it
	// from Role.
	Admin bool
}

// ListeningParams adds a listening agent: the operator gives its address
// and the thumbprint of its certificate, read on the agent's machine.
type ListeningParams struct {
	NewID       string // ID to give the new agent
	Name        string
	Environment string
	Thumbprint  string
	Address     string // host:port the coordinator dials
	Now         time.Time
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
	Features         []string
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
	// Work is the agent's report of its task folders; nil (an older
	// agent, a failed check) keeps the last one stored.
	Work *api.AgentWork
	At   time.Time
}

// Store is the coordinator's persistence. All methods are safe for
// concurrent use.
type Store interface {
	// Register consumes a token and creates the agent atomically.
	// Errors: ErrTokenInvalid, ErrTokenExpired, ErrTokenUsed (unless the
	// same thumbprint used it and is still registered, which returns that
	// agent again so a lost reply can be retried), ErrNameTaken and
	// ErrThumbprintTaken (unless Force), an *EnvironmentError when the
	// agent holding the name or thumbprint is in another environment than
	// the token's (Force or not), ErrRevoked for a revoked thumbprint.
	Register(ctx context.Context, p RegisterParams) (RegisterResult, error)

	// AddListening creates a listening agent. Errors: ErrNameTaken;
	// ErrThumbprintTaken when another agent holds the thumbprint (as
	// Thumbprint or NextThumbprint) or it was revoked (a deleted agent's
	// certificate is not brought back by adding it again).
	AddListening(ctx context.Context, p ListeningParams) (Agent, error)
	// SetAgentAddress changes where a listening agent is dialed and clears
	// its DialError. ErrNotFound if no such agent; an error wrapping
	// kind.ErrBadRequest if it is a polling agent.
	SetAgentAddress(ctx context.Context, id, address string) error
	// SetDialError records why dialing a listening agent failed, or ""
	// once a dial succeeded. ErrNotFound if no such agent.
	SetDialError(ctx context.Context, id, message string) error

	// AgentByThumbprint finds the agent whose Thumbprint or NextThumbprint
	// matches. ErrNotFound if none.
	AgentByThumbprint(ctx context.Context, thumbprint string) (Agent, error)
	// AgentByID returns the agent or ErrNotFound.
	AgentByID(ctx context.Context, id string) (Agent, error)
	// AgentByName returns the agent or ErrNotFound.
	AgentByName(ctx context.Context, name string) (Agent, error)
	// ListAgents returns every agent ordered by environment, then name.
	ListAgents(ctx context.Context) ([]Agent, error)
	// ListListeningAgents returns the listening agents (those with an
	// address), ordered like ListAgents.
	ListListeningAgents(ctx context.Context) ([]Agent, error)
	// DeleteAgent removes the agent and revokes its thumbprints.
	// ErrNotFound if it does not exist.
	DeleteAgent(ctx context.Context, id string) error
	// IsRevoked reports whether the thumbprint belonged to a deleted or
	// replaced agent.
	IsRevoked(ctx context.Context, thumbprint string) (bool, error)
	// RevocationReason says why the thumbprint was revoked: one of the
	// Revoked* constants (or what an older coordinator recorded).
	// ErrNotFound if it was not revoked.
	RevocationReason(ctx context.Context, thumbprint string) (string, error)

	// RecordConnection stores the facts of a new session and LastSeen.
	RecordConnection(ctx context.Context, c Connection) error
	// RecordHealth stores a batch of health results in one transaction. A
	// check that got an answer (any health but unhealthy) also sets
	// LastSeen.
	RecordHealth(ctx context.Context, results []HealthResult) error
	// SetCalamariVersions records the verified Calamari versions an agent
	// holds, newest first, as a push the agent acknowledged left them, so
	// that the listing is current without waiting for the next health
	// check. ErrNotFound if no such agent.
	SetCalamariVersions(ctx context.Context, agentID string, versions []string) error
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

	// ReserveIdempotencyKey records k, with status 0, unless a record of
	// k's scope and key exists: then it returns that record and false.
	ReserveIdempotencyKey(ctx context.Context, k IdempotencyKey) (IdempotencyKey, bool, error)
	// CompleteIdempotencyKey records the answer of the request that
	// reserved scope and key. body nil keeps none (it held a secret).
	CompleteIdempotencyKey(ctx context.Context, scope, key string, status int, body []byte, at time.Time) error
	// ReleaseIdempotencyKey drops the record of a request that did not
	// complete (or, with ifNode set, only if that node still holds it), so
	// that the same request sent again runs.
	ReleaseIdempotencyKey(ctx context.Context, scope, key, ifNode string) error
	// PurgeIdempotencyKeys drops records created before before and
	// reports how many.
	PurgeIdempotencyKeys(ctx context.Context, before time.Time) (int, error)

	// CreateTasks stores new tasks in one transaction, each claimed by
	// its Node (by none if it is empty).
	CreateTasks(ctx context.Context, tasks []Task) error
	// Task returns one task or ErrNotFound.
	Task(ctx context.Context, id string) (Task, error)
	// ListTasks returns tasks matching f, newest first.
	ListTasks(ctx context.Context, f TaskFilter) ([]Task, error)
	// UpdateTask changes a task's state and result. ErrNotFound if it does
	// not exist. A final state drops the sealed values of the task's
	// sensitive variables (their names stay): nothing needs them again.
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
	// Isolation is api.IsolationFull or api.IsolationNone; "" (tasks
	// created before isolation existed) means full.
	Isolation string
	// Locks are the named locks the task holds on its agent while it runs.
	Locks      []string
	State      string // one of api.Task*
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
	// Variables are the plain variables the task's process gets.
	Variables []TaskVariable
	// Sensitive are the sensitive variables, their values sealed under
	// the master key. Once the task is final only their names are kept
	// (Sealed nil).
	Sensitive []SealedVariable
	// Outputs are the output variables the task's script set.
	Outputs map[string]string
	// Artifacts are the files the task's script attached, collected from
	// the agent.
	Artifacts []TaskArtifact
	// LostLines counts the lines of the task's output that never reached
	// the coordinator, and LostReason says why.
	LostLines  int64
	LostReason string
}

// TaskVariable is a plain variable of a task.
type TaskVariable struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// SealedVariable is a sensitive variable of a task: its value encrypted
// (and authenticated) under the coordinator's master key, by the caller.
type SealedVariable struct {
	Name   string `json:"name"`
	Sealed []byte `json:"sealed,omitempty"`
}

// TaskArtifact is a file a task attached, stored as a blob by SHA256.
type TaskArtifact struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Finished reports whether the task reached a final state.
func (t Task) Finished() bool {
	return t.State == api.TaskSucceeded || t.State == api.TaskFailed || t.State == api.TaskCancelled
}

// IdempotencyKey is the record of a create request sent with an
// Idempotency-Key (see package server/idempotency).
type IdempotencyKey struct {
	Scope string // the caller and the route
	Key   string
	// RequestSHA256 is the request body's hash: the key sent again with
	// another body is refused.
	RequestSHA256 string
	// Ref is the id the request creates under (a task group, a rollout).
	Ref string
	// Status is 0 while the request runs, then its answer's status.
	Status int
	// Body is the answer; nil while running, or when it held a secret.
	Body []byte
	// Node runs the request.
	Node                   string
	CreatedAt, CompletedAt time.Time
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
	State      string // one of api.Task*
	ExitCode   int
	Error      string
	Calamari   string // "" leaves it unchanged
	StartedAt  time.Time
	FinishedAt time.Time
	// Outputs and Artifacts, when not nil, replace the stored ones.
	Outputs   map[string]string
	Artifacts []TaskArtifact
	// LostLines and LostReason, when not 0 and "", replace the stored
	// ones.
	LostLines  int64
	LostReason string
	// Lines, when not empty, are appended to the task's log (as
	// AppendTaskLogs does) in the same transaction as the change: the
	// line that says a task started or ended is stored with its state,
	// for one write instead of two on the task's way.
	Lines []LogLine
	// IfNode, when set, makes the update (Lines included) conditional:
	// it is made only while the task is unfinished and claimed by this
	// node, and ErrNotClaimed is returned otherwise. A runner records a
	// task's end so, in one write, rather than claim it once more first
	// to learn whether another node took it over.
	IfNode string
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
	State          string // one of api.Rollout*
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
	State       string // one of api.Upgrade*
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
