package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

// policyColumns are the machine policy's columns, in the order scanned.
const policyColumns = `health_interval_ns, calamari_keep, upgrade_batch, upgrade_max_failures, set_by, updated_at, work_keep, work_min_free`

const userColumns = `id, name, password_hash, created_at, role, environments`

func scanUser(sc scanner) (store.User, error) {
	var u store.User
	var created sql.NullInt64
	var envs string
	if err := sc.Scan(&u.ID, &u.Name, &u.PasswordHash, &created, &u.Role, &envs); err != nil {
		return store.User{}, err
	}
	u.CreatedAt = fromNanos(created)
	if err := json.Unmarshal([]byte(envs), &u.Environments); err != nil {
		return store.User{}, fmt.Errorf("user %s: environments: %w", u.ID, err)
	}
	u.Environments = emptyNil(u.Environments)
	return u, nil
}

// CreateUser implements Store. The unique index on lower(name) decides
// between coordinators creating the same user at once.
func (s *sqlStore) CreateUser(ctx context.Context, u store.User) error {
	created, err := requiredTime(u.CreatedAt, "creation time")
	var envs string
	if err == nil {
		envs, err = roleArgs(u.Role, u.Environments)
	}
	if err == nil {
		_, err = s.w.ExecContext(ctx, `INSERT INTO users (`+userColumns+`) VALUES (?, ?, ?, ?, ?, ?)`,
			u.ID, u.Name, u.PasswordHash, created, string(u.Role), envs)
		if s.d.uniqueViolation(err) {
			err = store.ErrExists
		}
	}
	if err != nil {
		return fmt.Errorf("create user %q: %w", u.Name, err)
	}
	return nil
}

// UserByName implements Store.
func (s *sqlStore) UserByName(ctx context.Context, name string) (store.User, error) {
	u, err := queryOne(ctx, s.r, scanUser, `SELECT `+userColumns+` FROM users WHERE lower(name) = lower(?)`, s.d.text(name))
	if err != nil {
		return store.User{}, fmt.Errorf("get user %q: %w", name, err)
	}
	return u, nil
}

// UserByID implements Store.
func (s *sqlStore) UserByID(ctx context.Context, id string) (store.User, error) {
	u, err := queryOne(ctx, s.r, scanUser, `SELECT `+userColumns+` FROM users WHERE id = ?`, s.d.text(id))
	if err != nil {
		return store.User{}, fmt.Errorf("get user %s: %w", id, err)
	}
	return u, nil
}

