package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Policy implements Store.
func (s *SQLite) Policy(ctx context.Context) (Policy, error) {
	var p Policy
	var ns int64
	var updated sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT `+policyColumns+` FROM machine_policy WHERE id = 1`).
		Scan(&ns, &p.CalamariKeep, &p.UpgradeBatch, &p.UpgradeMaxFailures, &p.SetBy, &updated)
	if err != nil {
		return Policy{}, fmt.Errorf("get machine policy: %w", err)
	}
	p.HealthInterval, p.UpdatedAt = time.Duration(ns), fromNanos(updated)
	return p, nil
}

// SetPolicy implements Store.
func (s *SQLite) SetPolicy(ctx context.Context, p Policy) error {
	err := p.Validate()
	var updated any
	if err == nil {
		updated, err = timeArg(p.UpdatedAt)
	}
	if err == nil {
		_, err = s.w.ExecContext(ctx, `UPDATE machine_policy SET health_interval_ns = ?, calamari_keep = ?,
			upgrade_batch = ?, upgrade_max_failures = ?, set_by = ?, updated_at = ? WHERE id = 1`,
			int64(p.HealthInterval), p.CalamariKeep, p.UpgradeBatch, p.UpgradeMaxFailures, p.SetBy, updated)
	}
	if err != nil {
		return fmt.Errorf("set machine policy: %w", err)
	}
	return nil
}
