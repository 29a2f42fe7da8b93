package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// busyTimeout only matters when another process (a backup tool, the sqlite3
// shell) holds a lock: within this process writers are serialized by the
// single-connection write pool and WAL readers never block.
const busyTimeout = 10 * time.Second

// maxReaders bounds the read pool. Each connection has its own page cache,
// and SQLite reads are fast enough that more connections than CPUs only
// costs memory.
const maxReaders = 16

// SQLite is the embedded Store. It keeps two connection pools on one
// database file: a single writer connection, which serializes write
// transactions in-process so they never contend for SQLite's write lock,
// and several read-only connections, which WAL lets run alongside the
// writer.
type SQLite struct {
	w *sql.DB // exactly one connection; every transaction is BEGIN IMMEDIATE
	r *sql.DB // query_only connections

	// pw and pr run the queries of the agent connection path as cached
	// prepared statements on w and r.
	stmts  stmtCache
	pw, pr preparedDB

	closeOnce sync.Once
	closeErr  error

	preMigration string // see PreMigrationBackup

	listeners listeners // Listen's callbacks: one process, so Notify is a call
}

var _ Store = (*SQLite)(nil)

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
	s := &SQLite{w: w}
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
	s.r = r
	s.pw, s.pr = preparedDB{w, &s.stmts}, preparedDB{r, &s.stmts}

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
		if s.r != nil {
			rerr = s.r.Close()
		}
		// The writer closes last: the last connection to close checkpoints
		// the WAL into the database file and removes it.
		s.closeErr = errors.Join(serr, rerr, s.w.Close())
	})
	return s.closeErr
}

// Backup writes a consistent snapshot of the database to dest, which must
// not exist, while the store stays in use. The copy is created with 0600
// permissions and synced before Backup returns.
func (s *SQLite) Backup(ctx context.Context, dest string) error {
	if err := s.backup(ctx, dest); err != nil {
		return fmt.Errorf("back up database to %s: %w", dest, err)
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
	conn, err := s.r.Conn(ctx)
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

// write runs fn in a write transaction. The write pool's single connection
// makes callers queue here, honouring ctx, rather than inside SQLite.
func (s *SQLite) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// queryer is what the helpers below need from a *sql.DB or a *sql.Tx, so
// that lookups inside Register see the transaction's own writes.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Register implements Store.
//
// Beyond the interface's contract: a thumbprint that was revoked (its agent
// was deleted or replaced, or rotated away from it) is refused with
// ErrThumbprintTaken unless Force is set, in which case the revocation is
// lifted; a zero Now means the current time; Name, Thumbprint and NewID
// must not be empty.
func (s *SQLite) Register(ctx context.Context, p RegisterParams) (RegisterResult, error) {
	if p.Now.IsZero() {
		p.Now = time.Now()
	}
	var res RegisterResult
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = register(ctx, tx, p)
		return err
	})
	if err != nil {
		return RegisterResult{}, fmt.Errorf("register agent %q: %w", p.Name, err)
	}
	return res, nil
}

