package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tendrildeploy/tendril/api"

	"github.com/google/uuid"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/secret"
	"github.com/tendrildeploy/tendril/server/store"
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
	if _, err := os.Stat(filepath.Join(dir, datadir.KeyFile)); err == nil {
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
	if err := sk.Save(filepath.Join(dir, datadir.SigningFile)); err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	master := make([]byte, 32)
	if _, err := rand.Read(master); err != nil {
		return InitResult{}, fmt.Errorf("init %s: master key: %w", dir, err)
	}
	if err := certs.WriteFileAtomic(filepath.Join(dir, datadir.MasterFile), []byte(hex.EncodeToString(master)+"\n"), 0o600); err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	st, err := openInitStore(ctx, dir, o)
	if err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	defer st.Close()
	key := secret.New("tdk_")
	if err := st.CreateAPIKey(ctx, store.APIKey{ID: uuid.NewString(), Name: "admin", Hash: secret.Hash(key), CreatedAt: time.Now().UTC(), Admin: true}); err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	if err := certs.WriteFileAtomic(filepath.Join(dir, api.AdminKeyFile), []byte(key+"\n"), 0o600); err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	// The identity is written last: its key file is what marks the folder
	// as initialized, so an interrupted init can simply be run again.
	if err := id.Save(filepath.Join(dir, datadir.CertFile), filepath.Join(dir, datadir.KeyFile)); err != nil {
		return InitResult{}, fmt.Errorf("init %s: %w", dir, err)
	}
	return InitResult{DataDir: dir, Thumbprint: id.Thumbprint, AdminKey: key}, nil
}

func writeRunInfo(dir string, ri api.RunInfo) error {
	b, err := json.MarshalIndent(ri, "", "  ")
	if err != nil {
		return err
	}
	return certs.WriteFileAtomic(filepath.Join(dir, api.RunFile), append(b, '\n'), 0o600)
}

// backupsDir holds the database copies taken before schema migrations.
func backupsDir(dataDir string) string { return filepath.Join(dataDir, "backups") }

// restoreHint tells the operator of an older coordinator facing a newer
// database what to do, naming the copy taken before the migration that
// this coordinator's schema version was migrated from, if there is one.
func restoreHint(dataDir string) string {
	pattern := filepath.Join(backupsDir(dataDir), fmt.Sprintf("tendril-schema%d-*.db", store.SchemaVersion))
	found, _ := filepath.Glob(pattern)
	if len(found) == 0 {
		return fmt.Sprintf("nothing was written; run the newer coordinator, or restore a backup made with \"tendril-server backup\" (no copy taken before a migration from schema %d is in %s)",
			store.SchemaVersion, backupsDir(dataDir))
	}
	newest := found[len(found)-1] // the names sort by time
	return fmt.Sprintf("nothing was written; run the newer coordinator, or, to go back to this one, stop and replace %s with %s (the copy taken before the migration) and remove %s-wal and %s-shm",
		filepath.Join(dataDir, datadir.DBFile), newest, filepath.Join(dataDir, datadir.DBFile), filepath.Join(dataDir, datadir.DBFile))
}
