package datadir

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tendrildeploy/tendril/atomicfile"

	"github.com/google/uuid"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/server/secret"
	"github.com/tendrildeploy/tendril/server/store"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

// ErrAlreadyInitialized means init was run on a folder that has a
// coordinator already.
var ErrAlreadyInitialized = errors.New("data folder is already initialized")

// InitResult is what init prints for the operator.
type InitResult struct {
	DataDir    string
	Thumbprint string
	AdminKey   string
}

// Init creates a coordinator in dir: its TLS identity, signing key, master
// key, database and an admin API key. It refuses a folder that already
// holds a coordinator, so keys are never overwritten.
func Init(ctx context.Context, dir string) (InitResult, error) {
	return InitWith(ctx, dir, InitOptions{})
}

// InitWith is Init with options.
func InitWith(ctx context.Context, dir string, o InitOptions) (InitResult, error) {
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); err == nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, ErrAlreadyInitialized)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	id, err := certs.NewIdentity("tendril-server")
	if err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	sk, err := certs.NewSigningKey()
	if err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	if err := sk.Save(filepath.Join(dir, SigningFile)); err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	master := make([]byte, 32)
	if _, err := rand.Read(master); err != nil {
		return InitResult{}, fmt.Errorf("init %s: master key: %w", dir, err)
	}
	if err := atomicfile.Write(filepath.Join(dir, MasterFile), []byte(hex.EncodeToString(master)+"\n"), 0o600); err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	st, err := openInitStore(ctx, dir, o)
	if err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	defer st.Close()
	if o.Database != "" {
		if err := SaveDatabase(dir, o.Database); err != nil {
			return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
		}
	}
	key := secret.New("tdk_")
	if err := st.CreateAPIKey(ctx, store.APIKey{ID: uuid.NewString(), Name: "admin", Hash: secret.Hash(key), CreatedAt: time.Now().UTC(), Role: api.RoleAdmin, Admin: true}); err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	if err := atomicfile.Write(filepath.Join(dir, api.AdminKeyFile), []byte(key+"\n"), 0o600); err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	// The identity is written last: its key file is what marks the folder
	// as initialized, so an interrupted init can simply be run again.
	if err := id.Save(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)); err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	return InitResult{DataDir: dir, Thumbprint: id.Thumbprint, AdminKey: key}, nil
}

// InitOptions tune InitWith.
type InitOptions struct {
	// Database is the URL of a PostgreSQL database to keep the
	// coordinator's state in (agents, tokens, API keys, tasks...) instead
	// of tendril.db in the data folder: init migrates it, stores the
	// admin API key there, and records the URL in the folder, sealed
	// (DatabaseFile), for run to use. The TLS identity, the signing key
	// and the master key stay in the data folder either way. "" means
	// SQLite.
	Database string
}

// openInitStore opens the database init writes to. Init is run by a
// person, so an unreachable PostgreSQL is reported at once rather than
// waited for, as run does.
func openInitStore(ctx context.Context, dir string, o InitOptions) (store.Store, error) {
	if o.Database == "" {
		st, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, DBFile))
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	st, err := sqlstore.OpenPostgres(ctx, o.Database)
	if err != nil {
		return nil, err
	}
	return st, nil
}
