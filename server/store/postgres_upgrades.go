package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// AddAgentPackage implements Store.
func (s *Postgres) AddAgentPackage(ctx context.Context, p AgentPackage) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var exists bool
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM agent_packages WHERE version = $1 AND os = $2 AND arch = $3)`,
			p.Version, p.OS, p.Arch).Scan(&exists)
		if err != nil {
			return err
		}
		if exists {
			return ErrExists
		}
		at, err := timeArg(p.UploadedAt)
		if err != nil {
			return err
		}
		if at == nil {
			return errors.New("no upload time")
		}
		// Another coordinator may have added it since the check.
		tag, err := tx.Exec(ctx, `INSERT INTO agent_packages (version, os, arch, sha256, size, signature, uploaded_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (version, os, arch) DO NOTHING`,
			p.Version, p.OS, p.Arch, p.SHA256, p.Size, nonNil(p.Signature), at)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrExists
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add agent package %s %s/%s: %w", p.Version, p.OS, p.Arch, err)
	}
	return nil
}

func pgScanAgentPackage(sc scanner) (AgentPackage, error) {
	var p AgentPackage
	var at sql.NullInt64
	if err := sc.Scan(&p.Version, &p.OS, &p.Arch, &p.SHA256, &p.Size, &p.Signature, &at); err != nil {
		return AgentPackage{}, err
	}
	p.UploadedAt = fromNanos(at)
	return p, nil
}

// AgentPackage implements Store.
func (s *Postgres) AgentPackage(ctx context.Context, version, os, arch string) (AgentPackage, error) {
	p, err := pgScanAgentPackage(s.pool.QueryRow(ctx, `SELECT `+agentPackageColumns+` FROM agent_packages
		WHERE version = $1 AND os = $2 AND arch = $3`, version, os, arch))
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return AgentPackage{}, fmt.Errorf("agent package %s %s/%s: %w", version, os, arch, err)
	}
	return p, nil
}

// AgentPackages implements Store.
func (s *Postgres) AgentPackages(ctx context.Context) ([]AgentPackage, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+agentPackageColumns+` FROM agent_packages`)
	if err != nil {
		return nil, fmt.Errorf("list agent packages: %w", err)
	}
	defer rows.Close()
	out, err := collectRows(rows, pgScanAgentPackage)
	if err != nil {
		return nil, fmt.Errorf("list agent packages: %w", err)
	}
	return out, nil
}

// CreateRollout implements Store. Reasons holding NUL bytes or invalid
// UTF-8 are stored with U+FFFD in their place.
func (s *Postgres) CreateRollout(ctx context.Context, r Rollout, agents []RolloutAgent) error {
	if err := s.createRollout(ctx, r, agents); err != nil {
		return fmt.Errorf("create rollout %s: %w", r.ID, err)
	}
	return nil
}

func (s *Postgres) createRollout(ctx context.Context, r Rollout, agents []RolloutAgent) error {
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
	rows := make([][]any, 0, len(agents))
	for _, a := range agents {
		at, err := timeArg(a.UpdatedAt)
		if err != nil {
			return err
		}
		if at == nil {
			return fmt.Errorf("agent %s: no update time", a.AgentName)
		}
		rows = append(rows, []any{r.ID, a.AgentID, a.AgentName, a.FromVersion, a.Position, a.Batch,
			a.State, pgText(a.Reason), at})
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		if r.State == RolloutRunning {
			// Serialized across coordinators, so two starting rollouts
			// on the same agents at once cannot both pass the check.
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockRollouts); err != nil {
				return err
			}
			ids := make([]string, len(agents))
			for i, a := range agents {
				ids[i] = a.AgentID
			}
			rows, err := tx.Query(ctx, `SELECT DISTINCT ra.agent_name FROM rollout_agents ra
				JOIN rollouts r ON r.id = ra.rollout_id WHERE r.state = $1 AND ra.agent_id = ANY($2)
				ORDER BY ra.agent_name`, RolloutRunning, ids)
			if err != nil {
				return err
			}
			names, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			if len(names) > 0 {
				return fmt.Errorf("%w: %s", ErrInRollout, strings.Join(names, ", "))
			}
		}
		// A new batch per attempt: sending one records state in it.
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO rollouts (id, target_environment, version, batch, max_failures,
			allow_downgrade, grace_seconds, state, reason, created_at, finished_at, node, named_agents)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			r.ID, r.Environment, r.Version, r.Batch, r.MaxFailures, r.AllowDowngrade, r.GraceSeconds,
			r.State, pgText(r.Reason), created, finished, nullString(r.Node), r.NamedAgents)
		for _, row := range rows {
			b.Queue(`INSERT INTO rollout_agents (rollout_id, agent_id, agent_name, from_version,
				position, batch_index, state, reason, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, row...)
		}
		return execBatch(ctx, tx, b, func(i int) string {
			if i == 0 {
				return "rollout"
			}
			return "agent " + agents[i-1].AgentName
		})
	})
}

