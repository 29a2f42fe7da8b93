package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// CreateUser implements Store. The unique index on lower(name) decides
// between coordinators creating the same user at once.
func (s *Postgres) CreateUser(ctx context.Context, u User) error {
	created, err := timeArg(u.CreatedAt)
	if err == nil && created == nil {
		err = errors.New("creation time is not set")
	}
	if err == nil {
		_, err = s.pool.Exec(ctx, `INSERT INTO users (`+userColumns+`) VALUES ($1, $2, $3, $4)`,
			u.ID, u.Name, u.PasswordHash, created)
		if uniqueViolation(err) {
			err = ErrExists
		}
	}
	if err != nil {
		return fmt.Errorf("create user %q: %w", u.Name, err)
	}
	return nil
}

// UserByName implements Store.
func (s *Postgres) UserByName(ctx context.Context, name string) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE lower(name) = lower($1)`, pgText(name)))
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("get user %q: %w", name, err)
	}
	return u, nil
}

// UserByID implements Store.
func (s *Postgres) UserByID(ctx context.Context, id string) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, pgText(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("get user %s: %w", id, err)
	}
	return u, nil
}

// ListUsers implements Store.
func (s *Postgres) ListUsers(ctx context.Context) ([]User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userColumns+` FROM users ORDER BY lower(name), id`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	users, err := collectRows(rows, scanUser)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return users, nil
}

// DeleteUser implements Store.
func (s *Postgres) DeleteUser(ctx context.Context, name string) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx,
		`DELETE FROM users WHERE lower(name) = lower($1) RETURNING `+userColumns, pgText(name)))
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("delete user %q: %w", name, err)
	}
	return u, nil
}

// ListAPIKeys implements Store.
func (s *Postgres) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	defer rows.Close()
	keys, err := collectRows(rows, scanAPIKey)
	if err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	return keys, nil
}

// RevokeAPIKey implements Store. The key and, for an admin key, every
// other valid admin key are locked before the count, so two coordinators
// revoking the last two admin keys at once cannot both succeed: the second
// waits, then no longer counts the first one's key.
func (s *Postgres) RevokeAPIKey(ctx context.Context, id string, at time.Time) (APIKey, error) {
	var k APIKey
	when, err := timeArg(at)
	if err == nil && when == nil {
		err = errors.New("revocation time is not set")
	}
	if err == nil {
		err = s.tx(ctx, func(tx pgx.Tx) error {
			var err error
			k, err = scanAPIKey(tx.QueryRow(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE id = $1 FOR UPDATE`, pgText(id)))
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			if err != nil || !k.RevokedAt.IsZero() {
				return err
			}
			if k.Admin {
				rows, err := tx.Query(ctx,
					`SELECT id FROM api_keys WHERE admin AND revoked_at IS NULL AND id <> $1 ORDER BY id FOR UPDATE`, k.ID)
				if err != nil {
					return err
				}
				others := 0
				for rows.Next() {
					others++
				}
				rows.Close()
				if err := rows.Err(); err != nil {
					return err
				}
				if others == 0 {
					return ErrLastAdminKey
				}
			}
			if _, err := tx.Exec(ctx, `UPDATE api_keys SET revoked_at = $1 WHERE id = $2`, when, k.ID); err != nil {
				return err
			}
			k.RevokedAt = time.Unix(0, at.UnixNano()).UTC()
			return nil
		})
	}
	if err != nil {
		return APIKey{}, fmt.Errorf("revoke API key %s: %w", id, err)
	}
	return k, nil
}

// DeleteToken implements Store.
func (s *Postgres) DeleteToken(ctx context.Context, id string) error {
	if err := pgTag(s.pool.Exec(ctx, `DELETE FROM tokens WHERE id = $1`, pgText(id))); err != nil {
		return fmt.Errorf("delete token %s: %w", id, err)
	}
	return nil
}
