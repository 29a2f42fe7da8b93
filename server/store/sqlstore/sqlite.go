package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tendrildeploy/tendril/server/store"
)

// busyTimeout only matters when another process (a backup tool, the sqlite3
// shell) holds a lock: within this process writers are serialized by the
// single-connection write pool and WAL readers never block.
const busyTimeout = 10 * time.Second

// maxReaders bounds the read pool. Each connection has its own page cache,
// and SQLite reads are fast enough that more connections than CPUs only
// costs memory.
const maxReaders = 16

// SQLite is the embedded Store: the shared SQL store on one database file.
// It keeps two connection pools on the file: a single writer connection,
// which serializes write transactions in-process so they never contend
// for SQLite's write lock, and several read-only connections, which WAL
// lets run alongside the writer.
type SQLite struct {
	sqlStore

	wdb *sql.DB // exactly one connection; every transaction is BEGIN IMMEDIATE
	rdb *sql.DB // query_only connections

	// stmts keeps the prepared statements of every read and of every
	// write outside a transaction, on wdb and rdb.
	stmts stmtCache

	closeOnce sync.Once
	closeErr  error

	preMigration string // see PreMigrationBackup

	listeners listeners // Listen's callbacks: one process, so Notify is a call
}

var _ store.Store = (*SQLite)(nil)

// OpenSQLite opens the database at path, creating it with 0600 permissions
// if it does not exist, and applies any pending migrations. It refuses, with
// an error wrapping ErrSchemaTooNew and without writing anything, a database
// migrated by a newer coordinator.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	return OpenSQLiteWith(ctx, path, Options{})
}

// Options tune OpenSQLiteWith.
type Options struct {
	// BackupDir, if set, receives a copy of an existing database before a
	// migration changes it, named tendril-schema<N>-<time>.db after the
	// schema version it holds: a coordinator upgraded by mistake can go
	// back to it. If the copy fails, nothing is migrated.
	BackupDir string
}

// OpenSQLiteWith is OpenSQLite with options.
func OpenSQLiteWith(ctx context.Context, path string, o Options) (*SQLite, error) {
	migs, err := loadMigrations()
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	s, err := openSQLite(ctx, path, o, migs)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	return s, nil
}

func openSQLite(ctx context.Context, path string, o Options, migs []migration) (*SQLite, error) {
	if err := createPrivate(path); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}

	// The version check runs on a connection that sets no persistent
	// pragmas: journal_mode=WAL rewrites the file header, and a database
	// from a newer coordinator must be left exactly as it was.
	v, err := checkVersion(ctx, abs)
	if err == nil {
		err = tooNew(v, len(migs))
	}
	if err != nil {
		return nil, err
	}
	var backup string
	if v > 0 && v < len(migs) && o.BackupDir != "" {
		if backup, err = backupBeforeMigration(ctx, abs, o.BackupDir, v); err != nil {
			return nil, fmt.Errorf("back up the database before migrating it from schema %d to %d: %w", v, len(migs), err)
		}
	}

	w, err := sql.Open("sqlite", dsn(abs, append(pragmas(), "_txlock=immediate")...))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	s := &SQLite{wdb: w}
	// Connecting the writer first switches the file to WAL before any
	// query_only reader could try to.
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, err
	}

	r, err := sql.Open("sqlite", dsn(abs, append(pragmas(), "_pragma=query_only(1)")...))
	if err != nil {
		w.Close()
		return nil, err
	}
	n := min(max(4, runtime.GOMAXPROCS(0)), maxReaders)
	r.SetMaxOpenConns(n)
	// Keep them all: the default of two idle connections would make a busy
	// read pool close and reopen connections, repeating the pragmas.
	r.SetMaxIdleConns(n)
	s.rdb = r
	// Every read and every write outside a transaction is prepared once:
	// a task's way through the API and its runner reads the task, its
	// log, its bundle and the caller's key again and again, and SQLite
	// would parse and plan each of those statements every time.
	pr, pw := preparedDB{r, &s.stmts}, fullMarked{preparedDB{w, &s.stmts}}
	s.sqlStore = sqlStore{d: sqliteDialect{}, db: w, r: pr, w: pw, hr: pr, hw: pw, txStmts: &s.stmts}

	if err := s.migrate(ctx, migs); err != nil {
		s.Close()
		return nil, err
	}
	s.preMigration = backup
	return s, nil
}

// PreMigrationBackup is the copy taken before this open migrated the
// database, "" if there was nothing to migrate.
func (s *SQLite) PreMigrationBackup() string { return s.preMigration }

