package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
)

// lockNodes is held while a node registers, so that two processes starting
// with the same name cannot both find the other dead.
const lockNodes = 3

// lockRollouts is held while a running rollout is created, so that its
// check that no other running rollout holds its agents sees every
// committed rollout (see CreateRollout).
const lockRollouts = 4

// notifyChannel is the LISTEN/NOTIFY channel the nodes wake each other on.
const notifyChannel = "tendril"

// pgNow is the database's clock in unix nanoseconds: heartbeats are
// written and judged by one clock, whatever the nodes' hosts think.
const pgNow = `(extract(epoch from clock_timestamp()) * 1000000000)::bigint`

// RegisterNode implements Store.
func (s *Postgres) RegisterNode(ctx context.Context, n Node) (Node, error) {
	started, err := timeArg(n.StartedAt)
	if err == nil && started == nil {
		err = errors.New("no start time")
	}
	if err != nil {
		return Node{}, fmt.Errorf("register node %s: %w", n.Name, err)
	}
	out := n
	err = s.tx(ctx, func(tx pgx.Tx) error {
		out = n
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockNodes); err != nil {
			return err
		}
		var now int64
		if err := tx.QueryRow(ctx, `SELECT `+pgNow).Scan(&now); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE name = $1 ORDER BY started_at`, n.Name)
		if err != nil {
			return err
		}
		prev, err := collectRows(rows, func(sc scanner) (Node, error) { return scanNode(sc, now) })
		rows.Close()
		if err != nil {
			return err
		}
		if err := checkPrevious(n, prev); err != nil {
			return err
		}
		if len(prev) > 0 {
			out.Draining = prev[len(prev)-1].Draining
		}
		if _, err := tx.Exec(ctx, `UPDATE agents SET node = NULL WHERE node IN (SELECT id FROM nodes WHERE name = $1)`, n.Name); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM nodes WHERE name = $1`, n.Name); err != nil {
			return err
		}
		out.Heartbeat, out.HeartbeatAge = time.Unix(0, now).UTC(), 0
		_, err = tx.Exec(ctx, `INSERT INTO nodes (`+nodeColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9)`,
			n.ID, n.Name, n.Advertise, n.HTTP, n.Version, started, now, int64(n.HeartbeatEvery), out.Draining)
		return err
	})
	if err != nil {
		return Node{}, fmt.Errorf("register node %s: %w", n.Name, err)
	}
	return out, nil
}

// HeartbeatNode implements Store.
func (s *Postgres) HeartbeatNode(ctx context.Context, id string) error {
	err := pgTag(s.pool.Exec(ctx, `UPDATE nodes SET heartbeat_at = `+pgNow+` WHERE id = $1 AND stopped_at IS NULL`, id))
	if err != nil {
		return fmt.Errorf("heartbeat of node %s: %w", id, err)
	}
	return nil
}

// StopNode implements Store.
func (s *Postgres) StopNode(ctx context.Context, id string, at time.Time) error {
	ts, err := timeArg(at)
	if err == nil {
		err = s.tx(ctx, func(tx pgx.Tx) error {
			if err := pgTag(tx.Exec(ctx, `UPDATE nodes SET stopped_at = $1 WHERE id = $2`, ts, id)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `UPDATE agents SET node = NULL WHERE node = $1`, id)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("stop node %s: %w", id, err)
	}
	return nil
}

// Nodes implements Store.
func (s *Postgres) Nodes(ctx context.Context) ([]Node, error) {
	var out []Node
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out = nil
		var now int64
		if err := tx.QueryRow(ctx, `SELECT `+pgNow).Scan(&now); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, nodesQuery)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var agents, tasks, rollouts int
			n, err := scanNode(rows, now, &agents, &tasks, &rollouts)
			if err != nil {
				return err
			}
			n.Agents, n.Tasks, n.Rollouts = agents, tasks, rollouts
			out = append(out, n)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}

// SetNodeDraining implements Store.
func (s *Postgres) SetNodeDraining(ctx context.Context, id string, draining bool) error {
	if err := pgTag(s.pool.Exec(ctx, `UPDATE nodes SET draining = $1 WHERE id = $2`, draining, id)); err != nil {
		return fmt.Errorf("set draining of node %s: %w", id, err)
	}
	return nil
}

// PruneNodes implements Store.
func (s *Postgres) PruneNodes(ctx context.Context, age time.Duration) (int, error) {
	var n int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		cut := `(` + pgNow + ` - $1::bigint)`
		if _, err := tx.Exec(ctx, `UPDATE agents SET node = NULL WHERE node IN (SELECT id FROM nodes WHERE heartbeat_at < `+cut+`)`, int64(age)); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM nodes WHERE heartbeat_at < `+cut, int64(age))
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune nodes: %w", err)
	}
	return int(n), nil
}

// DisconnectAgent implements Store.
func (s *Postgres) DisconnectAgent(ctx context.Context, id, node string, at time.Time) error {
	ts, err := timeArg(at)
	if err == nil {
		_, err = s.pool.Exec(ctx, `UPDATE agents SET last_seen = $1,
			node = CASE WHEN node = $2 THEN NULL ELSE node END WHERE id = $3`, ts, node, id)
	}
	if err != nil {
		return fmt.Errorf("record disconnection of agent %s: %w", id, err)
	}
	return nil
}

