package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

// SchemaVersion is the schema version this code creates and understands:
// the number of the newest file in migrations/sqlite and in
// migrations/postgres, which mirror each other.
const SchemaVersion = 7

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

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

// checkVersion refuses a database from a newer coordinator before anything
// is written to it.
// It returns the database's schema version.
func checkVersion(ctx context.Context, abs string) (int, error) {
	// Only busy_timeout: journal_mode=WAL, unlike the other pragmas,
	// persists in the file.
	db, err := sql.Open("sqlite", dsn(abs, busyPragma()))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	v, err := schemaVersion(ctx, db)
	if err != nil {
		return 0, err
	}
	return v, tooNew(v)
}

func tooNew(v int) error {
	if v > SchemaVersion {
		return fmt.Errorf("database is at schema version %d, this coordinator knows up to %d: %w",
			v, SchemaVersion, ErrSchemaTooNew)
	}
	return nil
}

// schemaVersion returns 0 for a database that has never been migrated.
func schemaVersion(ctx context.Context, q queryer) (int, error) {
	var n int
	err := q.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n)
	if err != nil || n == 0 {
		return 0, err
	}
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, err
	}
	return int(v.Int64), nil
}

// migrate applies each pending migration in its own transaction, reading
// the version again inside it so that two coordinators starting on the same
// file cannot both apply one.
func (s *SQLite) migrate(ctx context.Context, migs []migration) error {
	for {
		done := false
		err := s.write(ctx, func(tx *sql.Tx) error {
			v, err := schemaVersion(ctx, tx)
			if err != nil {
				return err
			}
			if err := tooNew(v); err != nil {
				return err
			}
			if v == len(migs) {
				done = true
				return nil
			}
			m := migs[v]
			if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
				version    INTEGER NOT NULL PRIMARY KEY,
				applied_at BIGINT  NOT NULL
			)`); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
			_, err = tx.ExecContext(ctx,
				`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
				m.version, time.Now().UnixNano())
			return err
		})
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}
