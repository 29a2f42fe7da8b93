package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
)

func TestTaskRunUsage(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no --", []string{"task", "run", "--agent", "web01"}, "no Calamari arguments given: put them after --, e.g. tendril-server task run"},
		{"nothing after --", []string{"task", "run", "--agent", "web01", "--"}, "no Calamari arguments given"},
		{"argument before --", []string{"task", "run", "--agent", "web01", "run-script", "--", "x"}, `unexpected argument "run-script": Calamari's arguments go after --`},
		{"arguments without --", []string{"task", "run", "--agent", "web01", "run-script"}, `unexpected argument "run-script"`},
		{"Calamari flag without --", []string{"task", "run", "--agent", "web01", "run-script", "--inline", "x"}, "unknown flag: --inline (Calamari's arguments go after --"},
		{"no target", []string{"task", "run", "--", "run-script"}, "give exactly one of --agent NAME (repeatable) or --environment ENV"},
		{"both targets", []string{"task", "run", "--agent", "web01", "--environment", "Test", "--", "run-script"}, "give exactly one of"},
		{"lock name with a space", []string{"task", "run", "--agent", "web01", "--lock", "my db", "--", "run-script"}, `lock name "my db": use 1-63 letters, digits, '.', '_' or '-'`},
		{"lock name with a slash", []string{"task", "run", "--agent", "web01", "--lock", "db", "--lock", "a/b", "--", "run-script"}, `lock name "a/b": use 1-63 letters`},
		{"empty lock name", []string{"task", "run", "--agent", "web01", "--lock", "", "--", "run-script"}, `lock name "": use 1-63 letters`},
		{"unknown isolation", []string{"task", "run", "--agent", "web01", "--isolation", "partial", "--", "run-script"}, `isolation "partial": use "full" (the task runs alone on its agent; the default) or "none"`},
		{"variable without =", []string{"task", "run", "--agent", "web01", "--var", "REGION", "--", "run-script"}, `--var "REGION": want NAME=VALUE`},
		{"sensitive variable without =", []string{"task", "run", "--agent", "web01", "--sensitive-var", "hunter2", "--", "run-script"}, "--sensitive-var: want NAME=VALUE or NAME=@FILE (the argument has no NAME=)"},
		{"sensitive file missing", []string{"task", "run", "--agent", "web01", "--sensitive-var", "PW=@/nonexistent/pw.txt", "--", "run-script"}, "--sensitive-var PW: open /nonexistent/pw.txt: no such file or directory"},
		{"var-from without output", []string{"task", "run", "--agent", "web01", "--var-from", "abc", "--", "run-script"}, `--var-from "abc": want TASK:OUTPUT or NAME=TASK:OUTPUT`},
		{"var-from with an empty name", []string{"task", "run", "--agent", "web01", "--var-from", "=abc:X", "--", "run-script"}, `--var-from "=abc:X": want`},
		{"artifact without name", []string{"task", "artifact", "abc"}, "want a task ID and an artifact name, got 1 arguments"},
		{"show without ID", []string{"task", "show"}, "want exactly one task ID"},
		{"cancel without IDs", []string{"task", "cancel"}, "give task IDs or --group GROUP"},
		{"cancel IDs and a group", []string{"task", "cancel", "a", "--group", "g"}, "give task IDs or --group GROUP"},
		{"list limit too big", []string{"task", "list", "--limit", "5000"}, "--limit must be from 1 to 1000"},
		{"list limit zero", []string{"task", "list", "--limit", "0"}, "--limit must be from 1 to 1000"},
		{"update without target", []string{"calamari", "update"}, "give exactly one of --environment ENV or --agent NAME"},
		{"update with both", []string{"calamari", "update", "--agent", "a", "--environment", "b"}, "give exactly one of"},
		{"push without file", []string{"calamari", "push"}, "want exactly one bundle file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A coordinator is named, so that a usage error can only come
			// from the command line itself.
			code, stdout, stderr := cli(t, ctx, map[string]string{envURL: "http://127.0.0.1:1", envAPIKey: "k"}, tc.args...)
			if code != 2 || stdout != "" || !strings.HasPrefix(stderr, "tendril-server: ") || !strings.Contains(stderr, tc.want) ||
				strings.Count(stderr, "\n") != 1 {
				t.Fatalf("got %d, stdout %q, stderr %q; want 2 and one line containing %q", code, stdout, stderr, tc.want)
			}
		})
	}
}