// backupBeforeMigration copies the database, as it is at schema version v,
// into dir with VACUUM INTO: a consistent copy that does not touch the
// original.
func backupBeforeMigration(ctx context.Context, abs, dir string, v int) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	dest := filepath.Join(dir, fmt.Sprintf("tendril-schema%d-%s.db", v, time.Now().UTC().Format("20060102T150405.000Z")))
	// VACUUM INTO accepts an empty file, which lets it be made 0600 first.
	f, err := os.OpenFile(dest, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	f.Close()
	db, err := sql.Open("sqlite", dsn(abs, busyPragma()))
	if err != nil {
		os.Remove(dest)
		return "", err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, dest); err != nil {
		os.Remove(dest)
		return "", err
	}
	return dest, nil
}

// pragmas are DSN parameters, rather than statements run after opening,
// because the driver runs them on every connection a pool opens, not just
// the first.
func pragmas() []string {
	return []string{
		busyPragma(),
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(NORMAL)",
		"_pragma=foreign_keys(1)",
	}
}

func busyPragma() string {
	return fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeout.Milliseconds())
}

// dsn builds a file: URI so that any path, including one containing '?' or
// '#', reaches SQLite intact.
func dsn(abs string, params ...string) string {
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // Windows: C:/x becomes /C:/x, as SQLite's URI parser expects
	}
	u := url.URL{Scheme: "file", Path: p, RawQuery: strings.Join(params, "&")}
	return u.String()
}

// createPrivate creates the database file itself, because SQLite would
// create it (and, later, the -wal and -shm files, which copy its mode) with
// the umask's permissions, and the database holds token and key hashes. An
// existing file is left as it is.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	// The umask can only clear bits, but a restrictive one could leave the
	// owner unable to write its own database.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Close closes both connection pools. Calling it again returns the first
// result.
func (s *SQLite) Close() error {
	s.closeOnce.Do(func() {
		serr := s.stmts.close()
		var rerr error
		if s.rdb != nil {
			rerr = s.rdb.Close()
		}
		// The writer closes last: the last connection to close checkpoints
		// the WAL into the database file and removes it.
		s.closeErr = errors.Join(serr, rerr, s.wdb.Close())
	})
	return s.closeErr
}

// Backup writes a consistent snapshot of the database to dest, which must
// not exist, while the store stays in use. The copy is created with 0600
// permissions and synced before Backup returns.
func (s *SQLite) Backup(ctx context.Context, dest string) error {
	if err := s.backup(ctx, dest); err != nil {
		return fmt.Errorf("back up database to %s: %w", dest, markFull(err))
	}
	return nil
}

func (s *SQLite) backup(ctx context.Context, dest string) error {
	// SQLite would read a name starting with "file:" as a URI, not as the
	// file created here.
	dest, err := filepath.Abs(dest)
	if err != nil {
		return err
	}
	// VACUUM INTO accepts an existing empty file, which lets the copy get
	// private permissions instead of SQLite's default.
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(dest)
		return err
	}
	if err := s.vacuumInto(ctx, dest); err != nil {
		os.Remove(dest)
		return err
	}
	// VACUUM INTO does not sync its output; a backup that can vanish in a
	// power cut is not one.
	f, err = os.OpenFile(dest, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// vacuumInto runs on a read connection: VACUUM INTO reads the source in
// one read transaction, so writers carry on while it runs. SQLite counts it
// as a write for query_only, which is lifted for the duration; a connection
// that cannot be made read-only again is discarded rather than returned to
// the read pool.
func (s *SQLite) vacuumInto(ctx context.Context, dest string) (err error) {
	conn, err := s.rdb.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA query_only(0)`); err != nil {
		return err
	}
	defer func() {
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA query_only(1)`); rerr != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn })
			err = errors.Join(err, rerr)
		}
	}()
	_, err = conn.ExecContext(ctx, `VACUUM INTO ?`, dest)
	return err
}

// sqliteDialect is SQLite's: one coordinator per database file, whose
// writes the single writer connection already serializes, so that locks
// and retries are not needed; signatures are kept as hex and other bytes
// as TEXT.
type sqliteDialect struct{}

