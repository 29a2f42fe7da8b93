package store

import (
	"context"
	"errors"
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

// ErrBadPolicy means a machine policy value is out of range. The wrapping
// error says which one.
var ErrBadPolicy = errors.New("invalid machine policy")

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
	case p.SetBy != PolicySetByDefault && p.SetBy != PolicySetByFlag && p.SetBy != PolicySetByOperator:
		msg = fmt.Sprintf("set by must be %q, %q or %q, got %q", PolicySetByDefault, PolicySetByFlag, PolicySetByOperator, p.SetBy)
	default:
		return nil
	}
	return fmt.Errorf("%w: %s", ErrBadPolicy, msg)
}

// PolicyStore is the part of Store about the machine policy.
type PolicyStore interface {
	// Policy returns the machine policy. The migration that made the
	// table filled it in, so it always exists.
	Policy(ctx context.Context) (Policy, error)
	// SetPolicy replaces the machine policy after validating it; an
	// invalid one (ErrBadPolicy) changes nothing.
	SetPolicy(ctx context.Context, p Policy) error
}

const policyColumns = `health_interval_ns, calamari_keep, upgrade_batch, upgrade_max_failures, set_by, updated_at`
