package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/tendrildeploy/tendril/server/store"
)

// sqlStore is the part of the Store both backends share: every method
// whose SQL means the same on SQLite and PostgreSQL, written once with ?
// placeholders on database/sql. What the two databases do differently
// is its dialect's.
type sqlStore struct {
	d dialect
	// db runs transactions: SQLite's single writer connection, or the
	// PostgreSQL pool.
	db *sql.DB
	// r runs reads and w writes outside a transaction. hr and hw run the
	// queries of the agent connection path, which the SQLite store
	// prepares once and caches (see stmtCache), as it does r's and w's.
	r, w, hr, hw queryer
	// txStmts, if set, caches the statements of transactions on db
	// (preparedTx): SQLite's.
	txStmts *stmtCache
}

// dialect is what the shared store leaves to the database it runs on.
type dialect interface {
	// wrap makes q take queries written with ? placeholders.
	wrap(q queryer) queryer
	// retryable reports whether a transaction failed only because a
	// concurrent one won, so that running it again from scratch may
	// succeed.
	retryable(err error) bool
	// mark makes a transaction's error say what kind of failure it is
	// where the driver's does not (SQLite's full disk: kind.ErrNoSpace).
	mark(err error) error
	// uniqueViolation reports whether err is a unique constraint's.
	uniqueViolation(err error) bool
	// shared reports whether several coordinators may use the database
	// at once, which changes what a node registering has to respect.
	shared() bool
	// lock takes one of the lock* locks for the rest of the transaction,
	// serializing it with every coordinator's transactions taking it.
	lock(ctx context.Context, tx *sqlTx, key int) error
	// forUpdate is appended to a SELECT whose rows the transaction goes
	// on to change, to lock them against other coordinators.
	forUpdate() string
	// clock is the database's time in unix nanoseconds: nodes judge each
	// other's heartbeats by one clock, whatever their hosts think.
	clock(ctx context.Context, q queryer) (int64, error)
	// hasTable reports whether the table exists.
	hasTable(ctx context.Context, q queryer, name string) (bool, error)
	// execMany runs query once per row of args in tx; key names the row
	// that failed.
	execMany(ctx context.Context, tx *sqlTx, query string, args [][]any, key func(i int) string) error

	// unlinkBlobs frees, in tx, the content of the blobs matching where
	// (a condition on the blobs table) before the rows are deleted: a
	// PostgreSQL large object outlives its row otherwise.
	unlinkBlobs(ctx context.Context, tx *sqlTx, where string, args ...any) error

	// text makes free text that comes from agents and people storable.
	text(s string) string
	// bytesArg stores bytes kept as they are: a bundle's manifest, a log
	// line.
	bytesArg(b []byte) any
	// sigArg stores a signature, and sigValue reads one back.
	sigArg(b []byte) any
	sigValue(stored []byte) ([]byte, error)
}

// Transaction-scoped locks (see dialect.lock).
const (
	lockMigrate    = 1 // held while a node reads the schema version and migrates
	lockIdentities = 2 // held by every change to agents' names and thumbprints
	lockNodes      = 3 // held while a node registers, so that two of one name cannot both find the other dead
	lockRollouts   = 4 // held while a running rollout checks that no other running rollout holds its agents
)

// ownMechanics are the Store methods each backend implements itself, on
// its own type, rather than the shared store: how nodes wake each other
// and keep shared uploads, and closing. Everything else is sqlStore's.
type ownMechanics interface {
	Notify(ctx context.Context, payload string) error
	Listen(ctx context.Context, fn func(payload string), lost func(err error, wait time.Duration)) error
	PutBlob(ctx context.Context, b store.Blob, r io.Reader) error
	ReadBlob(ctx context.Context, key string, w io.Writer) (store.Blob, error)
	Close() error
}

var _, _ ownMechanics = (*SQLite)(nil), (*Postgres)(nil)

// maxTxAttempts bounds the runs of a transaction that keeps losing races
// (see dialect.retryable).
const maxTxAttempts = 5

// queryer is what queries need from a pool, a connection or a
// transaction.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// sqlTx is a write transaction. Its queries use ? placeholders, as the
// store's do.
type sqlTx struct {
	queryer
	tx   *sql.Tx
	conn *sql.Conn // the connection tx runs on, for the driver's own API
	d    dialect
}

// tx runs fn in a write transaction, running it again from scratch when
// the dialect says it only lost a race with another coordinator. fn must
// therefore not keep state across calls.
func (s *sqlStore) tx(ctx context.Context, fn func(tx *sqlTx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.tryTx(ctx, fn)
		if err == nil || attempt == maxTxAttempts || !s.d.retryable(err) {
			return s.d.mark(err)
		}
	}
}

func (s *sqlStore) tryTx(ctx context.Context, fn func(tx *sqlTx) error) error {
	var ptx *preparedTx
	if s.txStmts != nil {
		ptx = &preparedTx{db: s.db, cache: s.txStmts}
		// Runs after runTx returned its connection to the pool.
		defer ptx.prepareMissed(context.WithoutCancel(ctx))
	}
	return s.runTx(ctx, ptx, fn)
}

