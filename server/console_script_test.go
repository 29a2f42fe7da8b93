package server

// The script console and a task's values over HTTP, against a coordinator
// running in the test process; console_script_browser_test.go drives the
// same pages through chromium.

import (
	"bytes"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/api"
)

// TestConsoleTaskValuesAndArtifact: a task's page lists its variables (a
// sensitive one by name only), its output variables and its artifacts,
// and the artifact downloads through the console's session as an
// attachment that cannot render as a page of the console.
func TestConsoleTaskValuesAndArtifact(t *testing.T) {
	ts := startServer(t, nil)
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	ts.upload(t, packBundle(t, "1.0.0", 0))

	const secret = "s3cret-Value-77"
	report := "<html><script>alert(1)</script></html>\n"
	script := strings.Join([]string{
		`printf '%s' '` + report + `' > report.html`,
		serviceLine("set-output", "VERSION", "2.4.1"),
		serviceLine("artifact", "", "report.html"),
	}, "\n")
	task := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", script},
		Variables: []api.Variable{{Name: "REGION", Value: "eu-west"}, {Name: "DB_PASSWORD", Value: secret, Sensitive: true}}})
	ts.waitFinished(t, task.ID)
	eventually(t, "the artifact collected", func() bool {
		v, err := ts.Task(t.Context(), task.ID)
		return err == nil && len(v.Artifacts) == 1
	})

	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	for _, path := range []string{"/tasks/" + task.ID, "/ui/fragments/tasks/" + task.ID} {
		t.Run(path, func(t *testing.T) {
			resp, body := c.get(path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got %d, want 200", resp.StatusCode)
			}
			for _, want := range []string{
				`<tr data-variable="REGION"><td data-label="Name"><code>REGION</code></td>`,
				`<code class="value">eu-west</code>`,
				`<tr data-variable="DB_PASSWORD"><td data-label="Name"><code>DB_PASSWORD</code></td>`,
				`<span class="sensitive">(sensitive)</span>`,
				`<tr data-output="VERSION">`, `<code class="value">2.4.1</code>`,
				`href="/ui/api/tasks/` + task.ID + `/artifacts/report.html" download="report.html">report.html</a>`,
			} {
				if !strings.Contains(body, want) {
					t.Errorf("got no %q in:\n%s", want, body)
				}
			}
			if strings.Contains(body, secret) {
				t.Errorf("got the sensitive value in the page, want its name only")
			}
		})
	}

	// The download: the file's bytes, offered as an attachment of a
	// generic type, sandboxed should anything render it.
	resp, body := c.get("/ui/api/tasks/" + task.ID + "/artifacts/report.html")
	if resp.StatusCode != http.StatusOK || body != report {
		t.Fatalf("download: got %d %q, want 200 %q", resp.StatusCode, body, report)
	}
	tests := []struct{ header, want string }{
		{"Content-Disposition", `attachment; filename=report.html`},
		{"Content-Type", "application/octet-stream"},
		{"X-Content-Type-Options", "nosniff"},
		{"Content-Security-Policy", "sandbox; default-src 'none'"},
	}
	for _, tt := range tests {
		if got := resp.Header.Get(tt.header); got != tt.want {
			t.Errorf("download's %s: got %q, want %q", tt.header, got, tt.want)
		}
	}
	// An unknown artifact is the API's 404; without a session, 401.
	if resp, _ := c.get("/ui/api/tasks/" + task.ID + "/artifacts/" + url.PathEscape("other.txt")); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown artifact: got %d, want 404", resp.StatusCode)
	}
	anon := newConsoleClient(t, ts)
	if resp, body := anon.get("/ui/api/tasks/" + task.ID + "/artifacts/report.html"); resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "alert") {
		t.Errorf("download without a session: got %d %q, want 401 without the file", resp.StatusCode, body)
	}
}

