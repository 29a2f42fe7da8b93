package api

import "time"

// UserRequest is the body of POST /api/users.
type UserRequest struct {
	Name     string `json:"name" schema:"name"`
	Password string `json:"password"`
	// Role is what the user may do in the console; "" means operator.
	Role Role `json:"role,omitempty"`
	// Environments are a deployer's, and only a deployer's (at least one).
	Environments []string `json:"environments,omitempty" schema:"name"`
}

// UserView is a console user as the API shows it: never the hash.
type UserView struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Environments are a deployer's: the only ones it may act in.
	Environments []string  `json:"environments"`
	CreatedAt    time.Time `json:"created_at"`
}

// APIKeyRequest is the body of POST /api/api-keys.
type APIKeyRequest struct {
	Name string `json:"name" schema:"name"`
	// Admin is the role admin, as before roles existed: scripts send it.
	// Give it or Role, not both unless they agree.
	Admin bool `json:"admin,omitempty"`
	// Role is what the key may do; "" means operator (or admin with
	// Admin).
	Role Role `json:"role,omitempty"`
	// Environments are a deployer's, and only a deployer's (at least one).
	Environments []string `json:"environments,omitempty" schema:"name"`
}

// APIKeyView is an API key as the API shows it: never the key or its
// hash.
type APIKeyView struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Admin is Role == RoleAdmin, kept for clients older than roles.
	Admin bool `json:"admin"`
	Role  Role `json:"role"`
	// Environments are a deployer's: the only ones it may act in.
	Environments []string   `json:"environments"`
	CreatedAt    time.Time  `json:"created_at"`
	Revoked      bool       `json:"revoked"`
	RevokedAt    *time.Time `json:"revoked_at"`
}

// NewAPIKey is a created API key: the only time the key itself is shown.
type NewAPIKey struct {
	APIKeyView
	Key string `json:"key"`
}

// TokenView is an enrollment token as the API lists it: never the secret.
type TokenView struct {
	ID          string     `json:"id"`
	Environment string     `json:"environment"`
	State       string     `json:"state"` // unused, used or expired
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	UsedAt      *time.Time `json:"used_at"`
	// UsedBy names the agent that enrolled with the token: its name while
	// it is registered, else the thumbprint it used.
	UsedBy string `json:"used_by,omitempty"`
}

// TokenResult is a newly created enrollment token.
type TokenResult struct {
	Token       string    `json:"token"`
	Join        string    `json:"join"`
	Environment string    `json:"environment"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// MaxTokenTTL bounds how long an enrollment token can live.
const MaxTokenTTL = 30 * 24 * time.Hour

// TokenRequest is the body of POST /api/tokens.
type TokenRequest struct {
	Environment string `json:"environment" schema:"name"`
	// TTL is a Go duration ("24h", "30m"); "" means 24 hours.
	TTL string `json:"ttl,omitempty" schema:"duration"`
	// Servers overrides the coordinator addresses put in the join string.
	Servers []string `json:"servers,omitempty"`
}

// DefaultTokenTTL is an enrollment token's lifetime when none is given.
const DefaultTokenTTL = 24 * time.Hour

// Password length bounds, in bytes. The upper bound only keeps a request
// from making the coordinator hash megabytes.
const (
	MinPasswordLen = 8
	MaxPasswordLen = 1024
)

// Enrollment token states.
const (
	TokenUnused  = "unused"
	TokenUsed    = "used"
	TokenExpired = "expired"
)