// ClaimTask implements Store. The condition on the driver is checked
// against the row as it is once locked: of two nodes claiming at once,
// the second finds the first's claim and matches nothing.
func (s *Postgres) ClaimTask(ctx context.Context, id, from, to string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE tasks SET node = $1 WHERE id = $2 AND state IN ($3, $4) AND node IS NOT DISTINCT FROM $5`,
		nullString(to), id, TaskQueued, TaskRunning, nullString(from))
	if err != nil {
		return false, fmt.Errorf("claim task %s: %w", id, err)
	}
	return tag.RowsAffected() > 0, nil
}

// ClaimRollout implements Store, as ClaimTask.
func (s *Postgres) ClaimRollout(ctx context.Context, id, from, to string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE rollouts SET node = $1 WHERE id = $2 AND state = $3 AND node IS NOT DISTINCT FROM $4`,
		nullString(to), id, RolloutRunning, nullString(from))
	if err != nil {
		return false, fmt.Errorf("claim rollout %s: %w", id, err)
	}
	return tag.RowsAffected() > 0, nil
}

// SetRolloutAgentNode implements Store, as ClaimTask.
func (s *Postgres) SetRolloutAgentNode(ctx context.Context, rolloutID, agentID string, from []string, fromNode, to, toNode, reason string, at time.Time) (bool, error) {
	ts, err := timeArg(at)
	if err == nil && (ts == nil || len(from) == 0) {
		err = errors.New("no time or no state to move from")
	}
	if err != nil {
		return false, fmt.Errorf("set state of agent %s in rollout %s: %w", agentID, rolloutID, err)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE rollout_agents SET state = $1, reason = $2, updated_at = $3, node = $4
		WHERE rollout_id = $5 AND agent_id = $6 AND node IS NOT DISTINCT FROM $7 AND state = ANY($8)`,
		to, pgText(reason), ts, nullString(toNode), rolloutID, agentID, nullString(fromNode), from)
	if err != nil {
		return false, fmt.Errorf("set state of agent %s in rollout %s: %w", agentID, rolloutID, err)
	}
	return tag.RowsAffected() > 0, nil
}

// Notify implements Store with NOTIFY, which PostgreSQL delivers to every
// session listening, this node's included.
func (s *Postgres) Notify(ctx context.Context, payload string) error {
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, payload); err != nil {
		return fmt.Errorf("notify %q: %w", payload, err)
	}
	return nil
}

// Listen implements Store on a connection of its own, outside the pool:
// it waits in LISTEN for as long as the node runs.
func (s *Postgres) Listen(ctx context.Context, fn func(payload string), lost func(err error, wait time.Duration)) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = openRetryFirst
	b.MaxInterval = openRetryMax
	b.MaxElapsedTime = 0
	for {
		err := s.listenOnce(ctx, fn, b.Reset)
		if ctx.Err() != nil {
			return nil
		}
		wait := b.NextBackOff()
		if lost != nil {
			lost(err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// listenOnce listens on one connection until it fails or ctx ends.
// listening is called once the LISTEN took effect.
func (s *Postgres) listenOnce(ctx context.Context, fn func(string), listening func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("listen for notifications on %s: %w", s.where, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+notifyChannel); err != nil {
		return fmt.Errorf("listen for notifications on %s: %w", s.where, err)
	}
	listening()
	fn("")
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("wait for notifications on %s: %w", s.where, err)
		}
		fn(n.Payload)
	}
}

// blobChunk is how much of a blob one round trip to the server carries.
const blobChunk = 1 << 20

// errBlobStored rolls back a blob another node stored meanwhile.
var errBlobStored = errors.New("stored meanwhile")

// PutBlob implements Store. The content goes into a large object, in
// chunks, within the transaction that records it: a failure leaves
// nothing behind.
func (s *Postgres) PutBlob(ctx context.Context, b Blob, r io.Reader) error {
	if err := s.putBlob(ctx, b, r); err != nil && !errors.Is(err, errBlobStored) {
		return fmt.Errorf("store blob %s: %w", b.Key, err)
	}
	return nil
}

func (s *Postgres) putBlob(ctx context.Context, b Blob, r io.Reader) error {
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
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		lo := tx.LargeObjects()
		oid, err := lo.Create(ctx, 0)
		if err != nil {
			return err
		}
		obj, err := lo.Open(ctx, oid, pgx.LargeObjectModeWrite)
		if err != nil {
			return err
		}
		if _, err := io.CopyBuffer(obj, newCheckedReader(r, b), make([]byte, blobChunk)); err != nil {
			return err
		}
		if err := obj.Close(); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO blobs (key, sha256, size, content, stored_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (key) DO NOTHING`, b.Key, b.SHA256, b.Size, oid, at)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errBlobStored // and the large object goes with the rollback
		}
		return nil
	})
}

// BlobInfo implements Store.
func (s *Postgres) BlobInfo(ctx context.Context, key string) (Blob, error) {
	b := Blob{Key: key}
	var at sql.NullInt64
	err := s.pool.QueryRow(ctx, `SELECT sha256, size, stored_at FROM blobs WHERE key = $1`, key).Scan(&b.SHA256, &b.Size, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Blob{}, fmt.Errorf("blob %s: %w", key, err)
	}
	b.StoredAt = fromNanos(at)
	return b, nil
}

// ReadBlob implements Store, streaming the large object in chunks.
func (s *Postgres) ReadBlob(ctx context.Context, key string, w io.Writer) (Blob, error) {
	b := Blob{Key: key}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var at sql.NullInt64
		var oid uint32
		err := tx.QueryRow(ctx, `SELECT sha256, size, stored_at, content FROM blobs WHERE key = $1`, key).Scan(&b.SHA256, &b.Size, &at, &oid)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		b.StoredAt = fromNanos(at)
		lo := tx.LargeObjects()
		obj, err := lo.Open(ctx, oid, pgx.LargeObjectModeRead)
		if err != nil {
			return err
		}
		defer obj.Close()
		_, err = io.CopyBuffer(w, obj, make([]byte, blobChunk))
		return err
	})
	if err != nil {
		return Blob{}, fmt.Errorf("read blob %s: %w", key, err)
	}
	return b, nil
}
