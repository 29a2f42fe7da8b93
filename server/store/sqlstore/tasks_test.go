package sqlstore

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

func TestBundles(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		b := store.Bundle{Version: "1.2.3", SHA256: "ab", Size: 10, Manifest: []byte(`{"name":"calamari"}`), Signature: []byte{1, 2, 255}, UploadedAt: t0}
		if err := s.AddBundle(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := s.AddBundle(ctx, b); !errors.Is(err, store.ErrExists) {
			t.Fatalf("second add: got %v, want ErrExists", err)
		}
		got, err := s.Bundle(ctx, "1.2.3")
		if err != nil || !reflect.DeepEqual(got, b) {
			t.Fatalf("got %+v, %v; want %+v", got, err, b)
		}
		if _, err := s.Bundle(ctx, "9.9.9"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown version: got %v, want ErrNotFound", err)
		}
		all, err := s.Bundles(ctx)
		if err != nil || len(all) != 1 {
			t.Fatalf("Bundles: got %d, %v; want 1", len(all), err)
		}
	})
}

func newTask(id, group string, created time.Time) store.Task {
	return store.Task{ID: id, Group: group, AgentID: "agent-" + id, AgentName: "web-" + id, Args: []string{"run-script", "--inline", "echo hi"},
		Calamari: "1.0.0", State: api.TaskQueued, CreatedAt: created}
}

func TestTasks(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a, b := newTask("a", "g1", t0), newTask("b", "g1", t0.Add(time.Second))
		c := newTask("c", "g2", t0.Add(2*time.Second))
		if err := s.CreateTasks(ctx, []store.Task{a, b, c}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateTasks(ctx, []store.Task{a}); err == nil {
			t.Fatal("duplicate task id: got nil error")
		}
		got, err := s.Task(ctx, "a")
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Fatalf("Task: got %+v, %v; want %+v", got, err, a)
		}
		started := t0.Add(time.Minute)
		if err := s.UpdateTask(ctx, "a", store.TaskUpdate{State: api.TaskRunning, StartedAt: started, Calamari: "1.1.0"}); err != nil {
			t.Fatal(err)
		}
		finished := started.Add(time.Minute)
		if err := s.UpdateTask(ctx, "a", store.TaskUpdate{State: api.TaskFailed, ExitCode: 3, Error: "boom", FinishedAt: finished}); err != nil {
			t.Fatal(err)
		}
		got, _ = s.Task(ctx, "a")
		if got.State != api.TaskFailed || got.ExitCode != 3 || got.Error != "boom" || !got.StartedAt.Equal(started) || !got.FinishedAt.Equal(finished) || got.Calamari != "1.1.0" || !got.Finished() {
			t.Fatalf("after updates: got %+v", got)
		}
		if err := s.UpdateTask(ctx, "nope", store.TaskUpdate{State: api.TaskFailed}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("update unknown: got %v, want ErrNotFound", err)
		}
		tests := []struct {
			name string
			f    store.TaskFilter
			want []string
		}{
			{"all, newest first", store.TaskFilter{}, []string{"c", "b", "a"}},
			{"group", store.TaskFilter{Group: "g1"}, []string{"b", "a"}},
			{"agent", store.TaskFilter{AgentID: "agent-b"}, []string{"b"}},
			{"unfinished", store.TaskFilter{Unfinished: true}, []string{"c", "b"}},
			{"limit", store.TaskFilter{Limit: 1}, []string{"c"}},
		}
		for _, tt := range tests {
			ts, err := s.ListTasks(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, x := range ts {
				ids = append(ids, x.ID)
			}
			if !reflect.DeepEqual(ids, tt.want) {
				t.Errorf("%s: got %v, want %v", tt.name, ids, tt.want)
			}
		}
	})
}