func register(ctx context.Context, tx *sql.Tx, p RegisterParams) (RegisterResult, error) {
	switch {
	case p.Name == "":
		return RegisterResult{}, errors.New("name is empty")
	case p.Thumbprint == "":
		return RegisterResult{}, errors.New("thumbprint is empty")
	case p.NewID == "":
		return RegisterResult{}, errors.New("new agent ID is empty")
	}
	now, err := timeArg(p.Now)
	if err != nil {
		return RegisterResult{}, err
	}

	var (
		tokID, tokEnv     string
		expiresAt, usedAt sql.NullInt64
		usedBy            sql.NullString
	)
	err = tx.QueryRowContext(ctx,
		`SELECT id, environment, expires_at, used_at, used_by FROM tokens WHERE hash = ?`,
		p.TokenHash).Scan(&tokID, &tokEnv, &expiresAt, &usedAt, &usedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return RegisterResult{}, ErrTokenInvalid
	}
	if err != nil {
		return RegisterResult{}, err
	}

	if usedAt.Valid {
		// The agent may not have received the reply to its first attempt;
		// giving it the same answer again lets it retry safely.
		if usedBy.String == p.Thumbprint {
			a, err := scanAgent(tx.QueryRowContext(ctx,
				`SELECT `+agentColumns+` FROM agents WHERE thumbprint = ?`, p.Thumbprint))
			if err == nil {
				return RegisterResult{Agent: a}, nil
			}
			if !errors.Is(err, ErrNotFound) {
				return RegisterResult{}, err
			}
		}
		return RegisterResult{}, ErrTokenUsed
	}
	if p.Now.After(fromNanos(expiresAt)) {
		return RegisterResult{}, ErrTokenExpired
	}
	env := p.Environment
	if env == "" {
		env = tokEnv
	} else if env != tokEnv {
		return RegisterResult{}, fmt.Errorf("token is for environment %q, not %q: %w", tokEnv, env, ErrTokenInvalid)
	}

	// An agent whose next thumbprint is the new one counts as a holder of
	// it: otherwise AgentByThumbprint could match two agents.
	conflicts, err := queryAgents(ctx, tx,
		`SELECT `+agentColumns+` FROM agents
		 WHERE name = ? OR thumbprint = ? OR next_thumbprint = ?
		 ORDER BY name`,
		p.Name, p.Thumbprint, p.Thumbprint)
	if err != nil {
		return RegisterResult{}, err
	}
	revoked, err := isRevoked(ctx, tx, p.Thumbprint)
	if err != nil {
		return RegisterResult{}, err
	}
	if !p.Force {
		for _, a := range conflicts {
			if a.Name == p.Name && a.Thumbprint != p.Thumbprint {
				return RegisterResult{}, ErrNameTaken
			}
		}
		if len(conflicts) > 0 {
			return RegisterResult{}, fmt.Errorf("thumbprint %s: %w", p.Thumbprint, ErrThumbprintTaken)
		}
		// A revoked certificate belonged to an agent an operator removed;
		// a token alone is not enough to bring it back.
		if revoked {
			return RegisterResult{}, fmt.Errorf("thumbprint %s was revoked, register with force to reinstate it: %w",
				p.Thumbprint, ErrThumbprintTaken)
		}
	}

	for _, a := range conflicts {
		if _, err := tx.ExecContext(ctx, `DELETE FROM agents WHERE id = ?`, a.ID); err != nil {
			return RegisterResult{}, err
		}
		for _, tp := range []string{a.Thumbprint, a.NextThumbprint} {
			if tp == "" || tp == p.Thumbprint {
				continue
			}
			if err := revoke(ctx, tx, tp, "replaced", now); err != nil {
				return RegisterResult{}, err
			}
		}
	}
	if revoked {
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM revoked_thumbprints WHERE thumbprint = ?`, p.Thumbprint); err != nil {
			return RegisterResult{}, err
		}
	}

	_, err = tx.ExecContext(ctx,
		`INSERT INTO agents (id, name, environment, thumbprint, health, disk_free, registered_at)
		 VALUES (?, ?, ?, ?, ?, -1, ?)`,
		p.NewID, p.Name, env, p.Thumbprint, HealthUnavailable, now)
	if err != nil {
		return RegisterResult{}, err
	}
	res, err := tx.ExecContext(ctx,
		`UPDATE tokens SET used_at = ?, used_by = ? WHERE id = ? AND used_at IS NULL`,
		now, p.Thumbprint, tokID)
	if err != nil {
		return RegisterResult{}, err
	}
	if err := oneRow(res); err != nil {
		// Unreachable while writes are serialized; kept so a change to that
		// cannot let one token enrol two agents.
		return RegisterResult{}, ErrTokenUsed
	}

	a, err := agentBy(ctx, tx, "id", p.NewID)
	if err != nil {
		return RegisterResult{}, err
	}
	return RegisterResult{Agent: a, Replaced: conflicts}, nil
}

// AgentByThumbprint implements Store.
func (s *SQLite) AgentByThumbprint(ctx context.Context, thumbprint string) (Agent, error) {
	a, err := scanAgent(s.pr.QueryRowContext(ctx,
		`SELECT `+agentColumns+` FROM agents WHERE thumbprint = ? OR next_thumbprint = ?`,
		thumbprint, thumbprint))
	if err != nil {
		return Agent{}, fmt.Errorf("get agent by thumbprint %s: %w", thumbprint, err)
	}
	return a, nil
}

// AgentByID implements Store.
func (s *SQLite) AgentByID(ctx context.Context, id string) (Agent, error) {
	a, err := agentBy(ctx, s.r, "id", id)
	if err != nil {
		return Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	return a, nil
}

// AgentByName implements Store.
func (s *SQLite) AgentByName(ctx context.Context, name string) (Agent, error) {
	a, err := agentBy(ctx, s.r, "name", name)
	if err != nil {
		return Agent{}, fmt.Errorf("get agent by name %q: %w", name, err)
	}
	return a, nil
}

// ListAgents implements Store.
func (s *SQLite) ListAgents(ctx context.Context) ([]Agent, error) {
	agents, err := queryAgents(ctx, s.r,
		`SELECT `+agentColumns+` FROM agents ORDER BY environment, name`)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return agents, nil
}

// DeleteAgent implements Store.
func (s *SQLite) DeleteAgent(ctx context.Context, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		a, err := agentBy(ctx, tx, "id", id)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM agents WHERE id = ?`, id); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		for _, tp := range []string{a.Thumbprint, a.NextThumbprint} {
			if tp == "" {
				continue
			}
			if err := revoke(ctx, tx, tp, "deleted", now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete agent %s: %w", id, err)
	}
	return nil
}

// IsRevoked implements Store.
func (s *SQLite) IsRevoked(ctx context.Context, thumbprint string) (bool, error) {
	revoked, err := isRevoked(ctx, s.pr, thumbprint)
	if err != nil {
		return false, fmt.Errorf("check revocation of thumbprint %s: %w", thumbprint, err)
	}
	return revoked, nil
}

// RecordConnection implements Store. ErrNotFound if the agent does not
// exist.
func (s *SQLite) RecordConnection(ctx context.Context, c Connection) error {
	if err := s.recordConnection(ctx, c); err != nil {
		return fmt.Errorf("record connection of agent %s: %w", c.AgentID, err)
	}
	return nil
}

func (s *SQLite) recordConnection(ctx context.Context, c Connection) error {
	at, err := timeArg(c.At)
	if err != nil {
		return err
	}
	calamari, err := listArg(c.CalamariVersions)
	if err != nil {
		return err
	}
	res, err := s.pw.ExecContext(ctx,
		`UPDATE agents SET version = ?, os = ?, arch = ?, protocol = ?, tls_version = ?,
		 calamari_versions = ?, last_seen = ?, node = ?
		 WHERE id = ?`,
		c.Version, c.OS, c.Arch, c.Protocol, c.TLSVersion, calamari, at, nullString(c.Node), c.AgentID)
	if err != nil {
		return err
	}
	return oneRow(res)
}

// RecordHealth implements Store. Results for agents that no longer exist
// are skipped, so that deleting one agent while its check is in flight does
// not lose the rest of the batch. An empty Version keeps the stored one:
// every agent has a version, so "" means the check did not learn it.
func (s *SQLite) RecordHealth(ctx context.Context, results []HealthResult) error {
	if err := s.recordHealth(ctx, results); err != nil {
		return fmt.Errorf("record health of %d agents: %w", len(results), err)
	}
	return nil
}

func (s *SQLite) recordHealth(ctx context.Context, results []HealthResult) error {
	if len(results) == 0 {
		return nil
	}
	// Converting before the transaction keeps the write lock short and
	// means a bad result fails the batch without touching the database.
	type row struct {
		at       any
		calamari string
	}
	rows := make([]row, len(results))
	for i, r := range results {
		if !validHealth(r.Health) {
			return fmt.Errorf("agent %s: unknown health %q", r.AgentID, r.Health)
		}
		at, err := timeArg(r.At)
		if err != nil {
			return fmt.Errorf("agent %s: %w", r.AgentID, err)
		}
		calamari, err := listArg(r.CalamariVersions)
		if err != nil {
			return fmt.Errorf("agent %s: %w", r.AgentID, err)
		}
		rows[i] = row{at: at, calamari: calamari}
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx,
			`UPDATE agents SET health = ?, health_detail = ?, health_rtt = ?,
			 version = COALESCE(NULLIF(?, ''), version), calamari_versions = ?,
			 disk_free = ?, last_health_at = ?,
			 last_seen = CASE WHEN ? THEN ? ELSE last_seen END
			 WHERE id = ?`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, r := range results {
			_, err := stmt.ExecContext(ctx, r.Health, r.Detail, int64(r.RTT), r.Version,
				rows[i].calamari, r.DiskFree, rows[i].at,
				r.Health != HealthUnhealthy, rows[i].at, r.AgentID)
			if err != nil {
				return fmt.Errorf("agent %s: %w", r.AgentID, err)
			}
		}
		return nil
	})
}

