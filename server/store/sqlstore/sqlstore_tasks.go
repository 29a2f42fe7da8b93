package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

// AddBundle implements Store.
func (s *sqlStore) AddBundle(ctx context.Context, b store.Bundle) error {
	at, err := timeArg(b.UploadedAt)
	if err == nil {
		// Another coordinator may add the same version at the same time:
		// the conflict, not a check before it, decides.
		err = insertNew(s.w.ExecContext(ctx, `INSERT INTO calamari_bundles (version, sha256, size, manifest, signature, uploaded_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (version) DO NOTHING`,
			b.Version, b.SHA256, b.Size, s.d.bytesArg(b.Manifest), s.d.sigArg(b.Signature), at))
	}
	if err != nil {
		return fmt.Errorf("add calamari bundle %s: %w", b.Version, err)
	}
	return nil
}

// insertNew turns an INSERT ... ON CONFLICT DO NOTHING that inserted
// nothing into ErrExists.
func insertNew(res sql.Result, err error) error {
	err = oneRow(res, err)
	if errors.Is(err, store.ErrNotFound) {
		return store.ErrExists
	}
	return err
}

const bundleColumns = `version, sha256, size, manifest, signature, uploaded_at`

func (s *sqlStore) scanBundle(sc scanner) (store.Bundle, error) {
	var b store.Bundle
	var sig []byte
	var at sql.NullInt64
	err := sc.Scan(&b.Version, &b.SHA256, &b.Size, &b.Manifest, &sig, &at)
	if err != nil {
		return store.Bundle{}, err
	}
	if b.Signature, err = s.d.sigValue(sig); err != nil {
		return store.Bundle{}, fmt.Errorf("signature of %s: %w", b.Version, err)
	}
	b.UploadedAt = fromNanos(at)
	return b, nil
}

// Bundle implements Store.
func (s *sqlStore) Bundle(ctx context.Context, version string) (store.Bundle, error) {
	b, err := queryOne(ctx, s.r, s.scanBundle, `SELECT `+bundleColumns+` FROM calamari_bundles WHERE version = ?`, version)
	if err != nil {
		return store.Bundle{}, fmt.Errorf("calamari bundle %s: %w", version, err)
	}
	return b, nil
}

// Bundles implements Store.
func (s *sqlStore) Bundles(ctx context.Context) ([]store.Bundle, error) {
	out, err := queryRows(ctx, s.hr, s.scanBundle, `SELECT `+bundleColumns+` FROM calamari_bundles`)
	if err != nil {
		return nil, fmt.Errorf("list calamari bundles: %w", err)
	}
	return out, nil
}

// CreateTasks implements Store.
func (s *sqlStore) CreateTasks(ctx context.Context, tasks []store.Task) error {
	if err := s.createTasks(ctx, tasks); err != nil {
		return fmt.Errorf("create %d tasks: %w", len(tasks), err)
	}
	return nil
}

