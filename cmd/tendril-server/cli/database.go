package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/store"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

// databaseURL is the PostgreSQL database a command uses: --database, else
// $TENDRIL_DATABASE, else the one the data folder was made for ("" for a
// folder with its own SQLite database).
func databaseURL(dir, flag string, e Env) (string, error) {
	if u := first(flag, e.Getenv(envDatabase)); u != "" {
		return u, nil
	}
	return datadir.LoadDatabase(dir)
}

// openDatabase opens the PostgreSQL store at url for run, waiting with
// backoff while the database cannot be reached (until ctx ends: Ctrl-C or
// TERM), so that a coordinator started before its database, or during an
// outage, waits instead of exiting into a supervisor's restart loop. Each
// failed attempt is logged once, with the wait before the next. "" means
// the data folder's SQLite database, which the coordinator opens itself:
// the result is then nil.
func openDatabase(ctx context.Context, dir, url string, log *zap.Logger) (store.Store, error) {
	if url == "" {
		return nil, nil
	}
	// A folder that was never initialized is a mistake waiting cannot
	// mend: say so before waiting for a database.
	if _, err := datadir.ReadThumbprint(dir); err != nil {
		return nil, err
	}
	log = log.Named("store")
	st, err := sqlstore.OpenPostgresRetry(ctx, url, func(err error, wait time.Duration) {
		log.Warn("database unreachable, retrying", zap.Error(err), zap.Duration("retry_in", wait))
	})
	if errors.Is(err, store.ErrSchemaTooNew) {
		return nil, fmt.Errorf("%w; nothing was written: run the newer coordinator, or restore the database from a backup taken before the newer one migrated it", err)
	}
	if err != nil {
		return nil, err
	}
	log.Info("using PostgreSQL", zap.Stringer("database", st))
	return st, nil
}
