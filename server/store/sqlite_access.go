package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

const userColumns = `id, name, password_hash, created_at`

func scanUser(sc scanner) (User, error) {
	var u User
	var created sql.NullInt64
	if err := sc.Scan(&u.ID, &u.Name, &u.PasswordHash, &created); err != nil {
		return User{}, err
	}
	u.CreatedAt = fromNanos(created)
	return u, nil
}

// CreateUser implements Store.
func (s *SQLite) CreateUser(ctx context.Context, u User) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		created, err := timeArg(u.CreatedAt)
		if err != nil {
			return err
		}
		if created == nil {
			return errors.New("creation time is not set")
		}
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM users WHERE lower(name) = lower(?) OR id = ?`, u.Name, u.ID).Scan(&one)
		if err == nil {
			return ErrExists
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO users (`+userColumns+`) VALUES (?, ?, ?, ?)`,
			u.ID, u.Name, u.PasswordHash, created)
		return err
	})
	if err != nil {
		return fmt.Errorf("create user %q: %w", u.Name, err)
	}
	return nil
}

// UserByName implements Store.
func (s *SQLite) UserByName(ctx context.Context, name string) (User, error) {
	u, err := scanUser(s.r.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE lower(name) = lower(?)`, name))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("get user %q: %w", name, err)
	}
	return u, nil
}

// UserByID implements Store.
func (s *SQLite) UserByID(ctx context.Context, id string) (User, error) {
	u, err := scanUser(s.r.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("get user %s: %w", id, err)
	}
	return u, nil
}

// ListUsers implements Store.
func (s *SQLite) ListUsers(ctx context.Context) ([]User, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+userColumns+` FROM users ORDER BY lower(name), id`)
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
func (s *SQLite) DeleteUser(ctx context.Context, name string) (User, error) {
	var u User
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		u, err = scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE lower(name) = lower(?)`, name))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, u.ID)
		return err
	})
	if err != nil {
		return User{}, fmt.Errorf("delete user %q: %w", name, err)
	}
	return u, nil
}

const apiKeyColumns = `id, name, hash, created_at, revoked_at, admin`

func scanAPIKey(sc scanner) (APIKey, error) {
	var k APIKey
	var created, revoked sql.NullInt64
	if err := sc.Scan(&k.ID, &k.Name, &k.Hash, &created, &revoked, &k.Admin); err != nil {
		return APIKey{}, err
	}
	k.CreatedAt, k.RevokedAt = fromNanos(created), fromNanos(revoked)
	return k, nil
}

// ListAPIKeys implements Store.
func (s *SQLite) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY created_at DESC, id`)
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

// RevokeAPIKey implements Store.
func (s *SQLite) RevokeAPIKey(ctx context.Context, id string, at time.Time) (APIKey, error) {
	var k APIKey
	err := s.write(ctx, func(tx *sql.Tx) error {
		when, err := timeArg(at)
		if err != nil {
			return err
		}
		if when == nil {
			return errors.New("revocation time is not set")
		}
		k, err = scanAPIKey(tx.QueryRowContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil || !k.RevokedAt.IsZero() {
			return err
		}
		if k.Admin {
			var others int
			err := tx.QueryRowContext(ctx,
				`SELECT count(*) FROM api_keys WHERE admin = 1 AND revoked_at IS NULL AND id <> ?`, id).Scan(&others)
			if err != nil {
				return err
			}
			if others == 0 {
				return ErrLastAdminKey
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at = ? WHERE id = ?`, when, id); err != nil {
			return err
		}
		k.RevokedAt = time.Unix(0, at.UnixNano()).UTC()
		return nil
	})
	if err != nil {
		return APIKey{}, fmt.Errorf("revoke API key %s: %w", id, err)
	}
	return k, nil
}

// DeleteToken implements Store.
func (s *SQLite) DeleteToken(ctx context.Context, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM tokens WHERE id = ?`, id)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("delete token %s: %w", id, err)
	}
	return nil
}