// runTx runs fn in one transaction, its queries through ptx if not nil.
func (s *sqlStore) runTx(ctx context.Context, ptx *preparedTx, fn func(tx *sqlTx) error) error {
	// A connection of its own, rather than db.BeginTx, so that execMany
	// can reach the driver's connection the transaction runs on.
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	var q queryer = tx
	if ptx != nil {
		ptx.tx = tx
		q = ptx
	}
	if err := fn(&sqlTx{queryer: s.d.wrap(q), tx: tx, conn: conn, d: s.d}); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// schemaVersion returns 0 for a database that has never been migrated.
func schemaVersion(ctx context.Context, q queryer, d dialect) (int, error) {
	if ok, err := d.hasTable(ctx, q, "schema_migrations"); err != nil || !ok {
		return 0, err
	}
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, err
	}
	return int(v.Int64), nil
}

// tooNew refuses a database at schema v when this code knows up to known.
func tooNew(v, known int) error {
	if v > known {
		return fmt.Errorf("database is at schema version %d, this coordinator knows up to %d: %w",
			v, known, store.ErrSchemaTooNew)
	}
	return nil
}

// migrate applies each pending migration in its own transaction, under
// the migration lock, reading the version again inside it: a second
// coordinator starting at the same time waits, then finds the migration
// applied. DDL is transactional in both databases, so a failed migration
// leaves nothing behind. Before any write, a database newer than migs is
// refused and left as it is.
func (s *sqlStore) migrate(ctx context.Context, migs []migration) error {
	for {
		done := false
		err := s.tx(ctx, func(tx *sqlTx) error {
			if err := tx.d.lock(ctx, tx, lockMigrate); err != nil {
				return err
			}
			v, err := schemaVersion(ctx, tx, tx.d)
			if err != nil {
				return err
			}
			// Against len(migs), which is SchemaVersion but in tests that
			// play an older coordinator.
			if err := tooNew(v, len(migs)); err != nil {
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
			// On the transaction itself: the file is not the store's SQL,
			// and without arguments pgx sends it with the simple protocol,
			// which runs a file of several statements.
			if _, err := tx.tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
				m.version, time.Now().UnixNano())
			return err
		})
		if err != nil || done {
			return err
		}
	}
}

// rowIter is what collectRows reads: *sql.Rows.
type rowIter interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

type scanner interface {
	Scan(dest ...any) error
}

// collectRows reads every row with scan. The caller closes rows.
func collectRows[T any](rows rowIter, scan func(scanner) (T, error)) ([]T, error) {
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// queryRows runs a query and reads every row with scan.
func queryRows[T any](ctx context.Context, q queryer, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return collectRows(rows, scan)
}

// queryOne reads the one row a query returns, or ErrNotFound.
func queryOne[T any](ctx context.Context, q queryer, scan func(scanner) (T, error), query string, args ...any) (T, error) {
	v, err := scan(q.QueryRowContext(ctx, query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	return v, err
}

// exists reports whether a query returns a row.
func exists(ctx context.Context, q queryer, query string, args ...any) (bool, error) {
	var ok bool
	err := q.QueryRowContext(ctx, `SELECT EXISTS (`+query+`)`, args...).Scan(&ok)
	return ok, err
}

// oneRow turns a command that matched nothing into ErrNotFound.
func oneRow(res sql.Result, err error) error {
	n, err := affected(res, err)
	if err == nil && n == 0 {
		return store.ErrNotFound
	}
	return err
}

func affected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// marks returns n comma-separated placeholders, for IN lists.
func marks(n int) string {
	b := make([]byte, 0, 3*n)
	for i := range n {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '?')
	}
	return string(b)
}

// anys converts a list for use as query arguments.
func anys[T any](l []T) []any {
	out := make([]any, len(l))
	for i, v := range l {
		out[i] = v
	}
	return out
}

// Times are stored as unix nanoseconds, which cover 1678 to 2262. Beyond
// that UnixNano silently wraps, so such times are refused instead.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// timeArg converts t for storage: the zero time becomes NULL, so "never"
// stays distinguishable from any real instant.
func timeArg(t time.Time) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return nil, fmt.Errorf("time %s is outside the storable range %s to %s",
			t.Format(time.RFC3339), minTime.UTC().Format(time.RFC3339), maxTime.UTC().Format(time.RFC3339))
	}
	return t.UnixNano(), nil
}

// requiredTime is timeArg for a time that must be set; what names it for
// the error.
func requiredTime(t time.Time, what string) (any, error) {
	v, err := timeArg(t)
	if err == nil && v == nil {
		err = fmt.Errorf("%s is not set", what)
	}
	return v, err
}

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func listArg(l []string) (string, error) {
	if len(l) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(l)
	return string(b), err
}
