package sqlstore

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// SchemaVersion is the schema version this code creates and understands:
// the number of the newest file in migrations/sqlite and in
// migrations/postgres, which mirror each other.
const SchemaVersion = 15

// Each backend has its own migrations, mirroring each other file for
// file: the schemas differ in types (see migrations/postgres/0001_init.sql),
// never in tables or columns.
var (
	//go:embed migrations/sqlite/*.sql
	sqliteMigrations embed.FS
	//go:embed migrations/postgres/*.sql
	postgresMigrations embed.FS
)

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations returns the embedded migrations in order. Gaps, duplicates
// and a newest version other than SchemaVersion are programming errors that
// would otherwise surface as a half-migrated database in production.
func loadMigrations() ([]migration, error) {
	return readMigrations(sqliteMigrations, "migrations/sqlite")
}

// loadPostgresMigrations returns the embedded PostgreSQL migrations, held
// to the same rules as the SQLite ones.
func loadPostgresMigrations() ([]migration, error) {
	return readMigrations(postgresMigrations, "migrations/postgres")
}

// readMigrations reads one backend's migrations from dir in fsys.
func readMigrations(fsys fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var migs []migration
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration %s: name is not NNNN_description.sql", e.Name())
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		migs = append(migs, migration{version: v, name: e.Name(), sql: string(b)})
	}
	// ReadDir sorts by name and the prefixes are zero-padded, so the
	// order is already by version; check it is also gapless.
	for i, m := range migs {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: got version %d, want %d", m.name, m.version, i+1)
		}
	}
	if len(migs) != SchemaVersion {
		return nil, fmt.Errorf("found %d migrations but SchemaVersion is %d", len(migs), SchemaVersion)
	}
	return migs, nil
}
