package server

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/tendrildeploy/tendril/atomicfile"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

func writeRunInfo(dir string, ri api.RunInfo) error {
	b, err := json.MarshalIndent(ri, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, api.RunFile), append(b, '\n'), 0o600)
}

// backupsDir holds the database copies taken before schema migrations.
func backupsDir(dataDir string) string { return filepath.Join(dataDir, "backups") }

// restoreHint tells the operator of an older coordinator facing a newer
// database what to do, naming the copy taken before the migration that
// this coordinator's schema version was migrated from, if there is one.
func restoreHint(dataDir string) string {
	pattern := filepath.Join(backupsDir(dataDir), fmt.Sprintf("tendril-schema%d-*.db", sqlstore.SchemaVersion))
	found, _ := filepath.Glob(pattern)
	if len(found) == 0 {
		return fmt.Sprintf("nothing was written; run the newer coordinator, or restore a backup made with \"tendril-server backup\" (no copy taken before a migration from schema %d is in %s)",
			sqlstore.SchemaVersion, backupsDir(dataDir))
	}
	newest := found[len(found)-1] // the names sort by time
	return fmt.Sprintf("nothing was written; run the newer coordinator, or, to go back to this one, stop and replace %s with %s (the copy taken before the migration) and remove %s-wal and %s-shm",
		filepath.Join(dataDir, datadir.DBFile), newest, filepath.Join(dataDir, datadir.DBFile), filepath.Join(dataDir, datadir.DBFile))
}
