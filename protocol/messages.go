package protocol

import (
	"errors"
	"fmt"
	"time"
)

// Message types. One RPC is one stream: the opener writes a request frame
// and reads exactly one reply frame (the reply type, or TypeError).
const (
	// Agent -> coordinator, first stream of every session.
	TypeHello   = "hello"
	TypeWelcome = "welcome"
	// Agent -> coordinator, the only call allowed for an unknown
	// certificate.
	TypeRegister   = "register"
	TypeRegistered = "registered"
	// Coordinator -> agent.
	TypeHealthRequest = "health_request"
	TypeHealth        = "health"
	// Agent -> coordinator: a new agent certificate over the live session.
	TypeRotateCertificate = "rotate_certificate"
	// Coordinator -> agent: the coordinator thumbprints to trust from now.
	TypeServerCertificates = "server_certificates"
	// Coordinator -> agent: the session is about to close, and why.
	TypeGoAway = "go_away"
	// Generic success reply with no body.
	TypeAck = "ack"
	// Failure reply.
	TypeError = "error"
)

// Hello is the agent's first message on a new session.
type Hello struct {
	Version     string   `json:"version"`
	ProtocolMin int      `json:"protocol_min"`
	ProtocolMax int      `json:"protocol_max"`
	OS          string   `json:"os"`
	Arch        string   `json:"arch"`
	Hostname    string   `json:"hostname,omitempty"`
	Calamari    []string `json:"calamari,omitempty"`
	// Upgrade reports how the last upgrade ended, until acknowledged.
	Upgrade *UpgradeReport `json:"upgrade,omitempty"`
	// Busy is true while the agent runs tasks; an upgrade waits for idle.
	Busy bool `json:"busy,omitempty"`
	// SigningKey is the coordinator signing key the agent pinned (hex),
	// which Calamari bundles and agent packages must be signed with for
	// it to use them. A coordinator whose key differs knows, before any
	// push, that the agent will refuse them. Omitted by older agents and
	// by a listening agent that has not learned one yet.
	SigningKey string `json:"signing_key,omitempty"`
	// Features lists what the agent can do beyond its protocol version
	// (FeatureIsolation). Omitted by older agents.
	Features []string `json:"features,omitempty"`
}

// Welcome answers Hello.
type Welcome struct {
	Protocol      int    `json:"protocol"`
	UpgradeOnly   bool   `json:"upgrade_only,omitempty"`
	ServerVersion string `json:"server_version"`
	AgentID       string `json:"agent_id"`
	Name          string `json:"name"`
	Environment   string `json:"environment"`
	// ServerThumbprints is every coordinator thumbprint the agent should
	// trust from now on (more than one during a rotation).
	ServerThumbprints []string `json:"server_thumbprints"`
	// UpgradeAcknowledged is true when the Hello's upgrade report was
	// recorded; the agent stops sending it.
	UpgradeAcknowledged bool `json:"upgrade_acknowledged,omitempty"`
	// ReconnectSpreadMillis is the window over which the agent picks a
	// random moment to reconnect when this session breaks without a
	// GoAway. A coordinator that crashed loses its whole fleet at once;
	// agents that come back spread over a window sized to the fleet arrive
	// at a rate it can serve instead of as one storm that it must mostly
	// shed. 0 (older coordinators) keeps the agent's own backoff.
	ReconnectSpreadMillis int64 `json:"reconnect_spread_ms,omitempty"`
	// Servers is the address of every live coordinator node when several
	// share a database: the agent tries them after the addresses it
	// registered with, so that it finds the other nodes when its own goes
	// away, nodes added since its registration included. Omitted by a
	// coordinator that is its own only node.
	Servers []string `json:"servers,omitempty"`
	// SigningKey is the coordinator's hex Ed25519 public key that
	// Calamari bundles and agent packages are signed with. A polling agent
	// got it with its registration; a listening agent, enrolled by the
	// operator on the coordinator's side, learns it here, over a session
	// whose coordinator certificate it pinned, and keeps the first it
	// learned. Omitted by coordinators older than listening agents.
	SigningKey string `json:"signing_key,omitempty"`
	// WorkRetention is the machine policy's rule for the agent's task
	// folders (see FeatureWorkRetention). Omitted by older coordinators:
	// the agent keeps its own default.
	WorkRetention *WorkRetention `json:"work_retention,omitempty"`
}