func (sqliteDialect) wrap(q queryer) queryer                  { return q }
func (sqliteDialect) retryable(error) bool                    { return false }
func (sqliteDialect) mark(err error) error                    { return markFull(err) }
func (sqliteDialect) shared() bool                            { return false }
func (sqliteDialect) lock(context.Context, *sqlTx, int) error { return nil }
func (sqliteDialect) forUpdate() string                       { return "" }
func (sqliteDialect) clock(context.Context, queryer) (int64, error) {
	return time.Now().UnixNano(), nil
}
func (sqliteDialect) text(s string) string                   { return s }
func (sqliteDialect) bytesArg(b []byte) any                  { return string(b) }
func (sqliteDialect) sigArg(b []byte) any                    { return hex.EncodeToString(b) }
func (sqliteDialect) sigValue(stored []byte) ([]byte, error) { return hex.DecodeString(string(stored)) }

// unlinkBlobs has nothing to free: SQLite keeps a blob's content in its
// row.
func (sqliteDialect) unlinkBlobs(context.Context, *sqlTx, string, ...any) error { return nil }

func (sqliteDialect) uniqueViolation(err error) bool {
	e, ok := errors.AsType[*sqlite.Error](err)
	return ok && (e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

func (sqliteDialect) hasTable(ctx context.Context, q queryer, name string) (bool, error) {
	return exists(ctx, q, `SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`, name)
}

// execMany runs a statement prepared once for the transaction: SQLite
// runs in-process, so there is no round trip to save.
func (sqliteDialect) execMany(ctx context.Context, tx *sqlTx, query string, args [][]any, key func(i int) string) error {
	stmt, err := tx.tx.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for i, a := range args {
		if _, err := stmt.ExecContext(ctx, a...); err != nil {
			return fmt.Errorf("%s: %w", key(i), err)
		}
	}
	return nil
}

// checkVersion refuses a database from a newer coordinator before anything
// is written to it. It returns the database's schema version.
func checkVersion(ctx context.Context, abs string) (int, error) {
	// Only busy_timeout: journal_mode=WAL, unlike the other pragmas,
	// persists in the file.
	db, err := sql.Open("sqlite", dsn(abs, busyPragma()))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	v, err := schemaVersion(ctx, db, sqliteDialect{})
	if err != nil {
		return 0, err
	}
	return v, tooNew(v, SchemaVersion)
}

// listeners are the Listen callbacks of one SQLite store. An SQLite
// database has one coordinator, so a notification is a function call.
type listeners struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(string)
}

func (l *listeners) add(fn func(string)) (remove func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fns == nil {
		l.fns = make(map[int]func(string))
	}
	id := l.next
	l.next++
	l.fns[id] = fn
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.fns, id)
	}
}

func (l *listeners) call(payload string) {
	l.mu.Lock()
	fns := make([]func(string), 0, len(l.fns))
	for _, fn := range l.fns {
		fns = append(fns, fn)
	}
	l.mu.Unlock()
	for _, fn := range fns {
		fn(payload)
	}
}

// Notify implements Store: the callbacks run before it returns.
func (s *SQLite) Notify(ctx context.Context, payload string) error {
	s.listeners.call(payload)
	return nil
}

// Listen implements Store. Nothing can be missed in one process, so fn
// hears "" only once, at the start.
func (s *SQLite) Listen(ctx context.Context, fn func(payload string), _ func(error, time.Duration)) error {
	remove := s.listeners.add(fn)
	defer remove()
	fn("")
	<-ctx.Done()
	return nil
}

// PutBlob implements Store. SQLite holds a blob whole in memory on its way
// in and out: the coordinator keeps blobs only in a shared database, and
// this is here for the two stores to behave alike.
func (s *SQLite) PutBlob(ctx context.Context, b store.Blob, r io.Reader) error {
	at, stored, err := s.blobToStore(ctx, b)
	if err == nil && !stored {
		var data []byte
		if data, err = io.ReadAll(newCheckedReader(r, b)); err == nil {
			_, err = s.w.ExecContext(ctx, `INSERT INTO blobs (key, sha256, size, content, stored_at) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (key) DO NOTHING`, b.Key, b.SHA256, b.Size, data, at)
		}
	}
	if err != nil {
		return fmt.Errorf("store blob %s: %w", b.Key, err)
	}
	return nil
}

// ReadBlob implements Store.
func (s *SQLite) ReadBlob(ctx context.Context, key string, w io.Writer) (store.Blob, error) {
	var data []byte
	b, err := queryOne(ctx, s.r, scanBlob(key, &data), `SELECT sha256, size, stored_at, content FROM blobs WHERE key = ?`, key)
	if err == nil {
		_, err = w.Write(data)
	}
	if err != nil {
		return store.Blob{}, fmt.Errorf("read blob %s: %w", key, err)
	}
	return b, nil
}
