package server

// The script console and a task's values over HTTP, against a coordinator
// running in the test process; console_script_browser_test.go drives the
// same pages through chromium.

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

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