func TestTaskRunArguments(t *testing.T) {
	// A sensitive value from a file loses one final newline, no more.
	secretFile := writeTempFile(t, "key.txt", []byte("line1\nline2\n"))
	for _, tc := range []struct {
		name string
		args []string
		want api.TaskRequest
	}{
		{"agent", []string{"--agent", "web01", "--", "run-script", "--inline", "echo hi"},
			api.TaskRequest{Agent: "web01", Args: []string{"run-script", "--inline", "echo hi"}}},
		{"environment and version", []string{"--environment", "Prod", "--calamari", "1.2.3", "--", "run-script"},
			api.TaskRequest{Environment: "Prod", Calamari: "1.2.3", Args: []string{"run-script"}}},
		{"everything after -- unchanged", []string{"--agent", "web01", "--", "x", "--agent", "other", "--", "-v", ""},
			api.TaskRequest{Agent: "web01", Args: []string{"x", "--agent", "other", "--", "-v", ""}}},
		{"flags between", []string{"--agent", "web01", "--json", "--", "run-script"},
			api.TaskRequest{Agent: "web01", Args: []string{"run-script"}}},
		{"isolation and locks", []string{"--agent", "web01", "--isolation", "none", "--lock", "db", "--lock", "cache.1", "--", "run-script"},
			api.TaskRequest{Agent: "web01", Args: []string{"run-script"}, Isolation: "none", Locks: []string{"db", "cache.1"}}},
		{"full isolation", []string{"--agent", "web01", "--isolation", "full", "--", "run-script"},
			api.TaskRequest{Agent: "web01", Args: []string{"run-script"}, Isolation: "full"}},
		{"several agents", []string{"--agent", "web01", "--agent", "web02", "--agent", "web03", "--", "run-script"},
			api.TaskRequest{Agent: "web01", Agents: []string{"web02", "web03"}, Args: []string{"run-script"}}},
		{"variables", []string{"--agent", "web01", "--var", "REGION=eu west", "--var", "EMPTY=", "--var", "EQ=a=b",
			"--sensitive-var", "PW=hunter2", "--sensitive-var", "KEY=@" + secretFile, "--var-from", "t9:BUILD", "--var-from", "PREV=t8:OUT", "--", "run-script"},
			api.TaskRequest{Agent: "web01", Args: []string{"run-script"},
				Variables: []api.Variable{{Name: "REGION", Value: "eu west"}, {Name: "EMPTY"}, {Name: "EQ", Value: "a=b"},
					{Name: "PW", Value: "hunter2", Sensitive: true}, {Name: "KEY", Value: "line1\nline2", Sensitive: true}},
				VariablesFrom: []api.VariableFrom{{Task: "t9", Output: "BUILD"}, {Name: "PREV", Task: "t8", Output: "OUT"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.tasks = []api.TaskView{{ID: "t1", Agent: "web01"}}
			code, _, stderr := cli(t, context.Background(), f.vars(), append([]string{"task", "run", "--json"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("got %d %q, want 0", code, stderr)
			}
			got, _, _ := f.received()
			if got == nil || !reflect.DeepEqual(*got, tc.want) {
				t.Fatalf("got request %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestTaskRunJSON(t *testing.T) {
	f := newFakeAPI(t)
	f.tasks = []api.TaskView{{ID: "t1", Agent: "web01", State: "queued"}, {ID: "t2", Agent: "web02", State: "queued"}}
	code, stdout, stderr := cli(t, context.Background(), f.vars(), "task", "run", "--environment", "Prod", "--json", "--", "run-script")
	var got []api.TaskView
	if code != 0 || json.Unmarshal([]byte(stdout), &got) != nil || len(got) != 2 || got[1].ID != "t2" || stderr != "" {
		t.Fatalf("got %d, stdout %q, stderr %q; want the created tasks as JSON", code, stdout, stderr)
	}
	for _, r := range f.sent() {
		if strings.Contains(r, "/log") {
			t.Fatalf("--json followed the log: %q", r)
		}
	}
}

func TestTaskRunFile(t *testing.T) {
	f := newFakeAPI(t)
	f.tasks = []api.TaskView{{ID: "t1", Agent: "web01"}}
	f.ends["t1"] = finished("t1", "web01", "succeeded", 0, "")
	pkg := filepath.Join(t.TempDir(), "app-1.0.tar.gz")
	content := []byte("not really a tarball")
	if err := os.WriteFile(pkg, content, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := cli(t, context.Background(), f.vars(), "task", "run", "--agent", "web01", "--file", pkg, "--", "deploy")
	sum := sha256.Sum256(content)
	want := api.FileRef{Name: "app-1.0.tar.gz", SHA256: hex.EncodeToString(sum[:])}
	req, file, _ := f.received()
	if code != 0 || req == nil || req.File == nil || *req.File != want || string(file) != string(content) {
		t.Fatalf("got %d %q, request %+v; want the file uploaded and named %+v", code, stderr, req, want)
	}
	if sent := f.sent(); !strings.HasPrefix(sent[0], "POST /api/files") || !strings.HasPrefix(sent[1], "POST /api/tasks") {
		t.Fatalf("requests %q: want the upload before the task", sent)
	}

	code, _, stderr = cli(t, context.Background(), f.vars(), "task", "run", "--agent", "web01", "--file", filepath.Join(t.TempDir(), "missing"), "--", "deploy")
	if code != 1 || !strings.HasPrefix(stderr, "tendril-server: upload") || !strings.Contains(stderr, "no such file") {
		t.Fatalf("missing file: got %d %q", code, stderr)
	}
}

func TestTaskRunExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		end        api.TaskView
		wantCode   int
		wantStderr string
	}{
		{"succeeded", finished("t1", "web01", "succeeded", 0, ""), 0, "task t1 on web01\n"},
		{"failed with an exit code", finished("t1", "web01", "failed", 3, ""), 3,
			"task t1 on web01\ntendril-server: task t1 on web01 failed (exit code 3)\n"},
		{"refused before start", finished("t1", "web01", "failed", -1, "task refused: no such version"), 1,
			"task t1 on web01\ntendril-server: task t1 on web01 failed: task refused: no such version\n"},
		{"cancelled", finished("t1", "web01", "cancelled", -1, "cancelled"), 130,
			"task t1 on web01\ntendril-server: task t1 on web01 cancelled\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.tasks = []api.TaskView{{ID: "t1", Agent: "web01"}}
			f.logs["t1"] = []string{"Started on web01: calamari 1.2.3", "hello", "Task " + tc.end.State}
			f.ends["t1"] = tc.end
			code, stdout, stderr := cli(t, context.Background(), f.vars(), "task", "run", "--agent", "web01", "--", "run-script")
			if code != tc.wantCode || stdout != "Started on web01: calamari 1.2.3\nhello\nTask "+tc.end.State+"\n" || stderr != tc.wantStderr {
				t.Fatalf("got %d, stdout %q, stderr %q; want %d, the log, and stderr %q", code, stdout, stderr, tc.wantCode, tc.wantStderr)
			}
		})
	}
}

func TestTaskExitCode(t *testing.T) {
	for _, tc := range []struct {
		state string
		code  int
		want  int
	}{
		{"succeeded", 0, 0},
		{"failed", 3, 3},
		{"failed", 255, 255},
		{"failed", 0, 1},
		{"failed", -1, 1},
		{"failed", 256, 1},         // would wrap to 0 in a Unix exit status
		{"failed", -1073741819, 1}, // a Windows NTSTATUS
		{"cancelled", -1, 130},
		{"running", 0, 1},
	} {
		if got := taskExitCode(api.TaskView{State: tc.state, ExitCode: tc.code}); got != tc.want {
			t.Errorf("taskExitCode(%s, %d): got %d, want %d", tc.state, tc.code, got, tc.want)
		}
	}
}

func shortRetries(t *testing.T) {
	t.Helper()
	minWait, maxWait := followRetryMin, followRetryMax
	followRetryMin, followRetryMax = 5*time.Millisecond, 20*time.Millisecond
	t.Cleanup(func() { followRetryMin, followRetryMax = minWait, maxWait })
}

func TestTaskRunResumes(t *testing.T) {
	shortRetries(t)
	f := newFakeAPI(t)
	f.tasks = []api.TaskView{{ID: "t1", Agent: "web01"}}
	lines := []string{"one", "two", "three"}
	var (
		mu    sync.Mutex
		froms []string
	)
	f.logHandler = func(w http.ResponseWriter, r *http.Request, id string, call int) {
		mu.Lock()
		froms = append(froms, r.URL.Query().Get("from")+" "+r.URL.Query().Get("follow"))
		mu.Unlock()
		switch call {
		case 1: // the stream breaks after the first line
			writeLogLines(w, 1, lines[:1])
		case 2, 3: // the coordinator is restarting behind a proxy
			writeTestJSON(w, http.StatusBadGateway, api.APIError{Error: "upstream down"})
		default:
			writeLogLines(w, 2, lines)
			writeLogEnd(w, finished("t1", "web01", "succeeded", 0, ""))
		}
	}
	code, stdout, stderr := cli(t, context.Background(), f.vars(), "task", "run", "--agent", "web01", "--", "run-script")
	if code != 0 || stdout != "one\ntwo\nthree\n" {
		t.Fatalf("got %d, stdout %q, stderr %q; want 0 and each line once", code, stdout, stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"1 true", "2 true", "2 true", "2 true"}; !slices.Equal(froms, want) {
		t.Fatalf("log requests (from, follow): got %q, want %q", froms, want)
	}
	want := "task t1 on web01\n" +
		"following task t1: follow task log: upstream down (HTTP 502); retrying until the coordinator answers (the task keeps running)\n" +
		"following task t1 again\n"
	if stderr != want {
		t.Fatalf("stderr: got %q, want %q", stderr, want)
	}
}

func TestTaskRunFollowRefused(t *testing.T) {
	// A refusal (4xx) is final: no retry.
	f := newFakeAPI(t)
	f.tasks = []api.TaskView{{ID: "t1", Agent: "web01"}}
	f.logHandler = func(w http.ResponseWriter, r *http.Request, id string, call int) {
		writeTestJSON(w, http.StatusNotFound, api.APIError{Error: "task t1: not found"})
	}
	code, _, stderr := cli(t, context.Background(), f.vars(), "task", "run", "--agent", "web01", "--", "run-script")
	if want := "task t1 on web01\ntendril-server: task t1 on web01: follow task log: task t1: not found (HTTP 404)\n"; code != 1 || stderr != want {
		t.Fatalf("got %d %q, want 1 %q", code, stderr, want)
	}
}

func TestTaskRunSeveralAgents(t *testing.T) {
	f := newFakeAPI(t)
	f.tasks = []api.TaskView{{ID: "t1", Agent: "web01"}, {ID: "t2", Agent: "web02"}}
	f.logs["t1"] = []string{"a1", "a2"}
	f.logs["t2"] = []string{"b1", "b2\nb3"}
	f.ends["t1"] = finished("t1", "web01", "succeeded", 0, "")
	f.ends["t2"] = finished("t2", "web02", "failed", 2, "")
	code, stdout, stderr := cli(t, context.Background(), f.vars(), "task", "run", "--environment", "Prod", "--", "run-script")
	if code != 1 {
		t.Fatalf("got %d, want 1 (one task failed); stderr %q", code, stderr)
	}
	// The two logs interleave, each in its own order.
	var web01, web02 []string
	for line := range strings.SplitSeq(strings.TrimSuffix(stdout, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "web01: "):
			web01 = append(web01, line)
		case strings.HasPrefix(line, "web02: "):
			web02 = append(web02, line)
		default:
			t.Fatalf("line %q has no agent prefix", line)
		}
	}
	if !slices.Equal(web01, []string{"web01: a1", "web01: a2"}) || !slices.Equal(web02, []string{"web02: b1", "web02: b2", "web02: b3"}) {
		t.Fatalf("stdout %q", stdout)
	}
	want := "task t1 on web01\ntask t2 on web02\n" +
		"web01  task t1  succeeded (exit code 0)\n" +
		"web02  task t2  failed (exit code 2)\n" +
		"tendril-server: 1 of 2 tasks did not succeed\n"
	if stderr != want {
		t.Fatalf("stderr: got %q, want %q", stderr, want)
	}

	f.ends["t2"] = finished("t2", "web02", "succeeded", 0, "")
	if code, _, stderr := cli(t, context.Background(), f.vars(), "task", "run", "--environment", "Prod", "--", "run-script"); code != 0 ||
		strings.Contains(stderr, "tendril-server:") {
		t.Fatalf("all succeeded: got %d %q, want 0", code, stderr)
	}
}

func TestTaskRunInterrupt(t *testing.T) {
	f := newFakeAPI(t)
	f.tasks = []api.TaskView{{ID: "t1", Agent: "web01"}}
	f.logHandler = func(w http.ResponseWriter, r *http.Request, id string, call int) {
		writeLogLines(w, 1, []string{"working"})
		<-r.Context().Done() // the task runs on
	}
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"task", "run", "--agent", "web01", "--", "run-script"},
			Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return f.vars()[k] }})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for out.String() != "working\n" {
		if time.Now().After(deadline) {
			t.Fatalf("the log never arrived; stderr %q", errOut.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	interrupt() // Ctrl-C
	code := <-done
	want := "task t1 on web01\ntask t1 keeps running; see it with: tendril-server task show t1\n"
	if code != 130 || errOut.String() != want {
		t.Fatalf("got %d, stderr %q; want 130 and %q", code, errOut.String(), want)
	}
	for _, r := range f.sent() {
		if strings.Contains(r, "/cancel") {
			t.Fatal("Ctrl-C cancelled the task")
		}
	}
}

func TestTaskShow(t *testing.T) {
	f := newFakeAPI(t)
	end := finished("t1", "web01", "failed", 3, "")
	end.Args = []string{"run-script", "--inline", "echo 'hi'"}
	end.File = "app.tar.gz"
	end.Isolation, end.Locks = "none", []string{"db", "web"}
	f.tasks = []api.TaskView{end}
	f.logs["t1"] = []string{"Started on web01: calamari 1.2.3", "hi", "Task failed (exit code 3)"}
	f.ends["t1"] = end

	code, stdout, stderr := cli(t, context.Background(), f.vars(), "task", "show", "t1")
	want := `Task:      t1
Agent:     web01
State:     failed (exit code 3)
Calamari:  1.2.3
Args:      run-script --inline 'echo '\''hi'\'''
File:      app.tar.gz
Isolation: none
Locks:     db, web
Created:   2026-01-02T12:00:00Z
Started:   2026-01-02T12:00:00Z
Finished:  2026-01-02T12:00:03Z (took 3s)

Started on web01: calamari 1.2.3
hi
Task failed (exit code 3)
`
	if code != 0 || stdout != want || stderr != "" {
		t.Fatalf("got %d, stderr %q, stdout:\n%s\nwant:\n%s", code, stderr, stdout, want)
	}

	code, stdout, _ = cli(t, context.Background(), f.vars(), "task", "show", "t1", "--json")
	var got taskShow
	if code != 0 || json.Unmarshal([]byte(stdout), &got) != nil || got.Task.ID != "t1" || got.Task.ExitCode != 3 ||
		len(got.Log) != 3 || got.Log[1].Seq != 2 || got.Log[1].Text != "hi" {
		t.Fatalf("--json: got %d %q", code, stdout)
	}
	var raw map[string]json.RawMessage
	json.Unmarshal([]byte(stdout), &raw)
	if len(raw) != 2 || raw["task"] == nil || raw["log"] == nil {
		t.Fatalf("--json: want exactly the keys task and log: %s", stdout)
	}

	// --follow exits as task run does.
	if code, _, stderr := cli(t, context.Background(), f.vars(), "task", "show", "t1", "--follow"); code != 3 ||
		stderr != "tendril-server: task t1 on web01 failed (exit code 3)\n" {
		t.Fatalf("--follow: got %d %q, want 3", code, stderr)
	}

	// A running task: the log so far, and an empty log is [] in JSON.
	f.tasks = []api.TaskView{{ID: "t2", Agent: "web01", State: "running", Args: []string{"x"}}}
	code, stdout, _ = cli(t, context.Background(), f.vars(), "task", "show", "t2", "--json")
	if code != 0 || !strings.Contains(stdout, `"log": []`) || !strings.Contains(stdout, `"state": "running"`) {
		t.Fatalf("running task --json: got %d %q", code, stdout)
	}

	code, _, stderr = cli(t, context.Background(), f.vars(), "task", "show", "nope")
	if code != 1 || stderr != "tendril-server: get task: task nope: not found (HTTP 404)\n" {
		t.Fatalf("unknown task: got %d %q", code, stderr)
	}
}

func TestTaskListAndCancel(t *testing.T) {
	f := newFakeAPI(t)
	f.tasks = []api.TaskView{finished("t1", "web01", "succeeded", 0, "")}
	code, stdout, _ := cli(t, context.Background(), f.vars(), "task", "list", "--agent", "web 01", "--limit", "5")
	if code != 0 || !strings.HasPrefix(stdout, "ID ") || !strings.Contains(stdout, "t1") {
		t.Fatalf("list: got %d %q", code, stdout)
	}
	if sent := f.sent(); sent[len(sent)-1] != "GET /api/tasks?agent=web+01&limit=5" {
		t.Fatalf("list request: got %q", sent[len(sent)-1])
	}
	code, stdout, _ = cli(t, context.Background(), f.vars(), "task", "list", "--json")
	var got []api.TaskView
	if code != 0 || json.Unmarshal([]byte(stdout), &got) != nil || len(got) != 1 || got[0].ID != "t1" {
		t.Fatalf("list --json: got %d %q", code, stdout)
	}
	if sent := f.sent(); sent[len(sent)-1] != "GET /api/tasks" {
		t.Fatalf("list request without flags: got %q", sent[len(sent)-1])
	}

	f.tasks[0].State = "running"
	code, stdout, _ = cli(t, context.Background(), f.vars(), "task", "cancel", "t1")
	if want := "Cancellation of task t1 on web01 requested (state: running); follow it with: tendril-server task show t1 --follow\n"; code != 0 || stdout != want {
		t.Fatalf("cancel: got %d %q, want %q", code, stdout, want)
	}
	if sent := f.sent(); sent[len(sent)-1] != "POST /api/tasks/t1/cancel" {
		t.Fatalf("cancel request: got %q", sent[len(sent)-1])
	}

	// A group: its unfinished tasks are cancelled, its finished ones left.
	f.tasks = []api.TaskView{{ID: "t1", Agent: "web01", State: "running"}, {ID: "t2", Agent: "web02", State: "succeeded"}, {ID: "t3", Agent: "web03", State: "queued"}}
	code, stdout, _ = cli(t, context.Background(), f.vars(), "task", "cancel", "--group", "g1")
	sent := f.sent()
	if code != 0 || strings.Count(stdout, "Cancellation of task") != 2 || !slices.Equal(sent[len(sent)-3:],
		[]string{"GET /api/tasks?group=g1&limit=1000", "POST /api/tasks/t1/cancel", "POST /api/tasks/t3/cancel"}) {
		t.Fatalf("cancel --group: got %d %q, requests %q", code, stdout, sent[len(sent)-3:])
	}
}