// ListUsers implements Store.
func (s *sqlStore) ListUsers(ctx context.Context) ([]store.User, error) {
	users, err := queryRows(ctx, s.r, scanUser, `SELECT `+userColumns+` FROM users ORDER BY lower(name), id`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return users, nil
}

// DeleteUser implements Store.
func (s *sqlStore) DeleteUser(ctx context.Context, name string) (store.User, error) {
	u, err := queryOne(ctx, s.w, scanUser,
		`DELETE FROM users WHERE lower(name) = lower(?) RETURNING `+userColumns, s.d.text(name))
	if err != nil {
		return store.User{}, fmt.Errorf("delete user %q: %w", name, err)
	}
	return u, nil
}

const apiKeyColumns = `id, name, hash, created_at, revoked_at, admin, role, environments`

func scanAPIKey(sc scanner) (store.APIKey, error) {
	var k store.APIKey
	var created, revoked sql.NullInt64
	var envs string
	if err := sc.Scan(&k.ID, &k.Name, &k.Hash, &created, &revoked, &k.Admin, &k.Role, &envs); err != nil {
		return store.APIKey{}, err
	}
	k.CreatedAt, k.RevokedAt = fromNanos(created), fromNanos(revoked)
	if err := json.Unmarshal([]byte(envs), &k.Environments); err != nil {
		return store.APIKey{}, fmt.Errorf("API key %s: environments: %w", k.ID, err)
	}
	k.Environments = emptyNil(k.Environments)
	return k, nil
}

// emptyNil is nil for an empty list: "[]" reads back as what was stored
// without environments.
func emptyNil(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	return l
}

// roleArgs checks a role before it is stored and encodes its
// environments: a credential with no role, or one the code does not know,
// would be refused everything or, worse, read as another role later.
func roleArgs(role api.Role, environments []string) (string, error) {
	if _, err := api.ParseRole(string(role)); err != nil {
		return "", err
	}
	return listArg(environments)
}

// ListAPIKeys implements Store.
func (s *sqlStore) ListAPIKeys(ctx context.Context) ([]store.APIKey, error) {
	keys, err := queryRows(ctx, s.r, scanAPIKey, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	return keys, nil
}

// RevokeAPIKey implements Store. The key and, for an admin key, every
// other valid admin key are locked before they are counted, so two
// coordinators revoking the last two admin keys at once cannot both
// succeed: the second waits, then no longer counts the first one's key.
func (s *sqlStore) RevokeAPIKey(ctx context.Context, id string, at time.Time) (store.APIKey, error) {
	var k store.APIKey
	when, err := requiredTime(at, "revocation time")
	if err == nil {
		err = s.tx(ctx, func(tx *sqlTx) error {
			var err error
			k, err = queryOne(ctx, tx, scanAPIKey, `SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ?`+tx.d.forUpdate(), tx.d.text(id))
			if err != nil || !k.RevokedAt.IsZero() {
				return err
			}
			if k.Admin {
				others, err := queryRows(ctx, tx, func(sc scanner) (id string, err error) { return id, sc.Scan(&id) },
					`SELECT id FROM api_keys WHERE admin = ? AND revoked_at IS NULL AND id <> ? ORDER BY id`+tx.d.forUpdate(), true, k.ID)
				if err != nil {
					return err
				}
				if len(others) == 0 {
					return store.ErrLastAdminKey
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at = ? WHERE id = ?`, when, k.ID); err != nil {
				return err
			}
			k.RevokedAt = time.Unix(0, at.UnixNano()).UTC()
			return nil
		})
	}
	if err != nil {
		return store.APIKey{}, fmt.Errorf("revoke API key %s: %w", id, err)
	}
	return k, nil
}

// DeleteToken implements Store.
func (s *sqlStore) DeleteToken(ctx context.Context, id string) error {
	if err := oneRow(s.w.ExecContext(ctx, `DELETE FROM tokens WHERE id = ?`, s.d.text(id))); err != nil {
		return fmt.Errorf("delete token %s: %w", id, err)
	}
	return nil
}

// Policy implements Store.
func (s *sqlStore) Policy(ctx context.Context) (store.Policy, error) {
	var p store.Policy
	var ns int64
	var updated sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT `+policyColumns+` FROM machine_policy WHERE id = 1`).
		Scan(&ns, &p.CalamariKeep, &p.UpgradeBatch, &p.UpgradeMaxFailures, &p.SetBy, &updated, &p.WorkKeep, &p.WorkMinFree)
	if err != nil {
		return store.Policy{}, fmt.Errorf("get machine policy: %w", err)
	}
	p.HealthInterval, p.UpdatedAt = time.Duration(ns), fromNanos(updated)
	return p, nil
}

// SetPolicy implements Store.
func (s *sqlStore) SetPolicy(ctx context.Context, p store.Policy) error {
	err := p.Validate()
	var updated any
	if err == nil {
		updated, err = timeArg(p.UpdatedAt)
	}
	if err == nil {
		_, err = s.w.ExecContext(ctx, `UPDATE machine_policy SET health_interval_ns = ?, calamari_keep = ?,
			upgrade_batch = ?, upgrade_max_failures = ?, set_by = ?, updated_at = ?,
			work_keep = ?, work_min_free = ? WHERE id = 1`,
			int64(p.HealthInterval), p.CalamariKeep, p.UpgradeBatch, p.UpgradeMaxFailures, p.SetBy, updated,
			p.WorkKeep, p.WorkMinFree)
	}
	if err != nil {
		return fmt.Errorf("set machine policy: %w", err)
	}
	return nil
}
