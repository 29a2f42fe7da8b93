package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"sync"
)

// maxCachedStatements bounds the statement cache; queries beyond it run
// unprepared. Every query of the store is a constant, so this is a guard,
// not a working limit.
const maxCachedStatements = 128

// stmtCache keeps a prepared statement per query text. SQLite parses and
// plans a statement on every unprepared call; for the queries every agent
// connection runs (revocation check, lookup by thumbprint, recording the
// session) that parsing was an eighth of the coordinator's CPU in a
// reconnect storm of 10,000 agents (BENCHMARKS.md).
type stmtCache struct {
	mu     sync.Mutex
	stmts  map[stmtKey]*sql.Stmt
	closed bool
}

type stmtKey struct {
	db    *sql.DB
	query string
}

// get returns the prepared statement for query on db, preparing it on
// first use. A nil statement (with a nil error) means: run it unprepared.
func (c *stmtCache) get(ctx context.Context, db *sql.DB, query string) (*sql.Stmt, error) {
	k := stmtKey{db, query}
	c.mu.Lock()
	st, ok := c.stmts[k]
	full := len(c.stmts) >= maxCachedStatements
	closed := c.closed
	c.mu.Unlock()
	if ok {
		return st, nil
	}
	if full || closed {
		return nil, nil
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.stmts[k]; ok || c.closed {
		// Lost a race with another caller, or the store closed meanwhile.
		st.Close()
		if c.closed {
			return nil, nil
		}
		return prev, nil
	}
	if c.stmts == nil {
		c.stmts = make(map[stmtKey]*sql.Stmt)
	}
	c.stmts[k] = st
	return st, nil
}

// lookup returns the statement for query on db if one is prepared, and
// prepares nothing.
func (c *stmtCache) lookup(db *sql.DB, query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stmts[stmtKey{db, query}]
}

// close closes every statement; later gets run unprepared.
func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for k, st := range c.stmts {
		errs = append(errs, st.Close())
		delete(c.stmts, k)
	}
	return errors.Join(errs...)
}

// preparedDB is a queryer that runs each query through the statement
// cache.
type preparedDB struct {
	db    *sql.DB
	cache *stmtCache
}

func (p preparedDB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := p.cache.get(ctx, p.db, query)
	if err != nil || st == nil {
		// Unprepared, the same query reports the same error through Row.
		return p.db.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

func (p preparedDB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := p.cache.get(ctx, p.db, query)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return p.db.QueryContext(ctx, query, args...)
	}
	return st.QueryContext(ctx, args...)
}

func (p preparedDB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := p.cache.get(ctx, p.db, query)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return p.db.ExecContext(ctx, query, args...)
	}
	return st.ExecContext(ctx, args...)
}

// preparedTx runs a transaction's queries through the statement cache too.
// A statement the cache holds is bound to the transaction (database/sql
// reuses what the connection prepared for it). One it lacks runs
// unprepared and is prepared once the transaction ends: the writer has
// one connection, which the transaction holds, so preparing on the
// database meanwhile would wait for itself. A task's way through the
// store is mostly transactions (created, started, its log, its end), and
// parsing their statements every time was 15% of the coordinator's CPU
// in back-to-back task round trips.
type preparedTx struct {
	tx     *sql.Tx
	db     *sql.DB
	cache  *stmtCache
	missed []string
}

func (p *preparedTx) stmt(ctx context.Context, query string) *sql.Stmt {
	st := p.cache.lookup(p.db, query)
	if st == nil {
		if !slices.Contains(p.missed, query) {
			p.missed = append(p.missed, query)
		}
		return nil
	}
	return p.tx.StmtContext(ctx, st)
}

func (p *preparedTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.tx.QueryRowContext(ctx, query, args...)
}

func (p *preparedTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.tx.QueryContext(ctx, query, args...)
}

func (p *preparedTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := p.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.tx.ExecContext(ctx, query, args...)
}

// prepareMissed prepares, after the transaction, the statements it ran
// unprepared. A failure leaves them unprepared for the next one to try.
func (p *preparedTx) prepareMissed(ctx context.Context) {
	for _, q := range p.missed {
		p.cache.get(ctx, p.db, q)
	}
}
