package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Policy implements Store.
func (s *Postgres) Policy(ctx context.Context) (Policy, error) {
	var p Policy
	var ns int64
	var updated sql.NullInt64
	err := s.pool.QueryRow(ctx, `SELECT `+policyColumns+` FROM machine_policy WHERE id = 1`).
		Scan(&ns, &p.CalamariKeep, &p.UpgradeBatch, &p.UpgradeMaxFailures, &p.SetBy, &updated)
	if err != nil {
		return Policy{}, fmt.Errorf("get machine policy: %w", err)
	}
	p.HealthInterval, p.UpdatedAt = time.Duration(ns), fromNanos(updated)
	return p, nil
}

// SetPolicy implements Store.
func (s *Postgres) SetPolicy(ctx context.Context, p Policy) error {
	err := p.Validate()
	var updated any
	if err == nil {
		updated, err = timeArg(p.UpdatedAt)
	}
	if err == nil {
		_, err = s.pool.Exec(ctx, `UPDATE machine_policy SET health_interval_ns = $1, calamari_keep = $2,
			upgrade_batch = $3, upgrade_max_failures = $4, set_by = $5, updated_at = $6 WHERE id = 1`,
			int64(p.HealthInterval), p.CalamariKeep, p.UpgradeBatch, p.UpgradeMaxFailures, p.SetBy, updated)
	}
	if err != nil {
		return fmt.Errorf("set machine policy: %w", err)
	}
	return nil
}
