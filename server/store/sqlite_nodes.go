package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// listeners are the Listen callbacks of one SQLite store. An SQLite
// database has one coordinator, so a notification is a function call.
type listeners struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(string)
}

func (l *listeners) add(fn func(string)) (remove func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fns == nil {
		l.fns = make(map[int]func(string))
	}
	id := l.next
	l.next++
	l.fns[id] = fn
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.fns, id)
	}
}

func (l *listeners) call(payload string) {
	l.mu.Lock()
	fns := make([]func(string), 0, len(l.fns))
	for _, fn := range l.fns {
		fns = append(fns, fn)
	}
	l.mu.Unlock()
	for _, fn := range fns {
		fn(payload)
	}
}

const nodeColumns = `id, name, advertise, http, version, started_at, heartbeat_at, heartbeat_every, stopped_at, draining`

// scanNode reads one row of nodeColumns; now is the database's clock, in
// unix nanoseconds, to compute the heartbeat's age.
func scanNode(sc scanner, now int64, extra ...any) (Node, error) {
	var n Node
	var started, beat, every int64
	var stopped sql.NullInt64
	dest := append([]any{&n.ID, &n.Name, &n.Advertise, &n.HTTP, &n.Version, &started, &beat, &every, &stopped, &n.Draining}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return Node{}, err
	}
	n.StartedAt = time.Unix(0, started).UTC()
	n.Heartbeat = time.Unix(0, beat).UTC()
	n.HeartbeatAge = time.Duration(now - beat)
	n.HeartbeatEvery = time.Duration(every)
	n.StoppedAt = fromNanos(stopped)
	return n, nil
}

// RegisterNode implements Store. An SQLite database serves one
// coordinator, its data folder's: every earlier row is that coordinator's
// earlier run, and is replaced whether or not it looks alive (a run
// killed a moment ago does), so that a restart never waits.
func (s *SQLite) RegisterNode(ctx context.Context, n Node) (Node, error) {
	err := s.write(ctx, func(tx *sql.Tx) error {
		now := time.Now().UnixNano()
		rows, err := tx.QueryContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE name = ? ORDER BY started_at`, n.Name)
		if err != nil {
			return err
		}
		prev, err := collectRows(rows, func(sc scanner) (Node, error) { return scanNode(sc, now) })
		rows.Close()
		if err != nil {
			return err
		}
		for _, p := range prev {
			if p.ID == n.ID {
				return fmt.Errorf("node id %s: %w", n.ID, ErrExists)
			}
		}
		if len(prev) > 0 {
			n.Draining = prev[len(prev)-1].Draining
		}
		if _, err := tx.ExecContext(ctx, `UPDATE agents SET node = NULL WHERE node IS NOT NULL`); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM nodes`); err != nil {
			return err
		}
		started, err := timeArg(n.StartedAt)
		if err != nil {
			return err
		}
		if started == nil {
			return fmt.Errorf("node %s: no start time", n.Name)
		}
		n.Heartbeat, n.HeartbeatAge = time.Unix(0, now).UTC(), 0
		_, err = tx.ExecContext(ctx, `INSERT INTO nodes (`+nodeColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)`,
			n.ID, n.Name, n.Advertise, n.HTTP, n.Version, started, now, int64(n.HeartbeatEvery), n.Draining)
		return err
	})
	if err != nil {
		return Node{}, fmt.Errorf("register node %s: %w", n.Name, err)
	}
	return n, nil
}

// checkPrevious refuses to register n while another run of its name is
// alive.
func checkPrevious(n Node, prev []Node) error {
	for _, p := range prev {
		if p.ID == n.ID {
			return fmt.Errorf("node id %s: %w", n.ID, ErrExists)
		}
		if p.Alive() {
			return fmt.Errorf("node %s started %s, last heartbeat %s ago: %w",
				p.Name, p.StartedAt.Format(time.RFC3339), p.HeartbeatAge.Round(time.Millisecond), ErrNodeAlive)
		}
	}
	return nil
}

// HeartbeatNode implements Store.
func (s *SQLite) HeartbeatNode(ctx context.Context, id string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE nodes SET heartbeat_at = ? WHERE id = ? AND stopped_at IS NULL`, time.Now().UnixNano(), id)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("heartbeat of node %s: %w", id, err)
	}
	return nil
}

// StopNode implements Store.
func (s *SQLite) StopNode(ctx context.Context, id string, at time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ts, err := timeArg(at)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE nodes SET stopped_at = ? WHERE id = ?`, ts, id)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE agents SET node = NULL WHERE node = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("stop node %s: %w", id, err)
	}
	return nil
}

// nodesQuery lists nodes with their counts; the caller appends the clock.
const nodesQuery = `SELECT ` + nodeColumns + `,
	(SELECT count(*) FROM agents a WHERE a.node = n.id),
	(SELECT count(*) FROM tasks t WHERE t.state IN ('queued', 'running') AND t.node = n.id),
	(SELECT count(*) FROM rollouts r WHERE r.state = 'running' AND r.node = n.id)
	FROM nodes n ORDER BY name, started_at`

// Nodes implements Store.
func (s *SQLite) Nodes(ctx context.Context) ([]Node, error) {
	now := time.Now().UnixNano()
	rows, err := s.r.QueryContext(ctx, nodesQuery)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		var agents, tasks, rollouts int
		n, err := scanNode(rows, now, &agents, &tasks, &rollouts)
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		n.Agents, n.Tasks, n.Rollouts = agents, tasks, rollouts
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}

// SetNodeDraining implements Store.
func (s *SQLite) SetNodeDraining(ctx context.Context, id string, draining bool) error {
	res, err := s.w.ExecContext(ctx, `UPDATE nodes SET draining = ? WHERE id = ?`, draining, id)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("set draining of node %s: %w", id, err)
	}
	return nil
}

// PruneNodes implements Store.
func (s *SQLite) PruneNodes(ctx context.Context, age time.Duration) (int, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		cut := time.Now().UnixNano() - int64(age)
		if _, err := tx.ExecContext(ctx, `UPDATE agents SET node = NULL WHERE node IN (SELECT id FROM nodes WHERE heartbeat_at < ?)`, cut); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE heartbeat_at < ?`, cut)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune nodes: %w", err)
	}
	return int(n), nil
}

