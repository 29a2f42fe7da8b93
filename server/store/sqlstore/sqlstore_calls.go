package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/tendrildeploy/tendril/server/store"
)

// DeleteBlob implements Store.
func (s *sqlStore) DeleteBlob(ctx context.Context, key string) error {
	err := s.tx(ctx, func(tx *sqlTx) error {
		if err := tx.d.unlinkBlobs(ctx, tx, `key = ?`, key); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM blobs WHERE key = ?`, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete blob %s: %w", key, err)
	}
	return nil
}

// DeleteBlobs implements Store.
func (s *sqlStore) DeleteBlobs(ctx context.Context, prefix string, before time.Time) (int, error) {
	var n int64
	cut, err := requiredTime(before, "time")
	if err == nil {
		// substr rather than LIKE, whose wildcards and (in SQLite) case
		// folding a key could trip.
		where, args := `substr(key, 1, ?) = ? AND stored_at < ?`, []any{utf8.RuneCountInString(prefix), prefix, cut}
		err = s.tx(ctx, func(tx *sqlTx) error {
			if err := tx.d.unlinkBlobs(ctx, tx, where, args...); err != nil {
				return err
			}
			n, err = affected(tx.ExecContext(ctx, `DELETE FROM blobs WHERE `+where, args...))
			return err
		})
	}
	if err != nil {
		return 0, fmt.Errorf("delete blobs %s*: %w", prefix, err)
	}
	return int(n), nil
}

const nodeCallColumns = `id, node, from_node, agent_id, action, args, created_at, accepted_at, answered_at, result, error_kind, error`

func scanNodeCall(sc scanner) (store.NodeCall, error) {
	var c store.NodeCall
	var args, result string
	var created int64
	var accepted, answered sql.NullInt64
	err := sc.Scan(&c.ID, &c.Node, &c.From, &c.AgentID, &c.Action, &args, &created, &accepted, &answered, &result, &c.ErrorKind, &c.Error)
	c.Args, c.CreatedAt, c.AcceptedAt, c.AnsweredAt = []byte(args), time.Unix(0, created).UTC(), fromNanos(accepted), fromNanos(answered)
	if result != "" {
		c.Result = []byte(result)
	}
	return c, err
}

// CreateNodeCall implements Store.
func (s *sqlStore) CreateNodeCall(ctx context.Context, c store.NodeCall) error {
	created, err := requiredTime(c.CreatedAt, "creation time")
	if err == nil && (c.ID == "" || c.Node == "" || c.From == "" || c.AgentID == "" || c.Action == "") {
		err = errors.New("id, nodes, agent and action must be set")
	}
	if err == nil {
		args := string(c.Args)
		if args == "" {
			args = "null"
		}
		_, err = s.w.ExecContext(ctx, `INSERT INTO node_calls (id, node, from_node, agent_id, action, args, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, c.ID, c.Node, c.From, c.AgentID, c.Action, s.d.text(args), created)
		if err != nil && s.d.uniqueViolation(err) {
			err = store.ErrExists
		}
	}
	if err != nil {
		return fmt.Errorf("create call %s for node %s: %w", c.ID, c.Node, err)
	}
	return nil
}

// AcceptNodeCalls implements Store. The calls are read locked and
// updated only where still untaken, in one transaction: a concurrent
// caller waits for the lock, then finds them taken.
func (s *sqlStore) AcceptNodeCalls(ctx context.Context, node string, at time.Time) ([]store.NodeCall, error) {
	ts, err := requiredTime(at, "acceptance time")
	var out []store.NodeCall
	if err == nil {
		err = s.tx(ctx, func(tx *sqlTx) error {
			out = nil
			waiting, err := queryRows(ctx, tx, scanNodeCall,
				`SELECT `+nodeCallColumns+` FROM node_calls WHERE node = ? AND accepted_at IS NULL ORDER BY created_at`+tx.d.forUpdate(), node)
			if err != nil {
				return err
			}
			for _, c := range waiting {
				n, err := affected(tx.ExecContext(ctx, `UPDATE node_calls SET accepted_at = ? WHERE id = ? AND accepted_at IS NULL`, ts, c.ID))
				if err != nil {
					return err
				}
				if n > 0 {
					c.AcceptedAt = at.UTC()
					out = append(out, c)
				}
			}
			return nil
		})
	}
	if err != nil {
		return nil, fmt.Errorf("accept calls for node %s: %w", node, err)
	}
	return out, nil
}

// AnswerNodeCall implements Store.
func (s *sqlStore) AnswerNodeCall(ctx context.Context, a store.NodeCall) error {
	ts, err := requiredTime(a.AnsweredAt, "answer time")
	if err == nil {
		err = oneRow(s.w.ExecContext(ctx, `UPDATE node_calls SET answered_at = ?, result = ?, error_kind = ?, error = ?
			WHERE id = ? AND accepted_at IS NOT NULL`, ts, s.d.text(string(a.Result)), a.ErrorKind, s.d.text(a.Error), a.ID))
	}
	if err != nil {
		return fmt.Errorf("answer call %s: %w", a.ID, err)
	}
	return nil
}

// NodeCall implements Store.
func (s *sqlStore) NodeCall(ctx context.Context, id string) (store.NodeCall, error) {
	c, err := queryOne(ctx, s.r, scanNodeCall, `SELECT `+nodeCallColumns+` FROM node_calls WHERE id = ?`, id)
	if err != nil {
		return store.NodeCall{}, fmt.Errorf("call %s: %w", id, err)
	}
	return c, nil
}

// WithdrawNodeCall implements Store.
func (s *sqlStore) WithdrawNodeCall(ctx context.Context, id string) (bool, error) {
	n, err := affected(s.w.ExecContext(ctx, `DELETE FROM node_calls WHERE id = ? AND accepted_at IS NULL`, id))
	if err != nil {
		return false, fmt.Errorf("withdraw call %s: %w", id, err)
	}
	return n > 0, nil
}

// DeleteNodeCall implements Store.
func (s *sqlStore) DeleteNodeCall(ctx context.Context, id string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM node_calls WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete call %s: %w", id, err)
	}
	return nil
}

// PruneNodeCalls implements Store.
func (s *sqlStore) PruneNodeCalls(ctx context.Context, before time.Time) (int, error) {
	cut, err := requiredTime(before, "time")
	var n int64
	if err == nil {
		n, err = affected(s.w.ExecContext(ctx, `DELETE FROM node_calls WHERE created_at < ?`, cut))
	}
	if err != nil {
		return 0, fmt.Errorf("prune calls: %w", err)
	}
	return int(n), nil
}
