package sqlstore

import (
	"context"
	"database/sql"
	"errors"
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
