package sqlstore

import (
	"context"
	"database/sql"
	"errors"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tendrildeploy/tendril/server/kind"
)

// markFull makes an error of a write SQLite had no room for (SQLITE_FULL:
// the file system holding the database is full) match kind.ErrNoSpace, so
// that the API answers it as a full data folder rather than as a fault.
// SQLite's other I/O errors stay as they are: they are not outages.
func markFull(err error) error {
	if err == nil || errors.Is(err, kind.ErrNoSpace) {
		return err
	}
	if e, ok := errors.AsType[*sqlite.Error](err); !ok || e.Code()&0xff != sqlite3.SQLITE_FULL {
		return err
	}
	return &fullError{err: err}
}

// fullError is SQLite's SQLITE_FULL, with its text, matching
// kind.ErrNoSpace.
type fullError struct{ err error }

func (e *fullError) Error() string   { return e.err.Error() }
func (e *fullError) Unwrap() []error { return []error{e.err, kind.ErrNoSpace} }

// fullMarked runs the writes of the SQLite store outside a transaction
// with their errors marked (markFull); transactions are marked as a
// whole by sqlStore.tx.
type fullMarked struct{ q queryer }

func (f fullMarked) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return f.q.QueryRowContext(ctx, query, args...)
}

func (f fullMarked) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	rows, err := f.q.QueryContext(ctx, query, args...)
	return rows, markFull(err)
}

func (f fullMarked) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	r, err := f.q.ExecContext(ctx, query, args...)
	return r, markFull(err)
}
