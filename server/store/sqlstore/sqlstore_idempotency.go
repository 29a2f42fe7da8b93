package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/tendrildeploy/tendril/server/store"
)

const idempotencyColumns = `scope, key, request_sha256, ref, status, body, node, created_at, completed_at`

func scanIdempotencyKey(sc scanner) (store.IdempotencyKey, error) {
	var (
		k                  store.IdempotencyKey
		body               sql.NullString
		created, completed sql.NullInt64
	)
	if err := sc.Scan(&k.Scope, &k.Key, &k.RequestSHA256, &k.Ref, &k.Status, &body, &k.Node, &created, &completed); err != nil {
		return store.IdempotencyKey{}, err
	}
	if body.Valid {
		k.Body = []byte(body.String)
	}
	k.CreatedAt, k.CompletedAt = fromNanos(created), fromNanos(completed)
	return k, nil
}

// ReserveIdempotencyKey implements Store. The primary key decides between
// two nodes reserving the same key at once.
func (s *sqlStore) ReserveIdempotencyKey(ctx context.Context, k store.IdempotencyKey) (store.IdempotencyKey, bool, error) {
	created, err := requiredTime(k.CreatedAt, "creation time")
	if err != nil {
		return store.IdempotencyKey{}, false, fmt.Errorf("reserve idempotency key: %w", err)
	}
	n, err := affected(s.w.ExecContext(ctx, `INSERT INTO idempotency_keys (scope, key, request_sha256, ref, node, created_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO NOTHING`,
		k.Scope, k.Key, k.RequestSHA256, k.Ref, k.Node, created))
	if err != nil {
		return store.IdempotencyKey{}, false, fmt.Errorf("reserve idempotency key: %w", err)
	}
	if n == 1 {
		return k, true, nil
	}
	got, err := queryOne(ctx, s.w, scanIdempotencyKey, `SELECT `+idempotencyColumns+` FROM idempotency_keys WHERE scope = ? AND key = ?`,
		s.d.text(k.Scope), s.d.text(k.Key))
	if err != nil {
		// Released between the insert and the read: the caller asks again.
		return store.IdempotencyKey{}, false, fmt.Errorf("read idempotency key: %w", err)
	}
	return got, false, nil
}

// CompleteIdempotencyKey implements Store.
func (s *sqlStore) CompleteIdempotencyKey(ctx context.Context, scope, key string, status int, body []byte, at time.Time) error {
	done, err := requiredTime(at, "completion time")
	if err == nil {
		var b any
		if body != nil {
			b = string(body)
		}
		err = oneRow(s.w.ExecContext(ctx, `UPDATE idempotency_keys SET status = ?, body = ?, completed_at = ? WHERE scope = ? AND key = ?`,
			status, b, done, s.d.text(scope), s.d.text(key)))
	}
	if err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	return nil
}

// ReleaseIdempotencyKey implements Store.
func (s *sqlStore) ReleaseIdempotencyKey(ctx context.Context, scope, key, ifNode string) error {
	q, args := `DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND status = 0`, []any{s.d.text(scope), s.d.text(key)}
	if ifNode != "" {
		q, args = q+` AND node = ?`, append(args, s.d.text(ifNode))
	}
	if _, err := s.w.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	return nil
}

// PurgeIdempotencyKeys implements Store.
func (s *sqlStore) PurgeIdempotencyKeys(ctx context.Context, before time.Time) (int, error) {
	b, err := requiredTime(before, "purge time")
	if err != nil {
		return 0, err
	}
	n, err := affected(s.w.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE created_at < ?`, b))
	if err != nil {
		return 0, fmt.Errorf("purge idempotency keys: %w", err)
	}
	return int(n), nil
}