func validHealth(h string) bool {
	switch h {
	case HealthHealthy, HealthWarning, HealthUnhealthy, HealthUnavailable:
		return true
	}
	return false
}

// TouchAgents implements Store. Unknown IDs are skipped, for the same
// reason as in RecordHealth.
func (s *SQLite) TouchAgents(ctx context.Context, ids []string, at time.Time) error {
	if err := s.touchAgents(ctx, ids, at); err != nil {
		return fmt.Errorf("touch %d agents: %w", len(ids), err)
	}
	return nil
}

func (s *SQLite) touchAgents(ctx context.Context, ids []string, at time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	t, err := timeArg(at)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE agents SET last_seen = ? WHERE id = ?`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, id := range ids {
			if _, err := stmt.ExecContext(ctx, t, id); err != nil {
				return fmt.Errorf("agent %s: %w", id, err)
			}
		}
		return nil
	})
}

// SetNextThumbprint implements Store. ErrNotFound if the agent does not
// exist. next == "" cancels a pending rotation, and next equal to the
// agent's current thumbprint is a no-op, since promoting it would revoke the
// certificate the agent uses. A revoked thumbprint is refused with
// ErrThumbprintTaken.
func (s *SQLite) SetNextThumbprint(ctx context.Context, id, next string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		a, err := agentBy(ctx, tx, "id", id)
		if err != nil {
			return err
		}
		if next == a.Thumbprint {
			return nil
		}
		if next != "" {
			var other string
			err := tx.QueryRowContext(ctx,
				`SELECT id FROM agents WHERE (thumbprint = ? OR next_thumbprint = ?) AND id <> ?`,
				next, next, id).Scan(&other)
			if err == nil {
				return ErrThumbprintTaken
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			revoked, err := isRevoked(ctx, tx, next)
			if err != nil {
				return err
			}
			if revoked {
				return fmt.Errorf("thumbprint was revoked: %w", ErrThumbprintTaken)
			}
		}
		_, err = tx.ExecContext(ctx,
			`UPDATE agents SET next_thumbprint = ? WHERE id = ?`, nullString(next), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("set next thumbprint of agent %s to %s: %w", id, next, err)
	}
	return nil
}

// PromoteThumbprint implements Store. ErrNotFound if the agent does not
// exist.
func (s *SQLite) PromoteThumbprint(ctx context.Context, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		a, err := agentBy(ctx, tx, "id", id)
		if err != nil {
			return err
		}
		if a.NextThumbprint == "" {
			return nil
		}
		_, err = tx.ExecContext(ctx,
			`UPDATE agents SET thumbprint = next_thumbprint, next_thumbprint = NULL WHERE id = ?`, id)
		if err != nil {
			return err
		}
		return revoke(ctx, tx, a.Thumbprint, "rotated", time.Now().UnixNano())
	})
	if err != nil {
		return fmt.Errorf("promote next thumbprint of agent %s: %w", id, err)
	}
	return nil
}

// SetServerThumbprintAck implements Store. ErrNotFound if the agent does
// not exist.
func (s *SQLite) SetServerThumbprintAck(ctx context.Context, id, thumbprint string) error {
	res, err := s.w.ExecContext(ctx,
		`UPDATE agents SET server_thumbprint_ack = ? WHERE id = ?`, thumbprint, id)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("set server thumbprint ack of agent %s: %w", id, err)
	}
	return nil
}

// CreateToken implements Store.
func (s *SQLite) CreateToken(ctx context.Context, t Token) error {
	if err := s.createToken(ctx, t); err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return nil
}

func (s *SQLite) createToken(ctx context.Context, t Token) error {
	var times [3]any
	for i, v := range []time.Time{t.CreatedAt, t.ExpiresAt, t.UsedAt} {
		var err error
		if times[i], err = timeArg(v); err != nil {
			return err
		}
	}
	// A missing expiry would be read back as the zero time, which has
	// passed: the token would be unusable, so refuse it now.
	if times[1] == nil {
		return errors.New("expiry is not set")
	}
	if times[0] == nil {
		return errors.New("creation time is not set")
	}
	_, err := s.w.ExecContext(ctx,
		`INSERT INTO tokens (id, hash, environment, created_at, expires_at, used_at, used_by)
		 VALUES (?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Hash, t.Environment, times[0], times[1], times[2], nullString(t.UsedBy))
	return err
}