func TestTaskLogsAreIdempotent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		if err := s.CreateTasks(ctx, []store.Task{newTask("a", "g", t0)}); err != nil {
			t.Fatal(err)
		}
		agentLine := func(aseq int64, text string) store.LogLine {
			return store.LogLine{AgentSeq: aseq, Time: t0, Stream: "stdout", Text: text}
		}
		coord := store.LogLine{Time: t0, Stream: "coordinator", Text: "installing Calamari 1.0.0"}
		if _, err := s.AppendTaskLogs(ctx, "a", []store.LogLine{coord}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendTaskLogs(ctx, "a", []store.LogLine{agentLine(1, "one"), agentLine(2, "two")}); err != nil {
			t.Fatal(err)
		}
		// After a reconnect the coordinator may receive agent line 2 again: it
		// is not stored twice, and its first text wins.
		stored, err := s.AppendTaskLogs(ctx, "a", []store.LogLine{agentLine(2, "two again"), agentLine(3, "three")})
		if err != nil {
			t.Fatal(err)
		}
		if len(stored) != 1 || stored[0].Seq != 4 || stored[0].AgentSeq != 3 {
			t.Fatalf("stored: got %+v, want only agent line 3 as seq 4", stored)
		}
		got, err := s.TaskLogs(ctx, "a", 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := []store.LogLine{
			{Seq: 1, Time: t0, Stream: "coordinator", Text: "installing Calamari 1.0.0"},
			{Seq: 2, AgentSeq: 1, Time: t0, Stream: "stdout", Text: "one"},
			{Seq: 3, AgentSeq: 2, Time: t0, Stream: "stdout", Text: "two"},
			{Seq: 4, AgentSeq: 3, Time: t0, Stream: "stdout", Text: "three"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
		if got, _ := s.TaskLogs(ctx, "a", 4, 0); len(got) != 1 || got[0].Seq != 4 {
			t.Fatalf("from 4: got %+v", got)
		}
		if task, _ := s.Task(ctx, "a"); task.LastSeq != 4 || task.AgentSeq != 3 {
			t.Fatalf("got LastSeq %d AgentSeq %d, want 4 and 3", task.LastSeq, task.AgentSeq)
		}
		if _, err := s.AppendTaskLogs(ctx, "missing", []store.LogLine{agentLine(1, "x")}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("lines for an unknown task: got %v, want ErrNotFound", err)
		}
		// Concurrent appenders of the same agent lines (a follower and its
		// replacement after a reconnect) never fail or duplicate.
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var batch []store.LogLine
				for i := int64(4); i <= 200; i++ {
					batch = append(batch, agentLine(i, "x"))
				}
				if _, err := s.AppendTaskLogs(ctx, "a", batch); err != nil {
					t.Errorf("appender %d: %v", w, err)
				}
			}()
		}
		wg.Wait()
		got, _ = s.TaskLogs(ctx, "a", 1, 1000)
		if len(got) != 201 {
			t.Fatalf("got %d lines, want 201 (one coordinator line, agent lines 1-200)", len(got))
		}
	})
}

// Program output is stored as it came, NUL bytes and invalid UTF-8
// included: a Windows tool writing UTF-16 is full of NULs.
func TestTaskLogsKeepBytes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		if err := s.CreateTasks(ctx, []store.Task{newTask("a", "g", t0)}); err != nil {
			t.Fatal(err)
		}
		texts := []string{"h\x00i\x00", "\xff\xfe broken", ""}
		var lines []store.LogLine
		for i, text := range texts {
			lines = append(lines, store.LogLine{AgentSeq: int64(i + 1), Time: t0, Stream: "stdout", Text: text})
		}
		if _, err := s.AppendTaskLogs(ctx, "a", lines); err != nil {
			t.Fatalf("AppendTaskLogs: %v", err)
		}
		got, err := s.TaskLogs(ctx, "a", 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(texts) {
			t.Fatalf("got %d lines, want %d", len(got), len(texts))
		}
		for i, l := range got {
			if l.Text != texts[i] {
				t.Errorf("line %d: got %q, want %q", i+1, l.Text, texts[i])
			}
		}
	})
}

// A health detail with a NUL byte must not fail the batch it is in.
func TestRecordHealthOddDetail(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a := enroll(t, s, "web-1", "prod", "tp-1")
		b := enroll(t, s, "web-2", "prod", "tp-2")
		err := s.RecordHealth(ctx, []store.HealthResult{
			{AgentID: a.ID, Health: api.HealthWarning, Detail: "disk\x00low", At: t0},
			{AgentID: b.ID, Health: api.HealthHealthy, At: t0},
		})
		if err != nil {
			t.Fatalf("RecordHealth: %v", err)
		}
		if got := mustAgent(t, s, a.ID).HealthDetail; !strings.HasPrefix(got, "disk") || !strings.HasSuffix(got, "low") {
			t.Errorf("got detail %q, want disk<something>low", got)
		}
		if got := mustAgent(t, s, b.ID).Health; got != api.HealthHealthy {
			t.Errorf("other agent: got health %q, want %q", got, api.HealthHealthy)
		}
	})
}

