package server

import (
	"context"
	"path/filepath"

	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/store"
)

// InitOptions tune InitWith.
type InitOptions struct {
	// Database is the URL of a PostgreSQL database to keep the
	// coordinator's state in (agents, tokens, API keys, tasks...) instead
	// of tendril.db in the data folder: init migrates it and stores the
	// admin API key there. The TLS identity, the signing key and the
	// master key stay in the data folder either way. "" means SQLite.
	Database string
}

// openInitStore opens the database init writes to. Init is run by a
// person, so an unreachable PostgreSQL is reported at once rather than
// waited for, as run does.
func openInitStore(ctx context.Context, dir string, o InitOptions) (store.Store, error) {
	if o.Database == "" {
		st, err := store.OpenSQLite(ctx, filepath.Join(dir, datadir.DBFile))
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	st, err := store.OpenPostgres(ctx, o.Database)
	if err != nil {
		return nil, err
	}
	return st, nil
}
