package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

const nodeColumns = `id, name, advertise, http, version, started_at, heartbeat_at, heartbeat_every, stopped_at, draining, dials, answers`

// scanNode reads one row of nodeColumns; now is the database's clock, in
// unix nanoseconds, to compute the heartbeat's age.
func scanNode(sc scanner, now int64, extra ...any) (store.Node, error) {
	var n store.Node
	var started, beat, every int64
	var stopped sql.NullInt64
	dest := append([]any{&n.ID, &n.Name, &n.Advertise, &n.HTTP, &n.Version, &started, &beat, &every, &stopped, &n.Draining, &n.Dials, &n.Answers}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return store.Node{}, err
	}
	n.StartedAt = time.Unix(0, started).UTC()
	n.Heartbeat = time.Unix(0, beat).UTC()
	n.HeartbeatAge = time.Duration(now - beat)
	n.HeartbeatEvery = time.Duration(every)
	n.StoppedAt = fromNanos(stopped)
	return n, nil
}

// RegisterNode implements Store. On a database that is not shared (SQLite)
// every earlier row is the one coordinator's earlier run, that of its data
// folder, and is replaced whether or not it looks alive (a run killed a
// moment ago does), so that a restart never waits.
func (s *sqlStore) RegisterNode(ctx context.Context, n store.Node) (store.Node, error) {
	started, err := requiredTime(n.StartedAt, "start time")
	if err != nil {
		return store.Node{}, fmt.Errorf("register node %s: %w", n.Name, err)
	}
	out := n
	err = s.tx(ctx, func(tx *sqlTx) error {
		out = n
		if err := tx.d.lock(ctx, tx, lockNodes); err != nil {
			return err
		}
		now, err := tx.d.clock(ctx, tx)
		if err != nil {
			return err
		}
		prev, err := queryRows(ctx, tx, func(sc scanner) (store.Node, error) { return scanNode(sc, now) },
			`SELECT `+nodeColumns+` FROM nodes WHERE name = ? ORDER BY started_at`, n.Name)
		if err != nil {
			return err
		}
		for _, p := range prev {
			if p.ID == n.ID {
				return fmt.Errorf("node id %s: %w", n.ID, store.ErrExists)
			}
			if tx.d.shared() && p.Alive() {
				return fmt.Errorf("node %s started %s, last heartbeat %s ago: %w",
					p.Name, p.StartedAt.Format(time.RFC3339), p.HeartbeatAge.Round(time.Millisecond), store.ErrNodeAlive)
			}
		}
		if len(prev) > 0 {
			out.Draining = prev[len(prev)-1].Draining
		}
		clear, del, args := `UPDATE agents SET node = NULL WHERE node IN (SELECT id FROM nodes WHERE name = ?)`,
			`DELETE FROM nodes WHERE name = ?`, []any{n.Name}
		if !tx.d.shared() {
			clear, del, args = `UPDATE agents SET node = NULL WHERE node IS NOT NULL`, `DELETE FROM nodes`, nil
		}
		if _, err := tx.ExecContext(ctx, clear, args...); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, del, args...); err != nil {
			return err
		}
		out.Heartbeat, out.HeartbeatAge = time.Unix(0, now).UTC(), 0
		_, err = tx.ExecContext(ctx, `INSERT INTO nodes (`+nodeColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)`,
			n.ID, n.Name, n.Advertise, n.HTTP, n.Version, started, now, int64(n.HeartbeatEvery), out.Draining, n.Dials, n.Answers)
		return err
	})
	if err != nil {
		return store.Node{}, fmt.Errorf("register node %s: %w", n.Name, err)
	}
	return out, nil
}

// HeartbeatNode implements Store.
func (s *sqlStore) HeartbeatNode(ctx context.Context, id string) error {
	now, err := s.d.clock(ctx, s.w)
	if err == nil {
		err = oneRow(s.w.ExecContext(ctx, `UPDATE nodes SET heartbeat_at = ? WHERE id = ? AND stopped_at IS NULL`, now, id))
	}
	if err != nil {
		return fmt.Errorf("heartbeat of node %s: %w", id, err)
	}
	return nil
}

// StopNode implements Store.
func (s *sqlStore) StopNode(ctx context.Context, id string, at time.Time) error {
	ts, err := timeArg(at)
	if err == nil {
		err = s.tx(ctx, func(tx *sqlTx) error {
			if err := oneRow(tx.ExecContext(ctx, `UPDATE nodes SET stopped_at = ? WHERE id = ?`, ts, id)); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `UPDATE agents SET node = NULL WHERE node = ?`, id)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("stop node %s: %w", id, err)
	}
	return nil
}

// Nodes implements Store.
func (s *sqlStore) Nodes(ctx context.Context) ([]store.Node, error) {
	now, err := s.d.clock(ctx, s.r)
	var out []store.Node
	if err == nil {
		out, err = queryRows(ctx, s.r, func(sc scanner) (store.Node, error) {
			var agents, tasks, rollouts int
			n, err := scanNode(sc, now, &agents, &tasks, &rollouts)
			n.Agents, n.Tasks, n.Rollouts = agents, tasks, rollouts
			return n, err
		}, `SELECT `+nodeColumns+`,
			(SELECT count(*) FROM agents a WHERE a.node = n.id),
			(SELECT count(*) FROM tasks t WHERE t.state IN ('queued', 'running') AND t.node = n.id),
			(SELECT count(*) FROM rollouts r WHERE r.state = 'running' AND r.node = n.id)
			FROM nodes n ORDER BY name, started_at`)
	}
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}

// SetNodeDraining implements Store.
func (s *sqlStore) SetNodeDraining(ctx context.Context, id string, draining bool) error {
	if err := oneRow(s.w.ExecContext(ctx, `UPDATE nodes SET draining = ? WHERE id = ?`, draining, id)); err != nil {
		return fmt.Errorf("set draining of node %s: %w", id, err)
	}
	return nil
}

// PruneNodes implements Store.
func (s *sqlStore) PruneNodes(ctx context.Context, age time.Duration) (int, error) {
	var n int64
	err := s.tx(ctx, func(tx *sqlTx) error {
		now, err := tx.d.clock(ctx, tx)
		if err != nil {
			return err
		}
		cut := now - int64(age)
		if _, err := tx.ExecContext(ctx, `UPDATE agents SET node = NULL WHERE node IN (SELECT id FROM nodes WHERE heartbeat_at < ?)`, cut); err != nil {
			return err
		}
		n, err = affected(tx.ExecContext(ctx, `DELETE FROM nodes WHERE heartbeat_at < ?`, cut))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune nodes: %w", err)
	}
	return int(n), nil
}

// DisconnectAgent implements Store.
func (s *sqlStore) DisconnectAgent(ctx context.Context, id, node string, at time.Time) error {
	ts, err := timeArg(at)
	if err == nil {
		_, err = s.hw.ExecContext(ctx, `UPDATE agents SET last_seen = ?,
			node = CASE WHEN node = ? THEN NULL ELSE node END WHERE id = ?`, ts, node, id)
	}
	if err != nil {
		return fmt.Errorf("record disconnection of agent %s: %w", id, err)
	}
	return nil
}

// ClaimTask implements Store. The condition on the driver is checked
// against the row as it is once locked: of two nodes claiming at once,
// the second finds the first's claim and matches nothing.
func (s *sqlStore) ClaimTask(ctx context.Context, id, from, to string) (bool, error) {
	n, err := affected(s.w.ExecContext(ctx, `UPDATE tasks SET node = ?
		WHERE id = ? AND state IN (?, ?) AND node IS NOT DISTINCT FROM ?`,
		nullString(to), id, api.TaskQueued, api.TaskRunning, nullString(from)))
	if err != nil {
		return false, fmt.Errorf("claim task %s: %w", id, err)
	}
	return n > 0, nil
}

// ClaimRollout implements Store, as ClaimTask.
func (s *sqlStore) ClaimRollout(ctx context.Context, id, from, to string) (bool, error) {
	n, err := affected(s.w.ExecContext(ctx, `UPDATE rollouts SET node = ?
		WHERE id = ? AND state = ? AND node IS NOT DISTINCT FROM ?`,
		nullString(to), id, api.RolloutRunning, nullString(from)))
	if err != nil {
		return false, fmt.Errorf("claim rollout %s: %w", id, err)
	}
	return n > 0, nil
}

// SetRolloutAgentNode implements Store, as ClaimTask.
func (s *sqlStore) SetRolloutAgentNode(ctx context.Context, rolloutID, agentID string, from []string, fromNode, to, toNode, reason string, at time.Time) (bool, error) {
	ts, err := timeArg(at)
	if err == nil && (ts == nil || len(from) == 0) {
		err = errors.New("no time or no state to move from")
	}
	var n int64
	if err == nil {
		args := append([]any{to, s.d.text(reason), ts, nullString(toNode), rolloutID, agentID, nullString(fromNode)}, anys(from)...)
		n, err = affected(s.w.ExecContext(ctx, `UPDATE rollout_agents SET state = ?, reason = ?, updated_at = ?, node = ?
			WHERE rollout_id = ? AND agent_id = ? AND node IS NOT DISTINCT FROM ? AND state IN (`+marks(len(from))+`)`, args...))
	}
	if err != nil {
		return false, fmt.Errorf("set state of agent %s in rollout %s: %w", agentID, rolloutID, err)
	}
	return n > 0, nil
}

// BlobInfo implements Store.
func (s *sqlStore) BlobInfo(ctx context.Context, key string) (store.Blob, error) {
	b, err := queryOne(ctx, s.r, scanBlob(key), `SELECT sha256, size, stored_at FROM blobs WHERE key = ?`, key)
	if err != nil {
		return store.Blob{}, fmt.Errorf("blob %s: %w", key, err)
	}
	return b, nil
}

// scanBlob reads sha256, size and stored_at, then extra, of the blob key.
func scanBlob(key string, extra ...any) func(scanner) (store.Blob, error) {
	return func(sc scanner) (store.Blob, error) {
		b := store.Blob{Key: key}
		var at sql.NullInt64
		err := sc.Scan(append([]any{&b.SHA256, &b.Size, &at}, extra...)...)
		b.StoredAt = fromNanos(at)
		return b, err
	}
}

// blobToStore checks, before a PutBlob reads anything, that b is not
// stored yet and has a time; it returns the time as stored.
func (s *sqlStore) blobToStore(ctx context.Context, b store.Blob) (at any, stored bool, err error) {
	if _, err := s.BlobInfo(ctx, b.Key); err == nil || !errors.Is(err, store.ErrNotFound) {
		return nil, err == nil, err
	}
	at, err = requiredTime(b.StoredAt, "storage time")
	return at, false, err
}
