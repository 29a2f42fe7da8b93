package store

import (
	"time"

	"github.com/tendrildeploy/tendril/api"
)

// User is a person who signs in to the web console with a password.
type User struct {
	ID   string
	Name string // unique whatever its case
	// PasswordHash is a PHC string that carries the algorithm, its
	// parameters and the salt along with the hash.
	PasswordHash string
	CreatedAt    time.Time
	// Role is what the user may do (api.Role*); Environments are a
	// deployer's.
	Role         api.Role
	Environments []string
}