// DisconnectAgent implements Store.
func (s *SQLite) DisconnectAgent(ctx context.Context, id, node string, at time.Time) error {
	ts, err := timeArg(at)
	if err == nil {
		_, err = s.pw.ExecContext(ctx, `UPDATE agents SET last_seen = ?, node = CASE WHEN node = ? THEN NULL ELSE node END WHERE id = ?`, ts, node, id)
	}
	if err != nil {
		return fmt.Errorf("record disconnection of agent %s: %w", id, err)
	}
	return nil
}

// ClaimTask implements Store.
func (s *SQLite) ClaimTask(ctx context.Context, id, from, to string) (bool, error) {
	res, err := s.w.ExecContext(ctx, `UPDATE tasks SET node = ? WHERE id = ? AND state IN (?, ?) AND node IS ?`,
		nullString(to), id, TaskQueued, TaskRunning, nullString(from))
	n, err := affected(res, err)
	if err != nil {
		return false, fmt.Errorf("claim task %s: %w", id, err)
	}
	return n > 0, nil
}

// ClaimRollout implements Store.
func (s *SQLite) ClaimRollout(ctx context.Context, id, from, to string) (bool, error) {
	res, err := s.w.ExecContext(ctx, `UPDATE rollouts SET node = ? WHERE id = ? AND state = ? AND node IS ?`,
		nullString(to), id, RolloutRunning, nullString(from))
	n, err := affected(res, err)
	if err != nil {
		return false, fmt.Errorf("claim rollout %s: %w", id, err)
	}
	return n > 0, nil
}

// SetRolloutAgentNode implements Store.
func (s *SQLite) SetRolloutAgentNode(ctx context.Context, rolloutID, agentID string, from []string, fromNode, to, toNode, reason string, at time.Time) (bool, error) {
	ts, err := timeArg(at)
	if err != nil {
		return false, err
	}
	if ts == nil || len(from) == 0 {
		return false, fmt.Errorf("set rollout %s agent %s: no time or no state to move from", rolloutID, agentID)
	}
	args := []any{to, reason, ts, nullString(toNode), rolloutID, agentID, nullString(fromNode)}
	for _, f := range from {
		args = append(args, f)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE rollout_agents SET state = ?, reason = ?, updated_at = ?, node = ?
		WHERE rollout_id = ? AND agent_id = ? AND node IS ? AND state IN (?`+strings.Repeat(`, ?`, len(from)-1)+`)`, args...)
	n, err := affected(res, err)
	if err != nil {
		return false, fmt.Errorf("set state of agent %s in rollout %s: %w", agentID, rolloutID, err)
	}
	return n > 0, nil
}

func affected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Notify implements Store: the callbacks run before it returns.
func (s *SQLite) Notify(ctx context.Context, payload string) error {
	s.listeners.call(payload)
	return nil
}

// Listen implements Store. Nothing can be missed in one process, so fn
// hears "" only once, at the start.
func (s *SQLite) Listen(ctx context.Context, fn func(payload string), _ func(error, time.Duration)) error {
	remove := s.listeners.add(fn)
	defer remove()
	fn("")
	<-ctx.Done()
	return nil
}

// PutBlob implements Store. SQLite holds a blob whole in memory on its way
// in and out: the coordinator keeps blobs only in a shared database, and
// this is here for the two stores to behave alike.
func (s *SQLite) PutBlob(ctx context.Context, b Blob, r io.Reader) error {
	if err := s.putBlob(ctx, b, r); err != nil {
		return fmt.Errorf("store blob %s: %w", b.Key, err)
	}
	return nil
}

func (s *SQLite) putBlob(ctx context.Context, b Blob, r io.Reader) error {
	if _, err := s.BlobInfo(ctx, b.Key); err == nil || !errors.Is(err, ErrNotFound) {
		return err
	}
	at, err := timeArg(b.StoredAt)
	if err == nil && at == nil {
		err = errors.New("no time given")
	}
	if err != nil {
		return err
	}
	data, err := io.ReadAll(newCheckedReader(r, b))
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO blobs (key, sha256, size, content, stored_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (key) DO NOTHING`, b.Key, b.SHA256, b.Size, data, at)
	return err
}

// BlobInfo implements Store.
func (s *SQLite) BlobInfo(ctx context.Context, key string) (Blob, error) {
	b := Blob{Key: key}
	var at sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT sha256, size, stored_at FROM blobs WHERE key = ?`, key).Scan(&b.SHA256, &b.Size, &at)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Blob{}, fmt.Errorf("blob %s: %w", key, err)
	}
	b.StoredAt = fromNanos(at)
	return b, nil
}

// ReadBlob implements Store.
func (s *SQLite) ReadBlob(ctx context.Context, key string, w io.Writer) (Blob, error) {
	b := Blob{Key: key}
	var at sql.NullInt64
	var data []byte
	err := s.r.QueryRowContext(ctx, `SELECT sha256, size, stored_at, content FROM blobs WHERE key = ?`, key).Scan(&b.SHA256, &b.Size, &at, &data)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err == nil {
		_, err = w.Write(data)
	}
	if err != nil {
		return Blob{}, fmt.Errorf("read blob %s: %w", key, err)
	}
	b.StoredAt = fromNanos(at)
	return b, nil
}
