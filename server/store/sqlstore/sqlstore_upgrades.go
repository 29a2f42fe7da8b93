package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

// AddAgentPackage implements Store.
func (s *sqlStore) AddAgentPackage(ctx context.Context, p store.AgentPackage) error {
	at, err := requiredTime(p.UploadedAt, "upload time")
	if err == nil {
		// As in AddBundle, the conflict decides between coordinators.
		err = insertNew(s.w.ExecContext(ctx, `INSERT INTO agent_packages (version, os, arch, sha256, size, signature, uploaded_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (version, os, arch) DO NOTHING`,
			p.Version, p.OS, p.Arch, p.SHA256, p.Size, s.d.sigArg(p.Signature), at))
	}
	if err != nil {
		return fmt.Errorf("add agent package %s %s/%s: %w", p.Version, p.OS, p.Arch, err)
	}
	return nil
}

const agentPackageColumns = `version, os, arch, sha256, size, signature, uploaded_at`

func (s *sqlStore) scanAgentPackage(sc scanner) (store.AgentPackage, error) {
	var p store.AgentPackage
	var sig []byte
	var at sql.NullInt64
	err := sc.Scan(&p.Version, &p.OS, &p.Arch, &p.SHA256, &p.Size, &sig, &at)
	if err != nil {
		return store.AgentPackage{}, err
	}
	if p.Signature, err = s.d.sigValue(sig); err != nil {
		return store.AgentPackage{}, fmt.Errorf("signature of %s %s/%s: %w", p.Version, p.OS, p.Arch, err)
	}
	p.UploadedAt = fromNanos(at)
	return p, nil
}

// AgentPackage implements Store.
func (s *sqlStore) AgentPackage(ctx context.Context, version, os, arch string) (store.AgentPackage, error) {
	p, err := queryOne(ctx, s.r, s.scanAgentPackage, `SELECT `+agentPackageColumns+` FROM agent_packages
		WHERE version = ? AND os = ? AND arch = ?`, version, os, arch)
	if err != nil {
		return store.AgentPackage{}, fmt.Errorf("agent package %s %s/%s: %w", version, os, arch, err)
	}
	return p, nil
}

// AgentPackages implements Store.
func (s *sqlStore) AgentPackages(ctx context.Context) ([]store.AgentPackage, error) {
	out, err := queryRows(ctx, s.r, s.scanAgentPackage, `SELECT `+agentPackageColumns+` FROM agent_packages`)
	if err != nil {
		return nil, fmt.Errorf("list agent packages: %w", err)
	}
	return out, nil
}

// CreateRollout implements Store. Reasons PostgreSQL cannot store (NUL
// bytes, invalid UTF-8) are stored there with U+FFFD in their place.
func (s *sqlStore) CreateRollout(ctx context.Context, r store.Rollout, agents []store.RolloutAgent) error {
	if err := s.createRollout(ctx, r, agents); err != nil {
		return fmt.Errorf("create rollout %s: %w", r.ID, err)
	}
	return nil
}

