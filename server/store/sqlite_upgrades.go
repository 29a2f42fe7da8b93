package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// AddAgentPackage implements Store.
func (s *SQLite) AddAgentPackage(ctx context.Context, p AgentPackage) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM agent_packages WHERE version = ? AND os = ? AND arch = ?`,
			p.Version, p.OS, p.Arch).Scan(&one)
		if err == nil {
			return ErrExists
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		at, err := timeArg(p.UploadedAt)
		if err != nil {
			return err
		}
		if at == nil {
			return errors.New("no upload time")
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO agent_packages (version, os, arch, sha256, size, signature, uploaded_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, p.Version, p.OS, p.Arch, p.SHA256, p.Size, hex.EncodeToString(p.Signature), at)
		return err
	})
	if err != nil {
		return fmt.Errorf("add agent package %s %s/%s: %w", p.Version, p.OS, p.Arch, err)
	}
	return nil
}

const agentPackageColumns = `version, os, arch, sha256, size, signature, uploaded_at`

func scanAgentPackage(sc scanner) (AgentPackage, error) {
	var p AgentPackage
	var sig string
	var at sql.NullInt64
	if err := sc.Scan(&p.Version, &p.OS, &p.Arch, &p.SHA256, &p.Size, &sig, &at); err != nil {
		return AgentPackage{}, err
	}
	raw, err := hex.DecodeString(sig)
	if err != nil {
		return AgentPackage{}, fmt.Errorf("signature of %s %s/%s: %w", p.Version, p.OS, p.Arch, err)
	}
	p.Signature, p.UploadedAt = raw, fromNanos(at)
	return p, nil
}

// AgentPackage implements Store.
func (s *SQLite) AgentPackage(ctx context.Context, version, os, arch string) (AgentPackage, error) {
	p, err := scanAgentPackage(s.r.QueryRowContext(ctx, `SELECT `+agentPackageColumns+` FROM agent_packages
		WHERE version = ? AND os = ? AND arch = ?`, version, os, arch))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return AgentPackage{}, fmt.Errorf("agent package %s %s/%s: %w", version, os, arch, err)
	}
	return p, nil
}

// AgentPackages implements Store.
func (s *SQLite) AgentPackages(ctx context.Context) ([]AgentPackage, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+agentPackageColumns+` FROM agent_packages`)
	if err != nil {
		return nil, fmt.Errorf("list agent packages: %w", err)
	}
	defer rows.Close()
	out, err := collectRows(rows, scanAgentPackage)
	if err != nil {
		return nil, fmt.Errorf("list agent packages: %w", err)
	}
	return out, nil
}

// CreateRollout implements Store.
func (s *SQLite) CreateRollout(ctx context.Context, r Rollout, agents []RolloutAgent) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		created, err := timeArg(r.CreatedAt)
		if err != nil {
			return err
		}
		if created == nil {
			return errors.New("no creation time")
		}
		finished, err := timeArg(r.FinishedAt)
		if err != nil {
			return err
		}
		if r.State == RolloutRunning {
			// Behind SQLite's single writer the check and the insert
			// cannot interleave with another rollout's.
			if err := checkNotInRollout(ctx, tx, agents); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO rollouts (id, target_environment, version, batch, max_failures,
			allow_downgrade, grace_seconds, state, reason, created_at, finished_at, node, named_agents)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ID, r.Environment, r.Version, r.Batch, r.MaxFailures, r.AllowDowngrade, r.GraceSeconds,
			r.State, r.Reason, created, finished, nullString(r.Node), r.NamedAgents); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO rollout_agents (rollout_id, agent_id, agent_name, from_version,
			position, batch_index, state, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, a := range agents {
			at, err := timeArg(a.UpdatedAt)
			if err != nil {
				return err
			}
			if at == nil {
				return fmt.Errorf("agent %s: no update time", a.AgentName)
			}
			if _, err := stmt.ExecContext(ctx, r.ID, a.AgentID, a.AgentName, a.FromVersion, a.Position, a.Batch,
				a.State, a.Reason, at); err != nil {
				return fmt.Errorf("agent %s: %w", a.AgentName, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create rollout %s: %w", r.ID, err)
	}
	return nil
}

const rolloutColumns = `id, target_environment, version, batch, max_failures, allow_downgrade, grace_seconds,
	state, reason, created_at, finished_at, node, named_agents`

func scanRollout(sc scanner) (Rollout, error) {
	var r Rollout
	var created, finished sql.NullInt64
	var node sql.NullString
	if err := sc.Scan(&r.ID, &r.Environment, &r.Version, &r.Batch, &r.MaxFailures, &r.AllowDowngrade, &r.GraceSeconds,
		&r.State, &r.Reason, &created, &finished, &node, &r.NamedAgents); err != nil {
		return Rollout{}, err
	}
	r.Node = node.String
	r.CreatedAt, r.FinishedAt = fromNanos(created), fromNanos(finished)
	return r, nil
}

// Rollout implements Store.
func (s *SQLite) Rollout(ctx context.Context, id string) (Rollout, error) {
	r, err := scanRollout(s.r.QueryRowContext(ctx, `SELECT `+rolloutColumns+` FROM rollouts WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Rollout{}, fmt.Errorf("rollout %s: %w", id, err)
	}
	return r, nil
}

