package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// AddBundle implements Store.
func (s *SQLite) AddBundle(ctx context.Context, b Bundle) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM calamari_bundles WHERE version = ?`, b.Version).Scan(&one)
		if err == nil {
			return ErrExists
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		at, err := timeArg(b.UploadedAt)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO calamari_bundles (version, sha256, size, manifest, signature, uploaded_at)
			VALUES (?, ?, ?, ?, ?, ?)`, b.Version, b.SHA256, b.Size, string(b.Manifest), hex.EncodeToString(b.Signature), at)
		return err
	})
	if err != nil {
		return fmt.Errorf("add calamari bundle %s: %w", b.Version, err)
	}
	return nil
}

const bundleColumns = `version, sha256, size, manifest, signature, uploaded_at`

func scanBundle(sc scanner) (Bundle, error) {
	var b Bundle
	var manifest, sig string
	var at sql.NullInt64
	if err := sc.Scan(&b.Version, &b.SHA256, &b.Size, &manifest, &sig, &at); err != nil {
		return Bundle{}, err
	}
	raw, err := hex.DecodeString(sig)
	if err != nil {
		return Bundle{}, fmt.Errorf("signature of %s: %w", b.Version, err)
	}
	b.Manifest, b.Signature, b.UploadedAt = []byte(manifest), raw, fromNanos(at)
	return b, nil
}

// Bundle implements Store.
func (s *SQLite) Bundle(ctx context.Context, version string) (Bundle, error) {
	b, err := scanBundle(s.r.QueryRowContext(ctx, `SELECT `+bundleColumns+` FROM calamari_bundles WHERE version = ?`, version))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Bundle{}, fmt.Errorf("calamari bundle %s: %w", version, err)
	}
	return b, nil
}

// Bundles implements Store.
func (s *SQLite) Bundles(ctx context.Context) ([]Bundle, error) {
	rows, err := s.pr.QueryContext(ctx, `SELECT `+bundleColumns+` FROM calamari_bundles`)
	if err != nil {
		return nil, fmt.Errorf("list calamari bundles: %w", err)
	}
	defer rows.Close()
	out, err := collectRows(rows, scanBundle)
	if err != nil {
		return nil, fmt.Errorf("list calamari bundles: %w", err)
	}
	return out, nil
}

// CreateTasks implements Store.
func (s *SQLite) CreateTasks(ctx context.Context, tasks []Task) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO tasks (id, group_id, agent_id, agent_name, args, calamari,
			file_name, file_sha256, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
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
			if _, err := stmt.ExecContext(ctx, t.ID, t.Group, t.AgentID, t.AgentName, string(args), t.Calamari,
				t.FileName, t.FileSHA256, t.State, at); err != nil {
				return fmt.Errorf("task %s: %w", t.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create %d tasks: %w", len(tasks), err)
	}
	return nil
}

const taskColumns = `id, group_id, agent_id, agent_name, args, calamari, file_name, file_sha256, state,
	exit_code, error, created_at, started_at, finished_at, last_seq, agent_seq, node`

func scanTask(sc scanner) (Task, error) {
	var t Task
	var args string
	var created, started, finished sql.NullInt64
	var node sql.NullString
	if err := sc.Scan(&t.ID, &t.Group, &t.AgentID, &t.AgentName, &args, &t.Calamari, &t.FileName, &t.FileSHA256,
		&t.State, &t.ExitCode, &t.Error, &created, &started, &finished, &t.LastSeq, &t.AgentSeq, &node); err != nil {
		return Task{}, err
	}
	t.Node = node.String
	if err := json.Unmarshal([]byte(args), &t.Args); err != nil {
		return Task{}, fmt.Errorf("arguments of task %s: %w", t.ID, err)
	}
	t.CreatedAt, t.StartedAt, t.FinishedAt = fromNanos(created), fromNanos(started), fromNanos(finished)
	return t, nil
}

// Task implements Store.
func (s *SQLite) Task(ctx context.Context, id string) (Task, error) {
	t, err := scanTask(s.r.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Task{}, fmt.Errorf("task %s: %w", id, err)
	}
	return t, nil
}

// ListTasks implements Store.
func (s *SQLite) ListTasks(ctx context.Context, f TaskFilter) ([]Task, error) {
	var where []string
	var args []any
	if f.AgentID != "" {
		where, args = append(where, "agent_id = ?"), append(args, f.AgentID)
	}
	if f.Group != "" {
		where, args = append(where, "group_id = ?"), append(args, f.Group)
	}
	if f.Unfinished {
		where, args = append(where, "state IN (?, ?)"), append(args, TaskQueued, TaskRunning)
	}
	q := `SELECT ` + taskColumns + ` FROM tasks`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q += ` ORDER BY created_at DESC, id LIMIT ?`
	args = append(args, limit)
	rows, err := s.r.QueryContext(ctx, q, args...)
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

// UpdateTask implements Store.
func (s *SQLite) UpdateTask(ctx context.Context, id string, u TaskUpdate) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		started, err := timeArg(u.StartedAt)
		if err != nil {
			return err
		}
		finished, err := timeArg(u.FinishedAt)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE tasks SET state = ?, exit_code = ?, error = ?,
			calamari = COALESCE(NULLIF(?, ''), calamari),
			started_at = COALESCE(?, started_at), finished_at = COALESCE(?, finished_at)
			WHERE id = ?`, u.State, u.ExitCode, u.Error, u.Calamari, started, finished, id)
		if err != nil {
			return err
		}
		return oneRow(res)
	})
	if err != nil {
		return fmt.Errorf("update task %s: %w", id, err)
	}
	return nil
}

// AppendTaskLogs implements Store.
func (s *SQLite) AppendTaskLogs(ctx context.Context, taskID string, lines []LogLine) ([]LogLine, error) {
	if len(lines) == 0 {
		return nil, nil
	}
	var stored []LogLine
	err := s.write(ctx, func(tx *sql.Tx) error {
		var last, agentSeq int64
		err := tx.QueryRowContext(ctx, `SELECT last_seq, agent_seq FROM tasks WHERE id = ?`, taskID).Scan(&last, &agentSeq)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO task_logs (task_id, seq, agent_seq, at, stream, text) VALUES (?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
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
			if _, err := stmt.ExecContext(ctx, taskID, l.Seq, aseq, at, l.Stream, l.Text); err != nil {
				return fmt.Errorf("line %d: %w", l.Seq, err)
			}
			stored = append(stored, l)
		}
		_, err = tx.ExecContext(ctx, `UPDATE tasks SET last_seq = ?, agent_seq = ? WHERE id = ?`, last, agentSeq, taskID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("append %d log lines to task %s: %w", len(lines), taskID, err)
	}
	return stored, nil
}

// TaskLogs implements Store.
func (s *SQLite) TaskLogs(ctx context.Context, taskID string, from int64, limit int) ([]LogLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.r.QueryContext(ctx, `SELECT seq, agent_seq, at, stream, text FROM task_logs WHERE task_id = ? AND seq >= ?
		ORDER BY seq LIMIT ?`, taskID, from, limit)
	if err != nil {
		return nil, fmt.Errorf("task %s logs: %w", taskID, err)
	}
	defer rows.Close()
	var out []LogLine
	for rows.Next() {
		var l LogLine
		var at, aseq sql.NullInt64
		if err := rows.Scan(&l.Seq, &aseq, &at, &l.Stream, &l.Text); err != nil {
			return nil, fmt.Errorf("task %s logs: %w", taskID, err)
		}
		l.Time, l.AgentSeq = fromNanos(at), aseq.Int64
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("task %s logs: %w", taskID, err)
	}
	return out, nil
}