func TestTaskVariablesOutputsArtifacts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		tk := newTask("v", "g", t0)
		tk.Variables = []store.TaskVariable{{Name: "REGION", Value: "eu west"}}
		tk.Sensitive = []store.SealedVariable{{Name: "DB_PASSWORD", Sealed: []byte{0, 1, 2, 255}}}
		if err := s.CreateTasks(ctx, []store.Task{tk}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Task(ctx, "v")
		if err != nil || !reflect.DeepEqual(got, tk) {
			t.Fatalf("Task: got %+v, %v; want %+v", got, err, tk)
		}

		// A running task keeps its sealed values: a node that takes it
		// over may have to start it again.
		if err := s.UpdateTask(ctx, "v", store.TaskUpdate{State: api.TaskRunning, StartedAt: t0}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Task(ctx, "v"); !reflect.DeepEqual(got.Sensitive, tk.Sensitive) {
			t.Fatalf("running: got sensitive %+v, want %+v", got.Sensitive, tk.Sensitive)
		}

		outputs := map[string]string{"VERSION": "1.2.3", "EMPTY": ""}
		artifacts := []store.TaskArtifact{{Name: "report.html", Size: 12, SHA256: strings.Repeat("ab", 32)}}
		err = s.UpdateTask(ctx, "v", store.TaskUpdate{State: api.TaskSucceeded, FinishedAt: t0.Add(time.Second),
			Outputs: outputs, Artifacts: artifacts})
		if err != nil {
			t.Fatal(err)
		}
		got, err = s.Task(ctx, "v")
		if err != nil {
			t.Fatal(err)
		}
		if want := []store.SealedVariable{{Name: "DB_PASSWORD"}}; !reflect.DeepEqual(got.Sensitive, want) {
			t.Errorf("final: got sensitive %+v, want %+v (names only)", got.Sensitive, want)
		}
		if !reflect.DeepEqual(got.Outputs, outputs) || !reflect.DeepEqual(got.Artifacts, artifacts) {
			t.Errorf("got outputs %v artifacts %+v, want %v %+v", got.Outputs, got.Artifacts, outputs, artifacts)
		}
		if !reflect.DeepEqual(got.Variables, tk.Variables) {
			t.Errorf("got variables %+v, want %+v", got.Variables, tk.Variables)
		}

		// An update without outputs leaves them.
		if err := s.UpdateTask(ctx, "v", store.TaskUpdate{State: api.TaskSucceeded}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Task(ctx, "v"); !reflect.DeepEqual(got.Outputs, outputs) {
			t.Errorf("after a plain update: got outputs %v, want %v", got.Outputs, outputs)
		}
	})
}