// Rollout implements Store.
func (s *Postgres) Rollout(ctx context.Context, id string) (Rollout, error) {
	r, err := scanRollout(s.pool.QueryRow(ctx, `SELECT `+rolloutColumns+` FROM rollouts WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Rollout{}, fmt.Errorf("rollout %s: %w", id, err)
	}
	return r, nil
}

// Rollouts implements Store.
func (s *Postgres) Rollouts(ctx context.Context, runningOnly bool, limit int) ([]Rollout, error) {
	if limit <= 0 {
		limit = 100
	}
	q := `SELECT ` + rolloutColumns + ` FROM rollouts`
	args := []any{limit}
	if runningOnly {
		q, args = q+` WHERE state = $2`, append(args, RolloutRunning)
	}
	q += ` ORDER BY created_at DESC, id LIMIT $1`
	rows, err := s.pool.Query(ctx, q, args...)
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

func (s *Postgres) queryRolloutAgents(ctx context.Context, q string, args ...any) ([]RolloutAgent, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return collectRows(rows, scanRolloutAgent)
}

// RolloutAgents implements Store.
func (s *Postgres) RolloutAgents(ctx context.Context, rolloutID string) ([]RolloutAgent, error) {
	out, err := s.queryRolloutAgents(ctx, `SELECT `+rolloutAgentColumns+` FROM rollout_agents ra
		WHERE ra.rollout_id = $1 ORDER BY ra.position`, rolloutID)
	if err != nil {
		return nil, fmt.Errorf("agents of rollout %s: %w", rolloutID, err)
	}
	return out, nil
}

// RunningRolloutAgents implements Store.
func (s *Postgres) RunningRolloutAgents(ctx context.Context, agentID string) ([]RolloutAgent, error) {
	out, err := s.queryRolloutAgents(ctx, `SELECT `+rolloutAgentColumns+` FROM rollout_agents ra
		JOIN rollouts r ON r.id = ra.rollout_id WHERE ra.agent_id = $1 AND r.state = $2 ORDER BY r.created_at`,
		agentID, RolloutRunning)
	if err != nil {
		return nil, fmt.Errorf("running rollouts of agent %s: %w", agentID, err)
	}
	return out, nil
}

// SetRolloutAgentState implements Store. The UPDATE's condition is checked
// against the row as it is once locked, so of two coordinators racing to
// move one agent, exactly one sees its compare-and-set succeed.
func (s *Postgres) SetRolloutAgentState(ctx context.Context, rolloutID, agentID string, from []string, to, reason string, at time.Time) (bool, error) {
	changed, err := s.setRolloutAgentState(ctx, rolloutID, agentID, from, to, reason, at)
	if err != nil {
		return false, fmt.Errorf("set state of agent %s in rollout %s: %w", agentID, rolloutID, err)
	}
	return changed, nil
}

func (s *Postgres) setRolloutAgentState(ctx context.Context, rolloutID, agentID string, from []string, to, reason string, at time.Time) (bool, error) {
	ts, err := timeArg(at)
	if err != nil {
		return false, err
	}
	if ts == nil {
		return false, errors.New("no time given")
	}
	q := `UPDATE rollout_agents SET state = $1, reason = $2, updated_at = $3 WHERE rollout_id = $4 AND agent_id = $5`
	args := []any{to, pgText(reason), ts, rolloutID, agentID}
	if len(from) > 0 {
		q += ` AND state = ANY($6)`
		args = append(args, from)
	}
	tag, err := s.pool.Exec(ctx, q, args...)
	if err != nil {
		return false, err
	}
	if tag.RowsAffected() > 0 {
		return true, nil
	}
	var exists bool
	err = s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM rollout_agents WHERE rollout_id = $1 AND agent_id = $2)`,
		rolloutID, agentID).Scan(&exists)
	if err != nil {
		return false, err
	}
	if !exists {
		return false, ErrNotFound
	}
	return false, nil
}

// FinishRollout implements Store.
func (s *Postgres) FinishRollout(ctx context.Context, id, state, reason string, at time.Time) error {
	err := func() error {
		ts, err := timeArg(at)
		if err != nil {
			return err
		}
		return pgTag(s.pool.Exec(ctx, `UPDATE rollouts SET state = $1, reason = $2, finished_at = $3 WHERE id = $4`,
			state, pgText(reason), ts, id))
	}()
	if err != nil {
		return fmt.Errorf("finish rollout %s: %w", id, err)
	}
	return nil
}

// RolloutAgent implements Store.
func (s *Postgres) RolloutAgent(ctx context.Context, rolloutID, agentID string) (RolloutAgent, error) {
	out, err := s.queryRolloutAgents(ctx, `SELECT `+rolloutAgentColumns+` FROM rollout_agents ra
		WHERE ra.rollout_id = $1 AND ra.agent_id = $2`, rolloutID, agentID)
	if err == nil && len(out) == 0 {
		err = ErrNotFound
	}
	if err != nil {
		return RolloutAgent{}, fmt.Errorf("agent %s of rollout %s: %w", agentID, rolloutID, err)
	}
	return out[0], nil
}