// TestConsoleScriptConsole: the script form starts one task per machine
// through the coordinator and shows them as one run; a refusal starts
// nothing and shows the form again with the coordinator's reason, the
// script and plain values kept and the sensitive value nowhere (not in
// the page, the redirect, nor the coordinator's log); Cancel all stops
// the run's unfinished tasks.
func TestConsoleScriptConsole(t *testing.T) {
	var serverLog logBuffer
	ts := startServer(t, func(c *Config) { c.Logger = serverLog.logger() })
	for _, name := range []string{"web-1", "web-2"} {
		startAgent(t, registerAgent(t, ts, ts.AgentAddr(), name, nil), nil)
		ts.waitConnected(t, name)
	}
	// Enrolled in another environment, never started: not connected.
	registerAgent(t, ts, ts.AgentAddr(), "db-1", func(rc *agent.RegisterConfig) { rc.Token = ts.token(t, "Staging") })
	ts.upload(t, packBundle(t, "1.0.0", 0))
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	const secret = "Sens1tive-Value-42"
	countTasks := func() int {
		t.Helper()
		all, err := ts.Tasks(t.Context(), api.TaskFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(all)
	}

	// The links that lead here choose the target.
	for _, tt := range []struct{ path, want string }{
		{"/script?agent=web-2", `<input type="checkbox" name="agent" value="web-2" checked>`},
		{"/script?environment=test", `<option value="Test" selected>`},
		{"/script?environment=test", `id="target-environment" checked>`},
		{"/script", `<input type="checkbox" name="agent" value="db-1"> db-1 <span class="muted">(not connected)</span>`},
	} {
		if resp, body := c.get(tt.path); resp.StatusCode != http.StatusOK || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s: got %d, want 200 with %q in:\n%s", tt.path, resp.StatusCode, tt.want, body)
		}
	}
	for _, tt := range []struct{ path, want string }{
		{"/", `<a class="button run-script" href="/script?environment=Test">Run a script</a>`},
		{"/machines/web-1", `<a class="button" id="run-script-here" href="/script?agent=web-1">Run a script on this machine</a>`},
	} {
		if _, body := c.get(tt.path); !strings.Contains(body, tt.want) {
			t.Errorf("GET %s: got no %q", tt.path, tt.want)
		}
	}

	form := func(agents ...string) url.Values {
		return url.Values{"target": {"machines"}, "agent": agents, "script": {`echo "hello from $REGION"; echo "$DB_PASSWORD"`},
			"var_name": {"REGION", ""}, "var_value": {"eu-west", ""}, "secret_name": {"DB_PASSWORD"}, "secret_value": {secret}}
	}
	refusals := []struct {
		name       string
		form       url.Values
		wantStatus int
		wantText   string
	}{
		{"a machine not connected", form("web-1", "db-1"), http.StatusConflict, "[db-1] not connected to this coordinator; nothing was started"},
		{"an unknown machine", form("web-1", "nope"), http.StatusNotFound, `no agent named &#34;nope&#34;; nothing was started`},
		{"a bad variable name", func() url.Values { f := form("web-1"); f["var_name"] = []string{"1BAD", ""}; return f }(),
			http.StatusBadRequest, "variable"},
		{"no machine", form(), http.StatusBadRequest, "Choose at least one machine, or an environment."},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.form
			f.Set("csrf", c.csrf())
			resp, body := c.do(http.MethodPost, "/actions/script", f, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got %d, want %d: %s", resp.StatusCode, tt.wantStatus, body)
			}
			for _, want := range []string{`id="script-error">`, tt.wantText,
				`>echo &#34;hello from $REGION&#34;; echo &#34;$DB_PASSWORD&#34;</textarea>`, `name="var_value" value="eu-west"`,
				`<input type="text" name="secret_name" value="DB_PASSWORD"`} {
				if !strings.Contains(body, want) {
					t.Errorf("got no %q in the refused form:\n%s", want, body)
				}
			}
			if strings.Contains(body, secret) {
				t.Error("got the sensitive value in the refused form, want it cleared")
			}
			if n := countTasks(); n != 0 {
				t.Errorf("got %d tasks after a refusal, want none", n)
			}
		})
	}
	// Without the form's token nothing runs either.
	f := form("web-1")
	if resp, _ := c.do(http.MethodPost, "/actions/script", f, nil); resp.StatusCode != http.StatusForbidden || countTasks() != 0 {
		t.Fatalf("script without the CSRF token: got %d and %d tasks, want 403 and none", resp.StatusCode, countTasks())
	}

	// Accepted: one task per machine, one group, shown together.
	f = form("web-1", "web-2")
	f.Set("csrf", c.csrf())
	resp, body := c.do(http.MethodPost, "/actions/script", f, nil)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/script/") || strings.Contains(loc, secret) {
		t.Fatalf("script: got %d to %q, want 303 to its group: %s", resp.StatusCode, loc, body)
	}
	group := strings.TrimPrefix(loc, "/script/")
	tasks, err := ts.Tasks(t.Context(), api.TaskFilter{Group: group})
	if err != nil || len(tasks) != 2 {
		t.Fatalf("group %s: got %d tasks, %v; want 2", group, len(tasks), err)
	}
	for _, tk := range tasks {
		done := ts.waitFinished(t, tk.ID)
		if done.State != api.TaskSucceeded {
			t.Fatalf("task on %s: got %s, want succeeded", tk.Agent, done.State)
		}
		if _, ok := lineWith(ts.taskLines(t, tk.ID), "stdout", "hello from eu-west"); !ok {
			t.Errorf("task on %s: its log lacks the plain variable's value", tk.Agent)
		}
	}
	_, page := c.get(loc)
	for _, want := range []string{"Script started on web-1, web-2.", `data-agent="web-1"`, `data-agent="web-2"`,
		`<code>REGION</code> = <code>eu-west</code>`, `<code>DB_PASSWORD</code> <span class="sensitive">(sensitive)</span>`,
		`<span class="task-state task-succeeded">2 succeeded</span>`} {
		if !strings.Contains(page, want) {
			t.Errorf("group view: got no %q in:\n%s", want, page)
		}
	}
	if strings.Contains(page, `id="cancel-all"`) {
		t.Error("group view of finished tasks: got a Cancel all button, want none")
	}
	// The task page links back to its run.
	if _, body := c.get("/tasks/" + tasks[0].ID); !strings.Contains(body, `<a href="/script/`+group+`" id="task-group">`) {
		t.Errorf("task page: got no link to its group in:\n%s", body)
	}
	for _, path := range []string{loc, "/ui/fragments/script/" + group, "/tasks/" + tasks[0].ID, "/tasks/" + tasks[1].ID, "/tasks"} {
		if _, body := c.get(path); strings.Contains(body, secret) {
			t.Errorf("GET %s: got the sensitive value, want it nowhere", path)
		}
	}
	if bytes.Contains(serverLog.bytes(), []byte(secret)) {
		t.Error("the coordinator's log holds the sensitive value")
	}
	if resp, _ := c.get("/script/no-such-group"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown group: got %d, want 404", resp.StatusCode)
	}

	// Cancel all: the unfinished tasks of a run are cancelled.
	f = url.Values{"target": {"machines"}, "agent": {"web-1", "web-2"}, "script": {"sleep 30"}, "csrf": {c.csrf()}}
	resp, _ = c.do(http.MethodPost, "/actions/script", f, nil)
	loc = resp.Header.Get("Location")
	group = strings.TrimPrefix(loc, "/script/")
	_, page = c.get(loc)
	if m := regexp.MustCompile(`id="cancel-all"[^>]*>Cancel all \(2\)<`).FindString(page); m == "" {
		t.Fatalf("group view of running tasks: got no Cancel all (2) in:\n%s", page)
	}
	resp, page = c.post("/actions/script/"+group+"/cancel", url.Values{})
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "Cancel sent to the tasks on web-1, web-2.") {
		t.Fatalf("cancel all: got %d, want the group view saying so:\n%s", resp.StatusCode, page)
	}
	tasks, _ = ts.Tasks(t.Context(), api.TaskFilter{Group: group})
	for _, tk := range tasks {
		if done := ts.waitFinished(t, tk.ID); done.State != api.TaskCancelled {
			t.Errorf("task on %s after Cancel all: got %s, want cancelled", tk.Agent, done.State)
		}
	}
	_, page = c.post("/actions/script/"+group+"/cancel", url.Values{})
	if !strings.Contains(page, "Every task of this run had already finished.") {
		t.Errorf("cancel all again: got no word that all had finished in:\n%s", page)
	}
}