// TestTaskLostLines stores a task's lost output: a final update sets it,
// and an update that says nothing of it (0 and "") keeps it.
func TestTaskLostLines(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		if err := s.CreateTasks(ctx, []store.Task{newTask("a", "g", t0)}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Task(ctx, "a"); got.LostLines != 0 || got.LostReason != "" {
			t.Fatalf("new task: got %d lost (%q), want none", got.LostLines, got.LostReason)
		}
		const many = int64(1) << 40 // beyond 32 bits
		reason := "the agent could not write them to its disk: no space left on device \x00\xff"
		if err := s.UpdateTask(ctx, "a", store.TaskUpdate{State: api.TaskSucceeded, FinishedAt: t0, LostLines: many, LostReason: reason}); err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateTask(ctx, "a", store.TaskUpdate{State: api.TaskSucceeded, FinishedAt: t0}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Task(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		if got.LostLines != many || !strings.HasPrefix(got.LostReason, "the agent could not write them to its disk: no space left on device") {
			t.Fatalf("got %d lost (%q), want %d (%q)", got.LostLines, got.LostReason, many, reason)
		}
	})
}

func TestUpdateTaskWithLines(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		if err := s.CreateTasks(ctx, []store.Task{newTask("a", "g", t0)}); err != nil {
			t.Fatal(err)
		}
		line := func(text string) store.LogLine { return store.LogLine{Time: t0, Stream: "coordinator", Text: text} }
		tests := []struct {
			name  string
			u     store.TaskUpdate
			state string
			lines []string // the whole log after the update
		}{
			{"started, with its line", store.TaskUpdate{State: api.TaskRunning, StartedAt: t0, Lines: []store.LogLine{line("Started on web-1")}},
				api.TaskRunning, []string{"Started on web-1"}},
			{"no lines", store.TaskUpdate{State: api.TaskRunning, StartedAt: t0},
				api.TaskRunning, []string{"Started on web-1"}},
			{"finished, with its last line", store.TaskUpdate{State: api.TaskSucceeded, FinishedAt: t0, Lines: []store.LogLine{line("Task succeeded (exit code 0)")}},
				api.TaskSucceeded, []string{"Started on web-1", "Task succeeded (exit code 0)"}},
		}
		for _, tt := range tests {
			if err := s.UpdateTask(ctx, "a", tt.u); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			task, err := s.Task(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			lines, err := s.TaskLogs(ctx, "a", 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i, l := range lines {
				if l.Seq != int64(i+1) {
					t.Fatalf("%s: line %d has seq %d, want %d", tt.name, i, l.Seq, i+1)
				}
				got = append(got, l.Text)
			}
			if task.State != tt.state || !reflect.DeepEqual(got, tt.lines) || task.LastSeq != int64(len(tt.lines)) {
				t.Fatalf("%s: got %s with log %q (last seq %d), want %s with %q", tt.name, task.State, got, task.LastSeq, tt.state, tt.lines)
			}
		}
		// Nothing is stored for a task that does not exist.
		err := s.UpdateTask(ctx, "missing", store.TaskUpdate{State: api.TaskFailed, Lines: []store.LogLine{line("x")}})
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("update of an unknown task: got %v, want ErrNotFound", err)
		}
	})
}

// TestUpdateTaskIfNode checks the update a runner records a task's end
// with: made, lines and all, only while its node holds the unfinished
// task; otherwise ErrNotClaimed and nothing changed.
func TestUpdateTaskIfNode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		mine, other, unclaimed, done := newTask("mine", "g", t0), newTask("other", "g", t0), newTask("unclaimed", "g", t0), newTask("done", "g", t0)
		mine.Node, other.Node, done.Node = "n1", "n2", "n1"
		if err := s.CreateTasks(ctx, []store.Task{mine, other, unclaimed, done}); err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateTask(ctx, "done", store.TaskUpdate{State: api.TaskCancelled, ExitCode: -1, FinishedAt: t0}); err != nil {
			t.Fatal(err)
		}
		end := store.TaskUpdate{State: api.TaskSucceeded, FinishedAt: t0.Add(time.Second), IfNode: "n1",
			Lines: []store.LogLine{{Time: t0, Stream: "coordinator", Text: "Task succeeded (exit code 0)"}}}
		tests := []struct {
			id        string
			wantErr   error
			wantState string
			wantLines int64
		}{
			{"mine", nil, api.TaskSucceeded, 1},
			{"mine", store.ErrNotClaimed, api.TaskSucceeded, 1}, // finished now: not twice
			{"other", store.ErrNotClaimed, api.TaskQueued, 0},
			{"unclaimed", store.ErrNotClaimed, api.TaskQueued, 0},
			{"done", store.ErrNotClaimed, api.TaskCancelled, 0},
			{"missing", store.ErrNotClaimed, "", 0},
		}
		for i, tt := range tests {
			err := s.UpdateTask(ctx, tt.id, end)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("step %d: update %s: got %v, want %v", i, tt.id, err, tt.wantErr)
			}
			if tt.id == "missing" {
				continue
			}
			task, err := s.Task(ctx, tt.id)
			if err != nil {
				t.Fatal(err)
			}
			lines, err := s.TaskLogs(ctx, tt.id, 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			if task.State != tt.wantState || task.LastSeq != tt.wantLines || int64(len(lines)) != tt.wantLines {
				t.Fatalf("step %d: %s: got %s with %d lines (last seq %d), want %s with %d", i, tt.id, task.State, len(lines), task.LastSeq, tt.wantState, tt.wantLines)
			}
		}
	})
}
