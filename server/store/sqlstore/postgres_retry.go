package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tendrildeploy/tendril/server/store"
)

// Backoff between attempts of OpenPostgresRetry: quick at first, for a
// database that is a moment away (both started by one compose file), then
// no more than one attempt every 30 s, so that a coordinator waiting on a
// long outage neither floods the logs nor the database's.
const (
	openRetryFirst = 500 * time.Millisecond
	openRetryMax   = 30 * time.Second
)

// newBackoff is the backoff of attempts to reach the database, bound by
// a context rather than by time.
func newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = openRetryFirst
	b.MaxInterval = openRetryMax
	b.MaxElapsedTime = 0
	return b
}

// OpenPostgresRetry is OpenPostgres that waits for the database: while it
// cannot be reached (refused or timed-out connections, a server starting
// up or shutting down, too many clients) it tries again with exponential
// backoff and jitter until ctx ends. notify, if not nil, is called once per
// failed attempt with its error and the wait before the next one.
//
// Errors that waiting cannot mend are returned at once: a malformed URL,
// refused credentials, a missing database, a schema too new, a migration
// that fails.
func OpenPostgresRetry(ctx context.Context, url string, notify func(err error, wait time.Duration)) (*Postgres, error) {
	b := newBackoff()
	var last error
	s, err := backoff.RetryNotifyWithData(func() (*Postgres, error) {
		s, err := OpenPostgres(ctx, url)
		if err == nil {
			return s, nil
		}
		last = err
		if !transientOpenError(err) || ctx.Err() != nil {
			return nil, backoff.Permanent(err)
		}
		return nil, err
	}, backoff.WithContext(b, ctx), notify)
	if err != nil && ctx.Err() != nil && last != nil && !errors.Is(err, last) {
		// Cancelled while waiting: say why the waiting was needed.
		return nil, fmt.Errorf("%w (while waiting for the database, the last attempt failed: %w)", err, last)
	}
	return s, err
}

// transientOpenError reports whether an attempt to open the store might
// succeed later without anyone changing anything.
func transientOpenError(err error) bool {
	if errors.Is(err, store.ErrSchemaTooNew) {
		return false
	}
	if _, ok := errors.AsType[*pgconn.ParseConfigError](err); ok {
		return false
	}
	// Lost a race with another migrating node.
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && (pgErr.Code == "40001" || pgErr.Code == "40P01") {
		return true
	}
	return unreachable(err)
}