func (s *sqlStore) createRollout(ctx context.Context, r store.Rollout, agents []store.RolloutAgent) error {
	created, err := requiredTime(r.CreatedAt, "creation time")
	if err != nil {
		return err
	}
	finished, err := timeArg(r.FinishedAt)
	if err != nil {
		return err
	}
	rows := make([][]any, 0, len(agents))
	for _, a := range agents {
		at, err := requiredTime(a.UpdatedAt, "agent "+a.AgentName+": update time")
		if err != nil {
			return err
		}
		rows = append(rows, []any{r.ID, a.AgentID, a.AgentName, a.FromVersion, a.Position, a.Batch,
			a.State, s.d.text(a.Reason), at})
	}
	return s.tx(ctx, func(tx *sqlTx) error {
		if r.State == api.RolloutRunning {
			// Under the lock, two rollouts starting on the same agents at
			// once cannot both pass the check.
			if err := tx.d.lock(ctx, tx, lockRollouts); err != nil {
				return err
			}
			if err := checkNotInRollout(ctx, tx, agents); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO rollouts (id, target_environment, version, batch, max_failures,
			allow_downgrade, grace_seconds, state, reason, created_at, finished_at, node, named_agents)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ID, r.Environment, r.Version, r.Batch, r.MaxFailures, r.AllowDowngrade, r.GraceSeconds,
			r.State, tx.d.text(r.Reason), created, finished, nullString(r.Node), r.NamedAgents); err != nil {
			return err
		}
		return tx.d.execMany(ctx, tx, `INSERT INTO rollout_agents (rollout_id, agent_id, agent_name, from_version,
			position, batch_index, state, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			rows, func(i int) string { return "agent " + agents[i].AgentName })
	})
}

// checkNotInRollout refuses agents that a running rollout holds.
func checkNotInRollout(ctx context.Context, tx *sqlTx, agents []store.RolloutAgent) error {
	if len(agents) == 0 {
		return nil
	}
	args := []any{api.RolloutRunning}
	for _, a := range agents {
		args = append(args, a.AgentID)
	}
	names, err := queryRows(ctx, tx, func(sc scanner) (n string, err error) { return n, sc.Scan(&n) },
		`SELECT DISTINCT ra.agent_name FROM rollout_agents ra
		JOIN rollouts r ON r.id = ra.rollout_id WHERE r.state = ? AND ra.agent_id IN (`+marks(len(agents))+`)
		ORDER BY ra.agent_name`, args...)
	if err != nil {
		return err
	}
	if len(names) > 0 {
		return fmt.Errorf("%w: %s", store.ErrInRollout, strings.Join(names, ", "))
	}
	return nil
}

const rolloutColumns = `id, target_environment, version, batch, max_failures, allow_downgrade, grace_seconds,
	state, reason, created_at, finished_at, node, named_agents`

func scanRollout(sc scanner) (store.Rollout, error) {
	var r store.Rollout
	var created, finished sql.NullInt64
	var node sql.NullString
	if err := sc.Scan(&r.ID, &r.Environment, &r.Version, &r.Batch, &r.MaxFailures, &r.AllowDowngrade, &r.GraceSeconds,
		&r.State, &r.Reason, &created, &finished, &node, &r.NamedAgents); err != nil {
		return store.Rollout{}, err
	}
	r.Node = node.String
	r.CreatedAt, r.FinishedAt = fromNanos(created), fromNanos(finished)
	return r, nil
}

// Rollout implements Store.
func (s *sqlStore) Rollout(ctx context.Context, id string) (store.Rollout, error) {
	r, err := queryOne(ctx, s.r, scanRollout, `SELECT `+rolloutColumns+` FROM rollouts WHERE id = ?`, id)
	if err != nil {
		return store.Rollout{}, fmt.Errorf("rollout %s: %w", id, err)
	}
	return r, nil
}

// Rollouts implements Store.
func (s *sqlStore) Rollouts(ctx context.Context, runningOnly bool, limit int) ([]store.Rollout, error) {
	if limit <= 0 {
		limit = 100
	}
	q := `SELECT ` + rolloutColumns + ` FROM rollouts`
	var args []any
	if runningOnly {
		q, args = q+` WHERE state = ?`, append(args, api.RolloutRunning)
	}
	out, err := queryRows(ctx, s.r, scanRollout, q+` ORDER BY created_at DESC, id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	return out, nil
}

const rolloutAgentColumns = `ra.rollout_id, ra.agent_id, ra.agent_name, ra.from_version, ra.position, ra.batch_index,
	ra.state, ra.reason, ra.updated_at, ra.node`

// scanRolloutAgent reads one row of rolloutAgentColumns.
func scanRolloutAgent(sc scanner) (store.RolloutAgent, error) {
	var a store.RolloutAgent
	var at sql.NullInt64
	var node sql.NullString
	if err := sc.Scan(&a.RolloutID, &a.AgentID, &a.AgentName, &a.FromVersion, &a.Position, &a.Batch,
		&a.State, &a.Reason, &at, &node); err != nil {
		return store.RolloutAgent{}, err
	}
	a.UpdatedAt, a.Node = fromNanos(at), node.String
	return a, nil
}

// RolloutAgents implements Store.
func (s *sqlStore) RolloutAgents(ctx context.Context, rolloutID string) ([]store.RolloutAgent, error) {
	out, err := queryRows(ctx, s.hr, scanRolloutAgent, `SELECT `+rolloutAgentColumns+` FROM rollout_agents ra
		WHERE ra.rollout_id = ? ORDER BY ra.position`, rolloutID)
	if err != nil {
		return nil, fmt.Errorf("agents of rollout %s: %w", rolloutID, err)
	}
	return out, nil
}

// RunningRolloutAgents implements Store.
func (s *sqlStore) RunningRolloutAgents(ctx context.Context, agentID string) ([]store.RolloutAgent, error) {
	out, err := queryRows(ctx, s.hr, scanRolloutAgent, `SELECT `+rolloutAgentColumns+` FROM rollout_agents ra
		JOIN rollouts r ON r.id = ra.rollout_id WHERE ra.agent_id = ? AND r.state = ? ORDER BY r.created_at`,
		agentID, api.RolloutRunning)
	if err != nil {
		return nil, fmt.Errorf("running rollouts of agent %s: %w", agentID, err)
	}
	return out, nil
}

// RolloutAgent implements Store.
func (s *sqlStore) RolloutAgent(ctx context.Context, rolloutID, agentID string) (store.RolloutAgent, error) {
	a, err := queryOne(ctx, s.hr, scanRolloutAgent, `SELECT `+rolloutAgentColumns+` FROM rollout_agents ra
		WHERE ra.rollout_id = ? AND ra.agent_id = ?`, rolloutID, agentID)
	if err != nil {
		return store.RolloutAgent{}, fmt.Errorf("agent %s of rollout %s: %w", agentID, rolloutID, err)
	}
	return a, nil
}

// SetRolloutAgentState implements Store. The UPDATE's condition is checked
// against the row as it is once locked, so of two coordinators racing to
// move one agent, exactly one sees its compare-and-set succeed.
func (s *sqlStore) SetRolloutAgentState(ctx context.Context, rolloutID, agentID string, from []string, to, reason string, at time.Time) (bool, error) {
	changed := false
	ts, err := requiredTime(at, "time")
	if err == nil {
		err = s.tx(ctx, func(tx *sqlTx) error {
			q := `UPDATE rollout_agents SET state = ?, reason = ?, updated_at = ? WHERE rollout_id = ? AND agent_id = ?`
			args := []any{to, tx.d.text(reason), ts, rolloutID, agentID}
			if len(from) > 0 {
				q, args = q+` AND state IN (`+marks(len(from))+`)`, append(args, anys(from)...)
			}
			n, err := affected(tx.ExecContext(ctx, q, args...))
			if err != nil || n > 0 {
				changed = n > 0
				return err
			}
			found, err := exists(ctx, tx, `SELECT 1 FROM rollout_agents WHERE rollout_id = ? AND agent_id = ?`, rolloutID, agentID)
			if err == nil && !found {
				err = store.ErrNotFound
			}
			return err
		})
	}
	if err != nil {
		return false, fmt.Errorf("set state of agent %s in rollout %s: %w", agentID, rolloutID, err)
	}
	return changed, nil
}

// FinishRollout implements Store.
func (s *sqlStore) FinishRollout(ctx context.Context, id, state, reason string, at time.Time) error {
	ts, err := timeArg(at)
	if err == nil {
		err = oneRow(s.w.ExecContext(ctx, `UPDATE rollouts SET state = ?, reason = ?, finished_at = ? WHERE id = ?`,
			state, s.d.text(reason), ts, id))
	}
	if err != nil {
		return fmt.Errorf("finish rollout %s: %w", id, err)
	}
	return nil
}