// ListTokens implements Store.
func (s *SQLite) ListTokens(ctx context.Context) ([]Token, error) {
	tokens, err := s.listTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return tokens, nil
}

func (s *SQLite) listTokens(ctx context.Context) ([]Token, error) {
	rows, err := s.r.QueryContext(ctx,
		`SELECT id, hash, environment, created_at, expires_at, used_at, used_by
		 FROM tokens ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var tokens []Token
	for rows.Next() {
		var (
			t                      Token
			created, expires, used sql.NullInt64
			usedBy                 sql.NullString
		)
		if err := rows.Scan(&t.ID, &t.Hash, &t.Environment, &created, &expires, &used, &usedBy); err != nil {
			return nil, err
		}
		t.CreatedAt, t.ExpiresAt, t.UsedAt = fromNanos(created), fromNanos(expires), fromNanos(used)
		t.UsedBy = usedBy.String
		tokens = append(tokens, t)
	}
	return tokens, rows.Err()
}

// CreateAPIKey implements Store.
func (s *SQLite) CreateAPIKey(ctx context.Context, k APIKey) error {
	if err := s.createAPIKey(ctx, k); err != nil {
		return fmt.Errorf("create API key %q: %w", k.Name, err)
	}
	return nil
}

func (s *SQLite) createAPIKey(ctx context.Context, k APIKey) error {
	created, err := timeArg(k.CreatedAt)
	if err != nil {
		return err
	}
	revoked, err := timeArg(k.RevokedAt)
	if err != nil {
		return err
	}
	if created == nil {
		return errors.New("creation time is not set")
	}
	_, err = s.w.ExecContext(ctx,
		`INSERT INTO api_keys (id, name, hash, created_at, revoked_at, admin) VALUES (?, ?, ?, ?, ?, ?)`,
		k.ID, k.Name, k.Hash, created, revoked, k.Admin)
	return err
}

// APIKeyByHash implements Store.
func (s *SQLite) APIKeyByHash(ctx context.Context, hash string) (APIKey, error) {
	var (
		k       APIKey
		created sql.NullInt64
	)
	err := s.r.QueryRowContext(ctx,
		`SELECT id, name, hash, created_at, admin FROM api_keys WHERE hash = ? AND revoked_at IS NULL`,
		hash).Scan(&k.ID, &k.Name, &k.Hash, &created, &k.Admin)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		// The hash is of a credential: keep it out of error messages.
		return APIKey{}, fmt.Errorf("get API key by hash: %w", err)
	}
	k.CreatedAt = fromNanos(created)
	return k, nil
}

// Setting implements Store.
func (s *SQLite) Setting(ctx context.Context, key string) (string, error) {
	var v string
	err := s.r.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("get setting %q: %w", key, err)
	}
	return v, nil
}

// SetSetting implements Store.
func (s *SQLite) SetSetting(ctx context.Context, key, value string) error {
	_, err := s.w.ExecContext(ctx,
		`INSERT INTO settings (key, value) VALUES (?, ?)
		 ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("set setting %q: %w", key, err)
	}
	return nil
}

