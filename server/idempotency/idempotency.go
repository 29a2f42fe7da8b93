// Package idempotency makes create requests safe to send again. A client
// names a create with an Idempotency-Key header; the Keeper records the
// key before the request runs, and the same request sent again (a retry
// after a broken connection, to this node or another) gets the first
// one's answer instead of creating twice.
//
// A request is recorded with a ref, the id it creates under (a task group,
// a rollout), chosen before it runs. When the node running it dies after
// its commit but before its answer was recorded, the retry finds what it
// created by that ref (a route's Recover) rather than waiting for the
// record to go stale and creating again. Routes without a Recover wait
// for that: a retry arriving while the first request's record is fresh is
// told to come back, one arriving after it went stale runs again.
package idempotency

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/tendrildeploy/tendril/server/store"
)

// Header is the request header naming a create.
const Header = "Idempotency-Key"

// ReplayedHeader is set, to "true", on an answer given from the record of
// an earlier request with the same key.
const ReplayedHeader = "Idempotent-Replayed"

// MaxKeyLength bounds a key; UUIDs, the usual choice, have 36 characters.
const MaxKeyLength = 255

// DefaultStale is how long a running request's record is waited for.
const DefaultStale = 2 * time.Minute

// Retention is how long records are kept: a retry later than that runs
// the request again.
const Retention = 24 * time.Hour

// Recover finds what a request created under ref and says what its answer
// was: found is false when it created nothing.
type Recover func(ctx context.Context, ref string) (status int, body []byte, found bool, err error)

// Config configures a Keeper. Store and Node are required.
type Config struct {
	Store store.Store
	// Node is this node's id, recorded with the requests it runs.
	Node func() string
	// NodeGone reports whether a node counts as dead: the requests it
	// was running will not complete. Nil: only Stale decides.
	NodeGone func(ctx context.Context, id string) bool
	// Stale is how long a running request's record is waited for before
	// the request runs again; 0 means DefaultStale.
	Stale time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Keeper records create requests by key.
type Keeper struct {
	cfg Config
}

// New returns a Keeper.
func New(cfg Config) (*Keeper, error) {
	if cfg.Store == nil || cfg.Node == nil {
		return nil, errors.New("idempotency: Store and Node are required")
	}
	if cfg.Stale <= 0 {
		cfg.Stale = DefaultStale
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Keeper{cfg: cfg}, nil
}

// Decision is what to do with a create request.
type Decision int

const (
	// Run runs the request, creating under the outcome's Ref.
	Run Decision = iota
	// Replay answers with the outcome's Status and Body, from an earlier
	// request with the same key.
	Replay
	// InProgress answers that the earlier request is still running.
	InProgress
	// Mismatch refuses a key sent before with another request body.
	Mismatch
	// SecretAnswer answers that the earlier request completed but its
	// answer held a secret that was not kept.
	SecretAnswer
)

// Outcome is Begin's answer.
type Outcome struct {
	Decision Decision
	Ref      string
	Status   int
	Body     []byte
}

// CheckKey refuses a key a person could not have meant.
func CheckKey(key string) error {
	if key == "" || len(key) > MaxKeyLength {
		return fmt.Errorf("%s must be 1 to %d characters (a UUID is the usual choice)", Header, MaxKeyLength)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%s must be printable ASCII without spaces (a UUID is the usual choice)", Header)
		}
	}
	return nil
}

// Begin records the request scope and key name, with the hash of its
// body, or says how the request recorded under them already went.
// recover may be nil.
func (k *Keeper) Begin(ctx context.Context, scope, key, bodySHA256 string, recover Recover) (Outcome, error) {
	ref := uuid.NewString()
	for attempt := 0; ; attempt++ {
		rec := store.IdempotencyKey{Scope: scope, Key: key, RequestSHA256: bodySHA256, Ref: ref,
			Node: k.cfg.Node(), CreatedAt: k.cfg.Now().UTC()}
		got, reserved, err := k.cfg.Store.ReserveIdempotencyKey(ctx, rec)
		if errors.Is(err, store.ErrNotFound) && attempt < 3 {
			continue // released between its insert and its read
		}
		if err != nil {
			return Outcome{}, err
		}
		if reserved {
			return Outcome{Decision: Run, Ref: ref}, nil
		}
		if got.RequestSHA256 != bodySHA256 {
			return Outcome{Decision: Mismatch}, nil
		}
		if got.Status != 0 {
			if got.Body == nil {
				return Outcome{Decision: SecretAnswer, Status: got.Status}, nil
			}
			return Outcome{Decision: Replay, Status: got.Status, Body: got.Body}, nil
		}
		if recover != nil {
			status, body, found, err := recover(ctx, got.Ref)
			if err != nil {
				return Outcome{}, fmt.Errorf("look for what the first request created: %w", err)
			}
			if found {
				if err := k.Complete(ctx, scope, key, status, body); err != nil {
					return Outcome{}, err
				}
				return Outcome{Decision: Replay, Status: status, Body: body}, nil
			}
		}
		if !k.stale(ctx, got) || attempt >= 3 {
			return Outcome{Decision: InProgress}, nil
		}
		// The first request will not complete: run it again, under the
		// same ref, so that a late commit of the first is still found.
		if err := k.cfg.Store.ReleaseIdempotencyKey(ctx, scope, key, got.Node); err != nil {
			return Outcome{}, err
		}
		ref = got.Ref
	}
}

func (k *Keeper) stale(ctx context.Context, rec store.IdempotencyKey) bool {
	if k.cfg.Now().Sub(rec.CreatedAt) > k.cfg.Stale {
		return true
	}
	return rec.Node != k.cfg.Node() && k.cfg.NodeGone != nil && k.cfg.NodeGone(ctx, rec.Node)
}

// Complete records the answer of a request Begin let run; body nil keeps
// none (the answer held a secret). It runs even when ctx is cancelled:
// the client that went away is the one that will ask again.
func (k *Keeper) Complete(ctx context.Context, scope, key string, status int, body []byte) error {
	return k.cfg.Store.CompleteIdempotencyKey(context.WithoutCancel(ctx), scope, key, status, body, k.cfg.Now().UTC())
}

// Release forgets a request Begin let run that did not create anything
// (it failed), so that the same request sent again runs.
func (k *Keeper) Release(ctx context.Context, scope, key string) error {
	return k.cfg.Store.ReleaseIdempotencyKey(context.WithoutCancel(ctx), scope, key, k.cfg.Node())
}

// Purge drops the records older than Retention.
func (k *Keeper) Purge(ctx context.Context) (int, error) {
	return k.cfg.Store.PurgeIdempotencyKeys(ctx, k.cfg.Now().Add(-Retention))
}

type refKey struct{}

// WithRef returns ctx carrying the ref a request creates under.
func WithRef(ctx context.Context, ref string) context.Context {
	return context.WithValue(ctx, refKey{}, ref)
}

// Ref returns the ref a request creates under, or "" when it was sent
// without a key: the creator picks its own id then.
func Ref(ctx context.Context) string {
	ref, _ := ctx.Value(refKey{}).(string)
	return ref
}
