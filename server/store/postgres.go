package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/postgres/*.sql
var postgresMigrations embed.FS

// loadPostgresMigrations returns the embedded PostgreSQL migrations, held
// to the same rules as the SQLite ones.
func loadPostgresMigrations() ([]migration, error) {
	return readMigrations(postgresMigrations, "migrations/postgres")
}

// defaultConnectTimeout bounds one connection attempt when the URL sets no
// connect_timeout: a host that drops packets would otherwise hold an
// attempt until the caller's context ends, and a retry loop would never
// get to say what is wrong.
const defaultConnectTimeout = 10 * time.Second

// Advisory locks are named by two int4s: a class that is Tendril's
// ("tend" in ASCII), so that other applications sharing the database do not
// collide with it, and what is locked.
const (
	lockClass      = 0x74656e64
	lockMigrate    = 1 // held while a node reads the schema version and migrates
	lockIdentities = 2 // held by every change to agents' names and thumbprints
)

// maxTxAttempts bounds the retries of a transaction that PostgreSQL rolled
// back because it deadlocked or could not be serialized with another.
const maxTxAttempts = 5

// Postgres is the Store for high availability: several coordinators share
// one PostgreSQL database. Where the SQLite store relies on its single
// writer, this one uses row locks, ON CONFLICT and, for changes to agent
// identities, a transaction-scoped advisory lock, so that the same calls
// made from several processes at once keep the same guarantees: a token
// enrols one agent, names and thumbprints stay unique, log lines are
// numbered without gaps or duplicates.
type Postgres struct {
	pool  *pgxpool.Pool
	where string // the database, for errors; never the password

	closeOnce sync.Once
}

var _ Store = (*Postgres)(nil)

// OpenPostgres connects to the database at url (a postgres:// URL or a
// key=value connection string, as libpq takes) and applies any pending
// migrations. Two coordinators opening the same database at once migrate it
// once. It refuses, with an error wrapping ErrSchemaTooNew and without
// writing anything, a database migrated by a newer coordinator.
//
// It makes one attempt: an unreachable database is an error naming the
// host, never the password. OpenPostgresRetry waits for the database.
// Connection pool settings such as pool_max_conns (default: the number of
// CPUs, at least 4) and connect_timeout (default 10 s) can be given in the
// URL.
func OpenPostgres(ctx context.Context, url string) (*Postgres, error) {
	migs, err := loadPostgresMigrations()
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	return openPostgres(ctx, url, migs)
}

func openPostgres(ctx context.Context, url string, migs []migration) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's error quotes the URL with its password masked.
		return nil, fmt.Errorf("open postgres store: invalid database URL: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	where := describeDatabase(cfg.ConnConfig)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	s := &Postgres{pool: pool, where: where}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	if err := s.migrate(ctx, migs); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	return s, nil
}

// describeDatabase names the database as user@host:port/name for errors
// and logs, listing every host of a multi-host URL.
func describeDatabase(c *pgx.ConnConfig) string {
	hosts := []string{hostPort(c.Host, c.Port)}
	for _, f := range c.Fallbacks {
		if h := hostPort(f.Host, f.Port); !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return fmt.Sprintf("postgres://%s@%s/%s", c.User, strings.Join(hosts, ","), c.Database)
}

func hostPort(host string, port uint16) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "/") {
		host = "[" + host + "]" // IPv6
	}
	return host + ":" + strconv.Itoa(int(port))
}

// String names the database, without its password.
func (s *Postgres) String() string { return s.where }

// Close closes the connection pool. It is idempotent.
func (s *Postgres) Close() error {
	s.closeOnce.Do(s.pool.Close)
	return nil
}

// migrate applies each pending migration in its own transaction under an
// advisory lock, reading the version again inside it: a second coordinator
// starting at the same time waits, then finds the migration applied. DDL is
// transactional in PostgreSQL, so a failed migration leaves nothing behind.
func (s *Postgres) migrate(ctx context.Context, migs []migration) error {
	for {
		done := false
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockMigrate); err != nil {
				return err
			}
			v, err := pgSchemaVersion(ctx, tx)
			if err != nil {
				return err
			}
			// Before any write: a newer database is left as it is. Against
			// len(migs), which is SchemaVersion but in tests that play an
			// older coordinator.
			if v > len(migs) {
				return fmt.Errorf("database is at schema version %d, this coordinator knows up to %d: %w",
					v, len(migs), ErrSchemaTooNew)
			}
			if v == len(migs) {
				done = true
				return nil
			}
			m := migs[v]
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
				version    INTEGER NOT NULL PRIMARY KEY,
				applied_at BIGINT  NOT NULL
			)`); err != nil {
				return err
			}
			// No arguments: pgx sends it with the simple protocol, which
			// runs a file of several statements.
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
			_, err = tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`,
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

// pgSchemaVersion returns 0 for a database that has never been migrated.
// The table is looked up through the search path, as every query is.
func pgSchemaVersion(ctx context.Context, q pgq) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return 0, err
	}
	var v sql.NullInt64
	if err := q.QueryRow(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, err
	}
	return int(v.Int64), nil
}

// pgq is what queries need from a pool or a transaction.
type pgq interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// tx runs fn in a transaction, running it again when PostgreSQL rolled it
// back for a deadlock or a serialization failure, which only means another
// coordinator got there first. fn must therefore start from scratch each
// time it is called.
func (s *Postgres) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		if err == nil || attempt == maxTxAttempts || !conflicted(err) {
			return err
		}
	}
}

// conflicted reports whether err is PostgreSQL giving up a transaction
// because of a concurrent one.
func conflicted(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// lockAgentIdentities serializes, across coordinators, every transaction
// that creates, deletes or re-keys agents. Uniqueness across the
// thumbprint and next_thumbprint columns, and the revocation list, cannot be
// expressed as constraints; under this lock the checks in Register and
// SetNextThumbprint see every committed change, as they do behind SQLite's
// single writer. These changes are rare, so the lock costs nothing.
func lockAgentIdentities(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockIdentities)
	return err
}

// uniqueViolation reports whether err is a unique constraint violation.
func uniqueViolation(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && pgErr.Code == "23505"
}

// pgText makes free text that comes from agents storable: PostgreSQL
// refuses NUL bytes and invalid UTF-8 in TEXT, which SQLite keeps, and one
// odd health detail must not fail a whole batch. Both become U+FFFD.
func pgText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// pgTag turns a command that matched no row into ErrNotFound.
func pgTag(tag pgconn.CommandTag, err error) error {
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