const agentColumns = `id, name, environment, thumbprint, next_thumbprint,
	version, os, arch, protocol, tls_version, calamari_versions,
	health, health_detail, health_rtt, disk_free, server_thumbprint_ack,
	registered_at, last_seen, last_health_at, node`

type scanner interface {
	Scan(dest ...any) error
}

// scanAgent reads one row of agentColumns. It turns sql.ErrNoRows into
// ErrNotFound so that callers need not know about database/sql.
func scanAgent(sc scanner) (Agent, error) {
	var (
		a                              Agent
		next                           sql.NullString
		calamari                       string
		rtt                            int64
		registered, seen, lastHealthAt sql.NullInt64
		node                           sql.NullString
	)
	err := sc.Scan(&a.ID, &a.Name, &a.Environment, &a.Thumbprint, &next,
		&a.Version, &a.OS, &a.Arch, &a.Protocol, &a.TLSVersion, &calamari,
		&a.Health, &a.HealthDetail, &rtt, &a.DiskFree, &a.ServerThumbprintAck,
		&registered, &seen, &lastHealthAt, &node)
	if errors.Is(err, sql.ErrNoRows) {
		return Agent{}, ErrNotFound
	}
	if err != nil {
		return Agent{}, err
	}
	a.NextThumbprint, a.Node = next.String, node.String
	if err := json.Unmarshal([]byte(calamari), &a.CalamariVersions); err != nil {
		return Agent{}, fmt.Errorf("agent %s: calamari versions: %w", a.ID, err)
	}
	if len(a.CalamariVersions) == 0 {
		a.CalamariVersions = nil
	}
	a.HealthRTT = time.Duration(rtt)
	a.RegisteredAt, a.LastSeen, a.LastHealthAt = fromNanos(registered), fromNanos(seen), fromNanos(lastHealthAt)
	return a, nil
}

// agentBy looks an agent up by a unique column. col is always a constant
// from this file, never input.
func agentBy(ctx context.Context, q queryer, col, value string) (Agent, error) {
	return scanAgent(q.QueryRowContext(ctx,
		`SELECT `+agentColumns+` FROM agents WHERE `+col+` = ?`, value))
}

func queryAgents(ctx context.Context, q queryer, query string, args ...any) ([]Agent, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return collectRows(rows, scanAgent)
}

func isRevoked(ctx context.Context, q queryer, thumbprint string) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx,
		`SELECT 1 FROM revoked_thumbprints WHERE thumbprint = ?`, thumbprint).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// revoke keeps the first revocation of a thumbprint: its time and reason
// are the ones an operator investigating it wants.
func revoke(ctx context.Context, q queryer, thumbprint, reason string, at any) error {
	_, err := q.ExecContext(ctx,
		`INSERT INTO revoked_thumbprints (thumbprint, revoked_at, reason) VALUES (?, ?, ?)
		 ON CONFLICT (thumbprint) DO NOTHING`, thumbprint, at, reason)
	return err
}

// oneRow turns an UPDATE that matched nothing into ErrNotFound.
func oneRow(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
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