func (s *sqlStore) createTasks(ctx context.Context, tasks []store.Task) error {
	if len(tasks) == 0 {
		return nil
	}
	rows := make([][]any, 0, len(tasks))
	for _, t := range tasks {
		args, err := json.Marshal(t.Args)
		if err != nil {
			return err
		}
		at, err := requiredTime(t.CreatedAt, "task "+t.ID+": creation time")
		if err != nil {
			return err
		}
		locks, err := json.Marshal(orNone(t.Locks))
		if err != nil {
			return err
		}
		vars, err := jsonText(orNone(t.Variables), "variables")
		if err != nil {
			return err
		}
		sensitive, err := jsonText(orNone(t.Sensitive), "sensitive variables")
		if err != nil {
			return err
		}
		outputs, err := jsonText(orNoOutputs(t.Outputs), "outputs")
		if err != nil {
			return err
		}
		artifacts, err := jsonText(orNone(t.Artifacts), "artifacts")
		if err != nil {
			return err
		}
		rows = append(rows, []any{t.ID, t.Group, t.AgentID, t.AgentName, string(args), t.Calamari,
			t.FileName, t.FileSHA256, t.State, at, t.Isolation, string(locks), vars, sensitive, outputs, artifacts, nullString(t.Node)})
	}
	return s.tx(ctx, func(tx *sqlTx) error {
		return tx.d.execMany(ctx, tx, `INSERT INTO tasks (id, group_id, agent_id, agent_name, args, calamari,
			file_name, file_sha256, state, created_at, isolation, locks, variables, sensitive, outputs, artifacts, node)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			rows, func(i int) string { return "task " + tasks[i].ID })
	})
}

const taskColumns = `id, group_id, agent_id, agent_name, args, calamari, file_name, file_sha256, state,
	exit_code, error, created_at, started_at, finished_at, last_seq, agent_seq, node, isolation, locks,
	variables, sensitive, outputs, artifacts, lost_lines, lost_reason`

func scanTask(sc scanner) (store.Task, error) {
	var t store.Task
	var args, locks, vars, sensitive, outputs, artifacts string
	var created, started, finished sql.NullInt64
	var node sql.NullString
	if err := sc.Scan(&t.ID, &t.Group, &t.AgentID, &t.AgentName, &args, &t.Calamari, &t.FileName, &t.FileSHA256,
		&t.State, &t.ExitCode, &t.Error, &created, &started, &finished, &t.LastSeq, &t.AgentSeq, &node,
		&t.Isolation, &locks, &vars, &sensitive, &outputs, &artifacts, &t.LostLines, &t.LostReason); err != nil {
		return store.Task{}, err
	}
	for _, c := range []struct {
		what, text string
		into       any
	}{
		{"variables", vars, &t.Variables},
		{"sensitive variables", sensitive, &t.Sensitive},
		{"outputs", outputs, &t.Outputs},
		{"artifacts", artifacts, &t.Artifacts},
	} {
		if err := json.Unmarshal([]byte(c.text), c.into); err != nil {
			return store.Task{}, fmt.Errorf("%s of task %s: %w", c.what, t.ID, err)
		}
	}
	t.Variables, t.Sensitive, t.Artifacts = noneIfEmpty(t.Variables), noneIfEmpty(t.Sensitive), noneIfEmpty(t.Artifacts)
	if len(t.Outputs) == 0 {
		t.Outputs = nil
	}
	t.Node = node.String
	if err := json.Unmarshal([]byte(args), &t.Args); err != nil {
		return store.Task{}, fmt.Errorf("arguments of task %s: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(locks), &t.Locks); err != nil {
		return store.Task{}, fmt.Errorf("locks of task %s: %w", t.ID, err)
	}
	if len(t.Locks) == 0 {
		t.Locks = nil
	}
	t.CreatedAt, t.StartedAt, t.FinishedAt = fromNanos(created), fromNanos(started), fromNanos(finished)
	return t, nil
}

// Task implements Store.
func (s *sqlStore) Task(ctx context.Context, id string) (store.Task, error) {
	t, err := queryOne(ctx, s.r, scanTask, `SELECT `+taskColumns+` FROM tasks WHERE id = ?`, id)
	if err != nil {
		return store.Task{}, fmt.Errorf("task %s: %w", id, err)
	}
	return t, nil
}

// ListTasks implements Store.
func (s *sqlStore) ListTasks(ctx context.Context, f store.TaskFilter) ([]store.Task, error) {
	var where []string
	var args []any
	if f.AgentID != "" {
		where, args = append(where, "agent_id = ?"), append(args, f.AgentID)
	}
	if f.Group != "" {
		where, args = append(where, "group_id = ?"), append(args, f.Group)
	}
	if f.Unfinished {
		where, args = append(where, "state IN (?, ?)"), append(args, api.TaskQueued, api.TaskRunning)
	}
	q := `SELECT ` + taskColumns + ` FROM tasks`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	out, err := queryRows(ctx, s.r, scanTask, q+` ORDER BY created_at DESC, id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return out, nil
}

// UpdateTask implements Store. An error message PostgreSQL cannot store
// (NUL bytes, invalid UTF-8) is stored there with U+FFFD in their place.
func (s *sqlStore) UpdateTask(ctx context.Context, id string, u store.TaskUpdate) error {
	started, err := timeArg(u.StartedAt)
	var finished any
	if err == nil {
		finished, err = timeArg(u.FinishedAt)
	}
	var outputs, artifacts any // NULL keeps the stored value
	if err == nil && u.Outputs != nil {
		outputs, err = jsonText(u.Outputs, "outputs")
	}
	if err == nil && u.Artifacts != nil {
		artifacts, err = jsonText(u.Artifacts, "artifacts")
	}
	if err == nil {
		err = s.tx(ctx, func(tx *sqlTx) error {
			if len(u.Lines) > 0 {
				if _, err := appendTaskLogs(ctx, tx, id, u.Lines); err != nil {
					return err
				}
			}
			q := `UPDATE tasks SET state = ?, exit_code = ?, error = ?,
				calamari = COALESCE(NULLIF(?, ''), calamari),
				started_at = COALESCE(?, started_at), finished_at = COALESCE(?, finished_at),
				outputs = COALESCE(?, outputs), artifacts = COALESCE(?, artifacts),
				lost_lines = COALESCE(NULLIF(CAST(? AS BIGINT), 0), lost_lines), lost_reason = COALESCE(NULLIF(?, ''), lost_reason)
				WHERE id = ?`
			args := []any{u.State, u.ExitCode, tx.d.text(u.Error), u.Calamari, started, finished, outputs, artifacts,
				u.LostLines, tx.d.text(u.LostReason), id}
			if u.IfNode != "" {
				q += ` AND node = ? AND state IN (?, ?)`
				args = append(args, u.IfNode, api.TaskQueued, api.TaskRunning)
			}
			err := oneRow(tx.ExecContext(ctx, q, args...))
			if err != nil || !finalState(u.State) {
				return err
			}
			return forgetSealed(ctx, tx, id)
		})
	}
	if u.IfNode != "" && errors.Is(err, store.ErrNotFound) {
		// Not there, or not as asked: the transaction, lines and all,
		// was rolled back.
		err = store.ErrNotClaimed
	}
	if err != nil {
		return fmt.Errorf("update task %s: %w", id, err)
	}
	return nil
}

// AppendTaskLogs implements Store. The task's row is locked for the
// transaction, so appenders on several coordinators number their lines
// one after the other, as they do behind SQLite's single writer.
func (s *sqlStore) AppendTaskLogs(ctx context.Context, taskID string, lines []store.LogLine) ([]store.LogLine, error) {
	if len(lines) == 0 {
		return nil, nil
	}
	var stored []store.LogLine
	err := s.tx(ctx, func(tx *sqlTx) error {
		var err error
		stored, err = appendTaskLogs(ctx, tx, taskID, lines)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("append %d log lines to task %s: %w", len(lines), taskID, err)
	}
	return stored, nil
}

// appendTaskLogs is AppendTaskLogs within tx, for UpdateTask's lines too.
func appendTaskLogs(ctx context.Context, tx *sqlTx, taskID string, lines []store.LogLine) ([]store.LogLine, error) {
	var last, agentSeq int64
	err := tx.QueryRowContext(ctx, `SELECT last_seq, agent_seq FROM tasks WHERE id = ?`+tx.d.forUpdate(),
		taskID).Scan(&last, &agentSeq)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	stored, last, agentSeq := numberLogLines(lines, last, agentSeq, time.Now().UTC())
	if len(stored) == 0 {
		return nil, nil
	}
	rows := make([][]any, len(stored))
	for i, l := range stored {
		at, err := timeArg(l.Time)
		if err != nil {
			return nil, err
		}
		var aseq any
		if l.AgentSeq > 0 {
			aseq = l.AgentSeq
		}
		rows[i] = []any{taskID, l.Seq, aseq, at, l.Stream, tx.d.bytesArg([]byte(l.Text))}
	}
	err = tx.d.execMany(ctx, tx, `INSERT INTO task_logs (task_id, seq, agent_seq, at, stream, text) VALUES (?, ?, ?, ?, ?, ?)`,
		rows, func(i int) string { return fmt.Sprintf("line %d", stored[i].Seq) })
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE tasks SET last_seq = ?, agent_seq = ? WHERE id = ?`, last, agentSeq, taskID); err != nil {
		return nil, err
	}
	return stored, nil
}

// TaskLogs implements Store.
func (s *sqlStore) TaskLogs(ctx context.Context, taskID string, from int64, limit int) ([]store.LogLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	out, err := queryRows(ctx, s.r, func(sc scanner) (store.LogLine, error) {
		var l store.LogLine
		var at, aseq sql.NullInt64
		var text []byte
		err := sc.Scan(&l.Seq, &aseq, &at, &l.Stream, &text)
		l.Time, l.AgentSeq, l.Text = fromNanos(at), aseq.Int64, string(text)
		return l, err
	}, `SELECT seq, agent_seq, at, stream, text FROM task_logs WHERE task_id = ? AND seq >= ?
		ORDER BY seq LIMIT ?`, taskID, from, limit)
	if err != nil {
		return nil, fmt.Errorf("task %s logs: %w", taskID, err)
	}
	return out, nil
}

// forgetSealed keeps only the names of a final task's sensitive
// variables: their values were needed to start it, and a database or a
// backup that no longer holds them cannot give them away.
func forgetSealed(ctx context.Context, tx *sqlTx, id string) error {
	var text string
	if err := tx.QueryRowContext(ctx, `SELECT sensitive FROM tasks WHERE id = ?`, id).Scan(&text); err != nil {
		return err
	}
	var vs []store.SealedVariable
	if err := json.Unmarshal([]byte(text), &vs); err != nil {
		return fmt.Errorf("sensitive variables of task %s: %w", id, err)
	}
	sealed := false
	for i := range vs {
		sealed = sealed || vs[i].Sealed != nil
		vs[i].Sealed = nil
	}
	if !sealed {
		return nil
	}
	names, err := jsonText(vs, "sensitive variables")
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE tasks SET sensitive = ? WHERE id = ?`, names, id)
	return err
}

func finalState(state string) bool {
	return state == api.TaskSucceeded || state == api.TaskFailed || state == api.TaskCancelled
}

// jsonText is v as the JSON text a column holds.
func jsonText(v any, what string) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return string(b), nil
}

// orNone is vs, or an empty list for nil, so that it is stored as [].
func orNone[T any](vs []T) []T {
	if vs == nil {
		return []T{}
	}
	return vs
}

// noneIfEmpty is nil for an empty list, as a task without any was made.
func noneIfEmpty[T any](vs []T) []T {
	if len(vs) == 0 {
		return nil
	}
	return vs
}

func orNoOutputs(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
