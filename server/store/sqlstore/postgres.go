package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tendrildeploy/tendril/server/store"
)

// defaultConnectTimeout bounds one connection attempt when the URL sets no
// connect_timeout: a host that drops packets would otherwise hold an
// attempt until the caller's context ends, and a retry loop would never
// get to say what is wrong.
const defaultConnectTimeout = 10 * time.Second

// lockClass names Tendril's advisory locks, which take two int4s: this
// class ("tend" in ASCII), so that other applications sharing the
// database do not collide with it, and the lock* key.
const lockClass = 0x74656e64

// notifyChannel is the LISTEN/NOTIFY channel the nodes wake each other on.
const notifyChannel = "tendril"

// pgNow is the database's clock in unix nanoseconds: heartbeats are
// written and judged by one clock, whatever the nodes' hosts think.
const pgNow = `(extract(epoch from clock_timestamp()) * 1000000000)::bigint`

// Postgres is the Store for high availability: several coordinators share
// one PostgreSQL database through the shared SQL store. Where the SQLite
// store relies on its single writer, this one adds row locks (FOR UPDATE),
// ON CONFLICT and, for the checks no constraint can express, transaction-
// scoped advisory locks, and runs again the transactions PostgreSQL gives
// up on, so that the same calls made from several processes at once keep
// the same guarantees: a token enrols one agent, names and thumbprints
// stay unique, log lines are numbered without gaps or duplicates.
type Postgres struct {
	sqlStore
	cfg   *pgx.ConnConfig // for the LISTEN connection, outside the pool
	where string          // the database, for errors; never the password

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Postgres)(nil)

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
	// pgxpool's parser, for the pool_* settings the URL may hold.
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's error quotes the URL with its password masked.
		return nil, fmt.Errorf("open postgres store: invalid database URL: %w", err)
	}
	cc := cfg.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = defaultConnectTimeout
	}
	// Through outageConnector, so that an error of any query says
	// whether the database was unreachable (store.ErrUnavailable).
	db := sql.OpenDB(outageConnector{stdlib.GetConnector(*cc)})
	db.SetMaxOpenConns(int(cfg.MaxConns))
	db.SetMaxIdleConns(int(cfg.MaxConns))
	db.SetConnMaxLifetime(cfg.MaxConnLifetime)
	db.SetConnMaxIdleTime(cfg.MaxConnIdleTime)
	q := dollars{db}
	s := &Postgres{
		sqlStore: sqlStore{d: postgresDialect{}, db: db, r: q, w: q, hr: q, hw: q},
		cfg:      cc,
		where:    describeDatabase(cc),
	}
	err = db.PingContext(ctx)
	if err == nil {
		err = s.migrate(ctx, migs)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", s.where, err)
	}
	return s, nil
}

// DescribeDatabase names the PostgreSQL database at url as
// postgres://user@host:port/name, as the store does in its errors and
// logs: parsed as the store parses it, so no password is shown in any
// form the URL may give it (in a URL, or as key=value settings, quoted
// or not). Diagnostics archives name the database with it.
func DescribeDatabase(url string) (string, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's error quotes the URL with its password masked.
		return "", fmt.Errorf("invalid database URL: %w", err)
	}
	return describeDatabase(cfg.ConnConfig), nil
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
	s.closeOnce.Do(func() { s.closeErr = s.db.Close() })
	return s.closeErr
}

// postgresDialect is PostgreSQL's: a database several coordinators share,
// whose transactions run concurrently, so that they lock what they check
// and are run again when PostgreSQL gives up one of two conflicting ones;
// TEXT refuses NUL bytes and invalid UTF-8, so bytes are BYTEA.
type postgresDialect struct{}

func (postgresDialect) wrap(q queryer) queryer { return dollars{q} }
func (postgresDialect) shared() bool           { return true }
func (postgresDialect) forUpdate() string      { return " FOR UPDATE" }
func (postgresDialect) bytesArg(b []byte) any  { return nonNil(b) }
func (postgresDialect) sigArg(b []byte) any    { return nonNil(b) }

