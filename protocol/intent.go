package protocol

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Signed requests. The TLS key proves a session's peer is the coordinator
// the agent pinned, but a copy of it is enough to impersonate one: so the
// requests that make an agent act (run, push, upgrade, trust, remove)
// also carry an Intent, signed by the coordinator's signing key, which
// can live away from the TLS key (see README, "Security model").
//
// An Intent covers the request's type and exact body bytes, the agent it
// is for, an expiry and a nonce: it cannot be moved to another request,
// another agent, or replayed once expired. Agents without
// FeatureSignedRequests ignore it (Frame's unknown field).

// FeatureSignedRequests, in Hello.Features, says that the agent verifies
// Intents, and once it has accepted one (or registered with a coordinator
// that signs) refuses the SignedTypes unsigned.
const FeatureSignedRequests = "signed_requests"

// FeatureEndorsedCertificates, in Hello.Features, says that the agent
// accepts a coordinator certificate it has not pinned when the pinned
// signing key endorsed its key (Endorsement): it reconnects after any
// number of coordinator certificate rotations it missed.
const FeatureEndorsedCertificates = "endorsed_certificates"

// SignedTypes are the requests an agent that verifies refuses unsigned.
// Reads (health, checks, follows, artifact fetches) are not among them:
// they change nothing on the agent.
var SignedTypes = []string{
	TypeTaskStart, TypeTaskCancel, TypeFilePush, TypeCalamariPush,
	TypeAgentUpgrade, TypeServerCertificates, TypeWorkRetention, TypeDiagnostics,
}

// IsSignedType reports whether typ is one of SignedTypes.
func IsSignedType(typ string) bool { return slices.Contains(SignedTypes, typ) }

// IntentLifetime is how long an Intent is valid after it is made, and
// IntentSkew how far the agent's clock may be from the coordinator's.
const (
	IntentLifetime = 5 * time.Minute
	IntentSkew     = 5 * time.Minute
)

// Intent is the coordinator's signature over one request.
type Intent struct {
	// Agent is the ID of the agent the request is for.
	Agent string `json:"agent"`
	// Expires is when the request stops being valid.
	Expires time.Time `json:"expires"`
	// Nonce makes every Intent unique, so that an agent refuses a replay
	// within the lifetime.
	Nonce string `json:"nonce"`
	// Signature is Ed25519 over IntentSigningBytes.
	Signature []byte `json:"signature"`
}

// IntentSigningBytes are the bytes an Intent's signature covers.
func IntentSigningBytes(typ string, body []byte, agent string, expires time.Time, nonce string) []byte {
	sum := sha256.Sum256(body)
	return []byte("tendril request v1\n" + typ + "\n" + agent + "\n" +
		strconv.FormatInt(expires.UnixNano(), 10) + "\n" + nonce + "\n" + hex.EncodeToString(sum[:]) + "\n")
}

// Signer signs requests for one agent.
type Signer interface {
	// SignRequest returns the Intent for a request of typ with body.
	SignRequest(typ string, body []byte) (*Intent, error)
}

// ErrIntent wraps every reason an Intent is refused.
var ErrIntent = errors.New("request signature refused")

// CheckIntent checks an Intent for a request an agent received: signed by
// the key verify checks against, for this agent, not expired and not
// further ahead than the lifetime allows (with skew).
func CheckIntent(in *Intent, typ string, body []byte, agentID string, now time.Time, verify func(msg, sig []byte) error) error {
	switch {
	case in == nil:
		return fmt.Errorf("%w: %s is not signed", ErrIntent, typ)
	case in.Agent != agentID:
		return fmt.Errorf("%w: %s is signed for agent %q, this is %q", ErrIntent, typ, in.Agent, agentID)
	case now.After(in.Expires.Add(IntentSkew)):
		return fmt.Errorf("%w: %s expired at %s (check both clocks)", ErrIntent, typ, in.Expires.UTC().Format(time.RFC3339))
	case in.Expires.Sub(now) > IntentLifetime+IntentSkew:
		return fmt.Errorf("%w: %s is valid until %s, longer than a request may be (check both clocks)", ErrIntent, typ, in.Expires.UTC().Format(time.RFC3339))
	case in.Nonce == "" || len(in.Nonce) > 64:
		return fmt.Errorf("%w: %s has no valid nonce", ErrIntent, typ)
	}
	if err := verify(IntentSigningBytes(typ, body, in.Agent, in.Expires, in.Nonce), in.Signature); err != nil {
		return fmt.Errorf("%w: %s: not signed by the coordinator's signing key this agent trusts: %v", ErrIntent, typ, err)
	}
	return nil
}