// Register enrolls the certificate the connection was made with.
type Register struct {
	Token       string `json:"token"`
	Name        string `json:"name"`
	Environment string `json:"environment,omitempty"`
	Force       bool   `json:"force,omitempty"`
	Version     string `json:"version,omitempty"`
	OS          string `json:"os,omitempty"`
	Arch        string `json:"arch,omitempty"`
}

// Registered answers a successful Register.
type Registered struct {
	AgentID           string   `json:"agent_id"`
	Name              string   `json:"name"`
	Environment       string   `json:"environment"`
	SigningKey        string   `json:"signing_key"` // hex Ed25519 public key
	ServerThumbprints []string `json:"server_thumbprints"`
	// SignsRequests says the coordinator signs its requests (Intent): an
	// agent that knows them requires signatures from its first session.
	SignsRequests bool `json:"signs_requests,omitempty"`
}

// HealthRequest asks an agent for its health.
type HealthRequest struct{}

// Health is an agent's health report.
type Health struct {
	Version       string `json:"version"`
	UptimeSeconds int64  `json:"uptime_seconds"`
	OS            string `json:"os"`
	Arch          string `json:"arch"`
	Hostname      string `json:"hostname,omitempty"`
	DiskFree      int64  `json:"disk_free"` // bytes free in the agent's home, -1 if unknown
	// Calamari lists the versions installed and verified (marker,
	// signature and every file's hash), newest first.
	Calamari []string `json:"calamari"`
	// RunningTasks counts the tasks running now: an upgrade waits for 0.
	RunningTasks int `json:"running_tasks"`
	// CalamariProblems describes versions present but not intact, one
	// line each ("1.2.3: file linux-amd64/calamari: SHA-256 differs"):
	// what antivirus quarantine or a damaged disk looks like.
	CalamariProblems []string `json:"calamari_problems,omitempty"`
	// Work is what the agent holds in its Work folder and what its
	// retention did last. Omitted by older agents.
	Work *WorkReport `json:"work,omitempty"`
}

// RotateCertificate presents the agent's next certificate (DER) over a
// session authenticated with its current one. The certificate must be
// self-signed, which proves the agent holds the new key.
type RotateCertificate struct {
	Certificate []byte `json:"certificate"`
}

// ServerCertificates tells an agent which coordinator thumbprints to trust.
type ServerCertificates struct {
	Thumbprints []string `json:"thumbprints"`
}

// GoAway tells the agent the coordinator is closing the session.
type GoAway struct {
	Reason string `json:"reason"`
	// Reconnect is false when the agent must not come back (it was
	// deleted).
	Reconnect bool `json:"reconnect"`
	// RetryAfterMillis spreads reconnects after a coordinator shutdown so
	// they do not arrive as one storm.
	RetryAfterMillis int64 `json:"retry_after_ms,omitempty"`
}

// Error codes carried in ErrorBody.
const (
	CodeBadRequest      = "bad_request"
	CodeUnknownType     = "unknown_type"
	CodeUnauthorized    = "unauthorized"
	CodeUpgradeRequired = "upgrade_required"
	CodeIncompatible    = "incompatible"
	CodeConflict        = "conflict"
	CodeInternal        = "internal"
	CodeUnavailable     = "unavailable"
	// CodeRevoked answers the first request of a session whose agent
	// certificate the coordinator revoked (the agent was deleted or
	// replaced, or rotated away from that certificate): the message says
	// why and what to do, and the certificate is never accepted again.
	// An agent registering with such a certificate makes a new one.
	// Older agents just print the message: they do not know the code.
	CodeRevoked = "revoked"
)

// ErrorBody is the body of a TypeError frame.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// RetryAfterMillis, on a refusal that passes (CodeUnavailable: the
	// coordinator node cannot reach its database), is when the refusing
	// side expects to serve again: an agent comes back after about that
	// long, with jitter, instead of after its growing backoff, so that it
	// reconnects within seconds of the cause's end. Agents that predate
	// it ignore it (JSON decoding skips unknown fields) and back off as
	// before.
	RetryAfterMillis int64 `json:"retry_after_ms,omitempty"`
}

// RemoteError is an error reported by the peer in a TypeError frame.
type RemoteError struct {
	Code    string
	Message string
	// RetryAfter is the ErrorBody's RetryAfterMillis; 0 when not said.
	RetryAfter time.Duration
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("%s (%s)", e.Message, e.Code)
}

// IsCode reports whether err is a RemoteError with the given code.
func IsCode(err error, code string) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Code == code
}
