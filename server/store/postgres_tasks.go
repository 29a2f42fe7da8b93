package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// AddBundle implements Store.
func (s *Postgres) AddBundle(ctx context.Context, b Bundle) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var exists bool
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM calamari_bundles WHERE version = $1)`, b.Version).Scan(&exists)
		if err != nil {
			return err
		}
		if exists {
			return ErrExists
		}
		at, err := timeArg(b.UploadedAt)
		if err != nil {
			return err
		}
		// Another coordinator may have added it since the check.
		tag, err := tx.Exec(ctx, `INSERT INTO calamari_bundles (version, sha256, size, manifest, signature, uploaded_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (version) DO NOTHING`,
			b.Version, b.SHA256, b.Size, nonNil(b.Manifest), nonNil(b.Signature), at)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrExists
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add calamari bundle %s: %w", b.Version, err)
	}
	return nil
}

// nonNil stores a nil slice as empty bytes, as the SQLite store's hex and
// text columns do, rather than as NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func pgScanBundle(sc scanner) (Bundle, error) {
	var b Bundle
	var at sql.NullInt64
	if err := sc.Scan(&b.Version, &b.SHA256, &b.Size, &b.Manifest, &b.Signature, &at); err != nil {
		return Bundle{}, err
	}
	b.UploadedAt = fromNanos(at)
	return b, nil
}

// Bundle implements Store.
func (s *Postgres) Bundle(ctx context.Context, version string) (Bundle, error) {
	b, err := pgScanBundle(s.pool.QueryRow(ctx, `SELECT `+bundleColumns+` FROM calamari_bundles WHERE version = $1`, version))
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Bundle{}, fmt.Errorf("calamari bundle %s: %w", version, err)
	}
	return b, nil
}

// Bundles implements Store.
func (s *Postgres) Bundles(ctx context.Context) ([]Bundle, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+bundleColumns+` FROM calamari_bundles`)
	if err != nil {
		return nil, fmt.Errorf("list calamari bundles: %w", err)
	}
	defer rows.Close()
	out, err := collectRows(rows, pgScanBundle)
	if err != nil {
		return nil, fmt.Errorf("list calamari bundles: %w", err)
	}
	return out, nil
}

// CreateTasks implements Store.
func (s *Postgres) CreateTasks(ctx context.Context, tasks []Task) error {
	err := s.createTasks(ctx, tasks)
	if err != nil {
		return fmt.Errorf("create %d tasks: %w", len(tasks), err)
	}
	return nil
}

func (s *Postgres) createTasks(ctx context.Context, tasks []Task) error {
	if len(tasks) == 0 {
		return nil
	}
	rows := make([][]any, 0, len(tasks))
	for _, t := range tasks {
		args, err := json.Marshal(t.Args)
		if err != nil {
			return err
		}
		at, err := timeArg(t.CreatedAt)
		if err != nil {
			return err
		}
		if at == nil {
			return fmt.Errorf("task %s: no creation time", t.ID)
		}
		rows = append(rows, []any{t.ID, t.Group, t.AgentID, t.AgentName, string(args), t.Calamari,
			t.FileName, t.FileSHA256, t.State, at})
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		// A new batch per attempt: sending one records state in it.
		b := &pgx.Batch{}
		for _, r := range rows {
			b.Queue(`INSERT INTO tasks (id, group_id, agent_id, agent_name, args, calamari,
				file_name, file_sha256, state, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, r...)
		}
		return execBatch(ctx, tx, b, func(i int) string { return "task " + tasks[i].ID })
	})
}

// Task implements Store.
func (s *Postgres) Task(ctx context.Context, id string) (Task, error) {
	t, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Task{}, fmt.Errorf("task %s: %w", id, err)
	}
	return t, nil
}

// ListTasks implements Store.
func (s *Postgres) ListTasks(ctx context.Context, f TaskFilter) ([]Task, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.AgentID != "" {
		where = append(where, "agent_id = "+arg(f.AgentID))
	}
	if f.Group != "" {
		where = append(where, "group_id = "+arg(f.Group))
	}
	if f.Unfinished {
		where = append(where, fmt.Sprintf("state IN (%s, %s)", arg(TaskQueued), arg(TaskRunning)))
	}
	q := `SELECT ` + taskColumns + ` FROM tasks`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q += ` ORDER BY created_at DESC, id LIMIT ` + arg(limit)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	defer rows.Close()
	out, err := collectRows(rows, scanTask)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return out, nil
}

