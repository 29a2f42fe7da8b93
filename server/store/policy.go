package store

import (
	"fmt"
	"time"
)

// Who wrote the machine policy last (Policy.SetBy).
const (
	// PolicySetByDefault means nobody changed the values the migration
	// filled in.
	PolicySetByDefault = "default"
	// PolicySetByFlag means a deprecated command-line flag was copied
	// into the database at start.
	PolicySetByFlag = "flag"
	// PolicySetByOperator means a person set it through the API or CLI;
	// flags no longer override it.
	PolicySetByOperator = "operator"
)

// Policy is the fleet-wide configuration kept in the database, shared by
// every coordinator node.
type Policy struct {
	// HealthInterval is how often every connected agent is checked.
	HealthInterval time.Duration
	// CalamariKeep is how many Calamari versions each agent keeps.
	CalamariKeep int
	// UpgradeBatch is the batch size of a rollout started without one.
	UpgradeBatch int
	// UpgradeMaxFailures is the failure budget of a rollout started
	// without one.
	UpgradeMaxFailures int
	// WorkKeep is how many finished task folders each agent keeps, newest
	// first (0 or more).
	WorkKeep int
	// WorkMinFree is the free-space floor of each agent's home file
	// system in bytes, 0 for none.
	WorkMinFree int64
	// SetBy is one of the PolicySetBy* constants.
	SetBy string
	// UpdatedAt is when it was last set, zero if never.
	UpdatedAt time.Time
}

// Validate reports the first out-of-range value, wrapping ErrBadPolicy.
func (p Policy) Validate() error {
	var msg string
	switch {
	case p.HealthInterval < time.Second:
		msg = fmt.Sprintf("health interval must be at least 1s, got %s", p.HealthInterval)
	case p.CalamariKeep < 1:
		msg = fmt.Sprintf("calamari keep must be 1 or more, got %d", p.CalamariKeep)
	case p.UpgradeBatch < 1:
		msg = fmt.Sprintf("upgrade batch must be 1 or more, got %d", p.UpgradeBatch)
	case p.UpgradeMaxFailures < 0:
		msg = fmt.Sprintf("upgrade max failures must not be negative, got %d", p.UpgradeMaxFailures)
	case p.WorkKeep < 0:
		msg = fmt.Sprintf("work keep must not be negative, got %d", p.WorkKeep)
	case p.WorkMinFree < 0:
		msg = fmt.Sprintf("work min free must not be negative, got %d bytes", p.WorkMinFree)
	case p.SetBy != PolicySetByDefault && p.SetBy != PolicySetByFlag && p.SetBy != PolicySetByOperator:
		msg = fmt.Sprintf("set by must be %q, %q or %q, got %q", PolicySetByDefault, PolicySetByFlag, PolicySetByOperator, p.SetBy)
	default:
		return nil
	}
	return fmt.Errorf("%w: %s", ErrBadPolicy, msg)
}
