package store

import (
	"context"
	"errors"
	"time"
)

// ErrLastAdminKey means revoking the key would leave no valid admin API
// key: nobody could then manage users or keys through the API, and the
// admin commands run with --data would stop working.
var ErrLastAdminKey = errors.New("it is the last valid admin API key")

// User is a person who signs in to the web console with a password.
type User struct {
	ID   string
	Name string // unique whatever its case
	// PasswordHash is a PHC string that carries the algorithm, its
	// parameters and the salt along with the hash.
	PasswordHash string
	CreatedAt    time.Time
}

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
