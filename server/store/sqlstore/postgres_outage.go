package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tendrildeploy/tendril/server/store"
)

// unreachable reports whether err says that PostgreSQL could not be
// reached or the connection to it broke: refused, reset or timed-out
// connections, a server shutting down or starting up, too many clients.
// Waiting mends these, unlike a query the server refused (a constraint,
// a syntax error, a permission), which answers with another SQLSTATE.
func unreachable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, store.ErrUnavailable) {
		return true
	}
	// The server answered: whether it is going away depends on what it
	// said.
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", // shutting down, crashed, starting up
			"53300": // too many connections
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection exceptions
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true // no answer: refused, unreachable, timed out, TLS failure
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	// The rest of pgconn's errors without a SQLSTATE: a connection that
	// closed under a query, or before one was sent.
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err)
}

// markUnreachable makes err match store.ErrUnavailable when it says the
// database could not be reached, and leaves it as it is otherwise. An
// error of a query whose caller gave up (ctx done) is the caller's, not
// an outage.
func markUnreachable(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil || errors.Is(err, store.ErrUnavailable) || !unreachable(err) {
		return err
	}
	return &unreachableError{err: err}
}

// unreachableError is an error of the driver that means the database
// could not be reached. Its text is the driver's; it matches both
// store.ErrUnavailable and what the driver's error matches
// (driver.ErrBadConn, which database/sql retries on another connection).
type unreachableError struct{ err error }

func (e *unreachableError) Error() string   { return e.err.Error() }
func (e *unreachableError) Unwrap() []error { return []error{e.err, store.ErrUnavailable} }

// outageConnector makes the connections of the pool, whose errors it
// marks (markUnreachable): every query of the store, whichever method
// runs it, fails with an error a caller can tell an outage by, which the
// API answers with 503 rather than 500.
type outageConnector struct{ driver.Connector }

func (c outageConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, markUnreachable(ctx, err)
	}
	sc, ok := conn.(*stdlib.Conn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("pgx's connector made a %T, not the *stdlib.Conn the store reaches pgx through", conn)
	}
	return &outageConn{Conn: sc}, nil
}

// outageConn is pgx's connection with its errors marked. Embedding keeps
// every optional interface database/sql looks for (session reset,
// named values, prepared statements).
type outageConn struct{ *stdlib.Conn }

func (c *outageConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	r, err := c.Conn.ExecContext(ctx, query, args)
	return r, markUnreachable(ctx, err)
}

func (c *outageConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	r, err := c.Conn.QueryContext(ctx, query, args)
	return r, markUnreachable(ctx, err)
}

func (c *outageConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	tx, err := c.Conn.BeginTx(ctx, opts)
	if err != nil {
		return nil, markUnreachable(ctx, err)
	}
	return outageTx{Tx: tx, ctx: ctx}, nil
}

func (c *outageConn) Ping(ctx context.Context) error {
	return markUnreachable(ctx, c.Conn.Ping(ctx))
}

// outageTx marks the errors of a transaction's end; its queries run on
// the outageConn.
type outageTx struct {
	driver.Tx
	ctx context.Context
}

func (t outageTx) Commit() error { return markUnreachable(t.ctx, t.Tx.Commit()) }

// pgxConn is the pgx connection under a connection of the pool, for
// what database/sql cannot do (sql.Conn.Raw hands over the driver's).
func pgxConn(dc any) *pgx.Conn { return dc.(*outageConn).Conn.Conn() }