func (postgresDialect) sigValue(stored []byte) ([]byte, error) { return stored, nil }

// mark leaves errors as they are: outageConn marked them already.
func (postgresDialect) mark(err error) error { return err }

// retryable reports a deadlock or a serialization failure: only another
// coordinator got there first.
func (postgresDialect) retryable(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

func (postgresDialect) uniqueViolation(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && pgErr.Code == "23505"
}

// lock takes an advisory lock. Uniqueness across the thumbprint and
// next_thumbprint columns, the revocation list, a node's liveness and a
// rollout's agents cannot be expressed as constraints; under these locks
// the checks see every committed change, as they do behind SQLite's
// single writer. The changes they guard are rare, so they cost nothing.
func (postgresDialect) lock(ctx context.Context, tx *sqlTx, key int) error {
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?, ?)`, lockClass, key)
	return err
}

func (postgresDialect) clock(ctx context.Context, q queryer) (int64, error) {
	var now int64
	err := q.QueryRowContext(ctx, `SELECT `+pgNow).Scan(&now)
	return now, err
}

// hasTable looks the table up through the search path, as every query
// does.
func (postgresDialect) hasTable(ctx context.Context, q queryer, name string) (bool, error) {
	var ok bool
	err := q.QueryRowContext(ctx, `SELECT to_regclass(?) IS NOT NULL`, name).Scan(&ok)
	return ok, err
}

// text makes free text that comes from agents storable: PostgreSQL
// refuses NUL bytes and invalid UTF-8 in TEXT, which SQLite keeps, and one
// odd health detail must not fail a whole batch. Both become U+FFFD.
func (postgresDialect) unlinkBlobs(ctx context.Context, tx *sqlTx, where string, args ...any) error {
	_, err := tx.ExecContext(ctx, `SELECT lo_unlink(content) FROM blobs WHERE `+where, args...)
	return err
}

func (postgresDialect) text(s string) string { return pgText(s) }

func pgText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// nonNil stores a nil slice as empty bytes, as SQLite's hex and text
// columns do, rather than as NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// execMany sends the statements as one pgx batch, in one round trip, on
// the transaction's connection.
func (postgresDialect) execMany(ctx context.Context, tx *sqlTx, query string, args [][]any, key func(i int) string) error {
	if len(args) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	query = toDollars(query)
	for _, a := range args {
		b.Queue(query, a...)
	}
	return tx.conn.Raw(func(dc any) error {
		br := pgxConn(dc).SendBatch(ctx, b)
		for i := range b.Len() {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return fmt.Errorf("%s: %w", key(i), err)
			}
		}
		return br.Close()
	})
}

// dollars runs the store's queries, written with ? placeholders, with
// PostgreSQL's $1, $2...
type dollars struct{ q queryer }

func (d dollars) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return d.q.QueryRowContext(ctx, toDollars(query), args...)
}

func (d dollars) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return d.q.QueryContext(ctx, toDollars(query), args...)
}

func (d dollars) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return d.q.ExecContext(ctx, toDollars(query), args...)
}

// toDollars numbers the ? placeholders of query. The store's queries
// hold no ? but placeholders: no string literal, no JSON operator.
func toDollars(query string) string {
	n := strings.Count(query, "?")
	if n == 0 {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 2*n)
	i := 0
	for p := range strings.SplitSeq(query, "?") {
		if i > 0 {
			b.WriteString("$" + strconv.Itoa(i))
		}
		b.WriteString(p)
		i++
	}
	return b.String()
}

// withPgx runs fn on a connection of the pool as pgx's, for what
// database/sql cannot do: large objects, COPY.
func (s *Postgres) withPgx(ctx context.Context, fn func(c *pgx.Conn) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error { return fn(pgxConn(dc)) })
	// fn talks to pgx directly, beside outageConn.
	return markUnreachable(ctx, err)
}

// Notify implements Store with NOTIFY, which PostgreSQL delivers to every
// session listening, this node's included.
func (s *Postgres) Notify(ctx context.Context, payload string) error {
	if _, err := s.w.ExecContext(ctx, `SELECT pg_notify(?, ?)`, notifyChannel, payload); err != nil {
		return fmt.Errorf("notify %q: %w", payload, err)
	}
	return nil
}

// Listen implements Store on a connection of its own, outside the pool:
// it waits in LISTEN for as long as the node runs.
func (s *Postgres) Listen(ctx context.Context, fn func(payload string), lost func(err error, wait time.Duration)) error {
	b := newBackoff()
	for {
		err := s.listenOnce(ctx, fn, b.Reset)
		if ctx.Err() != nil {
			return nil
		}
		wait := b.NextBackOff()
		if lost != nil {
			lost(err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// listenOnce listens on one connection until it fails or ctx ends.
// listening is called once the LISTEN took effect.
func (s *Postgres) listenOnce(ctx context.Context, fn func(string), listening func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.cfg.Copy())
	if err != nil {
		return fmt.Errorf("listen for notifications on %s: %w", s.where, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+notifyChannel); err != nil {
		return fmt.Errorf("listen for notifications on %s: %w", s.where, err)
	}
	listening()
	fn("")
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("wait for notifications on %s: %w", s.where, err)
		}
		fn(n.Payload)
	}
}

// blobChunk is how much of a blob one round trip to the server carries.
// blobChunk is how much of a blob one round trip to the server carries.
const blobChunk = 1 << 20

// errBlobStored rolls back a blob another node stored meanwhile.
var errBlobStored = errors.New("stored meanwhile")

// PutBlob implements Store. The content goes into a large object, in
// chunks, within the transaction that records it: a failure leaves
// nothing behind.
func (s *Postgres) PutBlob(ctx context.Context, b store.Blob, r io.Reader) error {
	at, stored, err := s.blobToStore(ctx, b)
	if err == nil && !stored {
		err = s.withPgx(ctx, func(c *pgx.Conn) error {
			return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error { return putLargeObject(ctx, tx, b, at, r) })
		})
	}
	if err != nil && !errors.Is(err, errBlobStored) {
		return fmt.Errorf("store blob %s: %w", b.Key, err)
	}
	return nil
}

func putLargeObject(ctx context.Context, tx pgx.Tx, b store.Blob, at any, r io.Reader) error {
	lo := tx.LargeObjects()
	oid, err := lo.Create(ctx, 0)
	if err != nil {
		return err
	}
	obj, err := lo.Open(ctx, oid, pgx.LargeObjectModeWrite)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(obj, newCheckedReader(r, b), make([]byte, blobChunk)); err != nil {
		return err
	}
	if err := obj.Close(); err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO blobs (key, sha256, size, content, stored_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (key) DO NOTHING`, b.Key, b.SHA256, b.Size, oid, at)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return errBlobStored // and the large object goes with the rollback
	}
	return nil
}

// ReadBlob implements Store, streaming the large object in chunks.
func (s *Postgres) ReadBlob(ctx context.Context, key string, w io.Writer) (store.Blob, error) {
	var b store.Blob
	err := s.withPgx(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			var oid uint32
			var err error
			b, err = scanBlob(key, &oid)(tx.QueryRow(ctx, `SELECT sha256, size, stored_at, content FROM blobs WHERE key = $1`, key))
			if errors.Is(err, pgx.ErrNoRows) {
				return store.ErrNotFound
			}
			if err != nil {
				return err
			}
			lo := tx.LargeObjects()
			obj, err := lo.Open(ctx, oid, pgx.LargeObjectModeRead)
			if err != nil {
				return err
			}
			defer obj.Close()
			_, err = io.CopyBuffer(w, obj, make([]byte, blobChunk))
			return err
		})
	})
	if err != nil {
		return store.Blob{}, fmt.Errorf("read blob %s: %w", key, err)
	}
	return b, nil
}