// UpdateTask implements Store. An error message holding NUL bytes or
// invalid UTF-8 is stored with U+FFFD in their place.
func (s *Postgres) UpdateTask(ctx context.Context, id string, u TaskUpdate) error {
	err := s.updateTask(ctx, id, u)
	if err != nil {
		return fmt.Errorf("update task %s: %w", id, err)
	}
	return nil
}

func (s *Postgres) updateTask(ctx context.Context, id string, u TaskUpdate) error {
	started, err := timeArg(u.StartedAt)
	if err != nil {
		return err
	}
	finished, err := timeArg(u.FinishedAt)
	if err != nil {
		return err
	}
	return pgTag(s.pool.Exec(ctx, `UPDATE tasks SET state = $1, exit_code = $2, error = $3,
		calamari = COALESCE(NULLIF($4, ''), calamari),
		started_at = COALESCE($5, started_at), finished_at = COALESCE($6, finished_at)
		WHERE id = $7`, u.State, u.ExitCode, pgText(u.Error), u.Calamari, started, finished, id))
}

// AppendTaskLogs implements Store. The task's row is locked for the
// transaction, so appenders on several coordinators number their lines
// one after the other, as the SQLite store's single writer does.
func (s *Postgres) AppendTaskLogs(ctx context.Context, taskID string, lines []LogLine) ([]LogLine, error) {
	if len(lines) == 0 {
		return nil, nil
	}
	var stored []LogLine
	err := s.tx(ctx, func(tx pgx.Tx) error {
		stored = nil
		var last, agentSeq int64
		err := tx.QueryRow(ctx, `SELECT last_seq, agent_seq FROM tasks WHERE id = $1 FOR UPDATE`, taskID).Scan(&last, &agentSeq)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		b := &pgx.Batch{}
		fresh, last, agentSeq := numberLogLines(lines, last, agentSeq, time.Now().UTC())
		for _, l := range fresh {
			at, err := timeArg(l.Time)
			if err != nil {
				return err
			}
			var aseq any
			if l.AgentSeq > 0 {
				aseq = l.AgentSeq
			}
			b.Queue(`INSERT INTO task_logs (task_id, seq, agent_seq, at, stream, text) VALUES ($1, $2, $3, $4, $5, $6)`,
				taskID, l.Seq, aseq, at, l.Stream, []byte(l.Text))
			stored = append(stored, l)
		}
		if b.Len() == 0 {
			return nil
		}
		b.Queue(`UPDATE tasks SET last_seq = $1, agent_seq = $2 WHERE id = $3`, last, agentSeq, taskID)
		return execBatch(ctx, tx, b, func(i int) string {
			if i < len(stored) {
				return fmt.Sprintf("line %d", stored[i].Seq)
			}
			return "task " + taskID
		})
	})
	if err != nil {
		return nil, fmt.Errorf("append %d log lines to task %s: %w", len(lines), taskID, err)
	}
	return stored, nil
}

// TaskLogs implements Store.
func (s *Postgres) TaskLogs(ctx context.Context, taskID string, from int64, limit int) ([]LogLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.pool.Query(ctx, `SELECT seq, agent_seq, at, stream, text FROM task_logs WHERE task_id = $1 AND seq >= $2
		ORDER BY seq LIMIT $3`, taskID, from, limit)
	if err != nil {
		return nil, fmt.Errorf("task %s logs: %w", taskID, err)
	}
	defer rows.Close()
	var out []LogLine
	for rows.Next() {
		var l LogLine
		var at, aseq sql.NullInt64
		var text []byte
		if err := rows.Scan(&l.Seq, &aseq, &at, &l.Stream, &text); err != nil {
			return nil, fmt.Errorf("task %s logs: %w", taskID, err)
		}
		l.Time, l.AgentSeq, l.Text = fromNanos(at), aseq.Int64, string(text)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("task %s logs: %w", taskID, err)
	}
	return out, nil
}