// Rollouts implements Store.
func (s *SQLite) Rollouts(ctx context.Context, runningOnly bool, limit int) ([]Rollout, error) {
	if limit <= 0 {
		limit = 100
	}
	q := `SELECT ` + rolloutColumns + ` FROM rollouts`
	var args []any
	if runningOnly {
		q, args = q+` WHERE state = ?`, append(args, RolloutRunning)
	}
	q += ` ORDER BY created_at DESC, id LIMIT ?`
	rows, err := s.r.QueryContext(ctx, q, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	defer rows.Close()
	out, err := collectRows(rows, scanRollout)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	return out, nil
}

const rolloutAgentColumns = `ra.rollout_id, ra.agent_id, ra.agent_name, ra.from_version, ra.position, ra.batch_index,
	ra.state, ra.reason, ra.updated_at, ra.node`

func (s *SQLite) queryRolloutAgents(ctx context.Context, q string, args ...any) ([]RolloutAgent, error) {
	rows, err := s.pr.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return collectRows(rows, scanRolloutAgent)
}

// RolloutAgents implements Store.
func (s *SQLite) RolloutAgents(ctx context.Context, rolloutID string) ([]RolloutAgent, error) {
	out, err := s.queryRolloutAgents(ctx, `SELECT `+rolloutAgentColumns+` FROM rollout_agents ra
		WHERE ra.rollout_id = ? ORDER BY ra.position`, rolloutID)
	if err != nil {
		return nil, fmt.Errorf("agents of rollout %s: %w", rolloutID, err)
	}
	return out, nil
}

// RunningRolloutAgents implements Store.
func (s *SQLite) RunningRolloutAgents(ctx context.Context, agentID string) ([]RolloutAgent, error) {
	out, err := s.queryRolloutAgents(ctx, `SELECT `+rolloutAgentColumns+` FROM rollout_agents ra
		JOIN rollouts r ON r.id = ra.rollout_id WHERE ra.agent_id = ? AND r.state = ? ORDER BY r.created_at`,
		agentID, RolloutRunning)
	if err != nil {
		return nil, fmt.Errorf("running rollouts of agent %s: %w", agentID, err)
	}
	return out, nil
}

// SetRolloutAgentState implements Store.
func (s *SQLite) SetRolloutAgentState(ctx context.Context, rolloutID, agentID string, from []string, to, reason string, at time.Time) (bool, error) {
	changed := false
	err := s.write(ctx, func(tx *sql.Tx) error {
		ts, err := timeArg(at)
		if err != nil {
			return err
		}
		if ts == nil {
			return errors.New("no time given")
		}
		q := `UPDATE rollout_agents SET state = ?, reason = ?, updated_at = ? WHERE rollout_id = ? AND agent_id = ?`
		args := []any{to, reason, ts, rolloutID, agentID}
		if len(from) > 0 {
			q += ` AND state IN (?` + strings.Repeat(`, ?`, len(from)-1) + `)`
			for _, f := range from {
				args = append(args, f)
			}
		}
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n > 0 {
			changed = true
			return nil
		}
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM rollout_agents WHERE rollout_id = ? AND agent_id = ?`, rolloutID, agentID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("set state of agent %s in rollout %s: %w", agentID, rolloutID, err)
	}
	return changed, nil
}

// FinishRollout implements Store.
func (s *SQLite) FinishRollout(ctx context.Context, id, state, reason string, at time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ts, err := timeArg(at)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = ?, reason = ?, finished_at = ? WHERE id = ?`, state, reason, ts, id)
		if err != nil {
			return err
		}
		return oneRow(res)
	})
	if err != nil {
		return fmt.Errorf("finish rollout %s: %w", id, err)
	}
	return nil
}

// RolloutAgent implements Store.
func (s *SQLite) RolloutAgent(ctx context.Context, rolloutID, agentID string) (RolloutAgent, error) {
	out, err := s.queryRolloutAgents(ctx, `SELECT `+rolloutAgentColumns+` FROM rollout_agents ra
		WHERE ra.rollout_id = ? AND ra.agent_id = ?`, rolloutID, agentID)
	if err == nil && len(out) == 0 {
		err = ErrNotFound
	}
	if err != nil {
		return RolloutAgent{}, fmt.Errorf("agent %s of rollout %s: %w", agentID, rolloutID, err)
	}
	return out[0], nil
}

// checkNotInRollout refuses agents that a running rollout holds.
func checkNotInRollout(ctx context.Context, tx *sql.Tx, agents []RolloutAgent) error {
	if len(agents) == 0 {
		return nil
	}
	args := []any{RolloutRunning}
	marks := make([]string, len(agents))
	for i, a := range agents {
		marks[i] = "?"
		args = append(args, a.AgentID)
	}
	rows, err := tx.QueryContext(ctx, `SELECT DISTINCT ra.agent_name FROM rollout_agents ra
		JOIN rollouts r ON r.id = ra.rollout_id WHERE r.state = ? AND ra.agent_id IN (`+strings.Join(marks, ", ")+`)
		ORDER BY ra.agent_name`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return err
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(names) > 0 {
		return fmt.Errorf("%w: %s", ErrInRollout, strings.Join(names, ", "))
	}
	return nil
}

// scanRolloutAgent reads one row of rolloutAgentColumns.
func scanRolloutAgent(sc scanner) (RolloutAgent, error) {
	var a RolloutAgent
	var at sql.NullInt64
	var node sql.NullString
	if err := sc.Scan(&a.RolloutID, &a.AgentID, &a.AgentName, &a.FromVersion, &a.Position, &a.Batch,
		&a.State, &a.Reason, &at, &node); err != nil {
		return RolloutAgent{}, err
	}
	a.UpdatedAt, a.Node = fromNanos(at), node.String
	return a, nil
}
