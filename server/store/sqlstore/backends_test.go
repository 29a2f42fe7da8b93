package sqlstore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tendrildeploy/tendril/internal/pgtest"
	"github.com/tendrildeploy/tendril/server/store"
)

// pg is the test binary's PostgreSQL cluster, started by the first test
// that needs it.
var pg pgtest.Shared

func TestMain(m *testing.M) { pg.Main(m, true) }

// backend is one Store implementation as the shared tests see it: every
// test of the Store contract runs once per backend (forEachBackend), so
// both implementations meet the same assertions.
type backend struct {
	name string
	// open returns a new, empty, migrated store, closed when the test
	// ends, and where it lives, for reopen.
	open func(t testing.TB) (store.Store, string)
	// reopen opens the store at where again; the caller closes it.
	reopen func(ctx context.Context, where string) (store.Store, error)
	// seedAgents inserts n agents in one statement or transaction;
	// registering 10,000 agents one by one would dominate the tests that
	// need them.
	seedAgents func(t testing.TB, s store.Store, n int) []string
	// applied returns the schema_migrations table: version -> applied_at.
	applied func(t testing.TB, s store.Store) map[int]int64
	// version is the schema version as the store reads it when opening.
	version func(s store.Store) (int, error)
}

var backends = []backend{
	{
		name: "sqlite",
		open: func(t testing.TB) (store.Store, string) { return openTest(t) },
		reopen: func(ctx context.Context, path string) (store.Store, error) {
			return OpenSQLite(ctx, path)
		},
		seedAgents: func(t testing.TB, s store.Store, n int) []string { return seedAgents(t, s.(*SQLite), n) },
		version:    func(s store.Store) (int, error) { return s.(*SQLite).schemaVersion(context.Background()) },
		applied:    func(t testing.TB, s store.Store) map[int]int64 { return applied(t, &s.(*SQLite).sqlStore) },
	},
	{
		name: "postgres",
		open: func(t testing.TB) (store.Store, string) { return openPostgresTest(t) },
		reopen: func(ctx context.Context, url string) (store.Store, error) {
			return OpenPostgres(ctx, url)
		},
		seedAgents: func(t testing.TB, s store.Store, n int) []string { return pgSeedAgents(t, s.(*Postgres), n) },
		version:    func(s store.Store) (int, error) { return s.(*Postgres).schemaVersion(context.Background()) },
		applied:    func(t testing.TB, s store.Store) map[int]int64 { return applied(t, &s.(*Postgres).sqlStore) },
	},
}

// applied reads the schema_migrations table: version -> applied_at.
func applied(t testing.TB, s *sqlStore) map[int]int64 {
	t.Helper()
	rows, err := queryRows(context.Background(), s.r, func(sc scanner) (r [2]int64, err error) {
		return r, sc.Scan(&r[0], &r[1])
	}, `SELECT version, applied_at FROM schema_migrations`)
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]int64{}
	for _, r := range rows {
		m[int(r[0])] = r[1]
	}
	return m
}

// forEachBackend runs test as a subtest per backend, named after it.
func forEachBackend(t *testing.T, test func(t *testing.T, db backend)) {
	t.Helper()
	for _, db := range backends {
		t.Run(db.name, func(t *testing.T) { test(t, db) })
	}
}

func openTest(t testing.TB) (*SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tendril.db")
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// openPostgresTest opens a store on a new database of the test cluster.
func openPostgresTest(t testing.TB) (*Postgres, string) {
	t.Helper()
	url := pg.Cluster(t).NewDatabase(t)
	s, err := OpenPostgres(context.Background(), url)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
}

func seedAgents(t testing.TB, s *SQLite, n int) []string {
	t.Helper()
	ids := make([]string, n)
	rows := make([][]any, n)
	for i := range n {
		ids[i] = fmt.Sprintf("seed-%05d", i)
		rows[i] = []any{ids[i], "seed-agent-" + ids[i], "seed-tp-" + ids[i], t0.UnixNano()}
	}
	err := s.tx(context.Background(), func(tx *sqlTx) error {
		return tx.d.execMany(context.Background(), tx, `INSERT INTO agents (id, name, environment, thumbprint, registered_at)
			VALUES (?, ?, 'prod', ?, ?)`, rows, func(i int) string { return ids[i] })
	})
	if err != nil {
		t.Fatalf("seed agents: %v", err)
	}
	return ids
}

// pgSeedAgents is seedAgents for PostgreSQL, with COPY.
func pgSeedAgents(t testing.TB, s *Postgres, n int) []string {
	t.Helper()
	ids := make([]string, n)
	rows := make([][]any, n)
	for i := range n {
		ids[i] = fmt.Sprintf("seed-%05d", i)
		rows[i] = []any{ids[i], "seed-agent-" + ids[i], "prod", "seed-tp-" + ids[i], t0.UnixNano()}
	}
	err := s.withPgx(context.Background(), func(c *pgx.Conn) error {
		_, err := c.CopyFrom(context.Background(), pgx.Identifier{"agents"},
			[]string{"id", "name", "environment", "thumbprint", "registered_at"}, pgx.CopyFromRows(rows))
		return err
	})
	if err != nil {
		t.Fatalf("seed agents: %v", err)
	}
	return ids
}

// schemaVersion is the database's schema version, for the tests that
// check migrations.
func (s *sqlStore) schemaVersion(ctx context.Context) (int, error) {
	return schemaVersion(ctx, s.r, s.d)
}
