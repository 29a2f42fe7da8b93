package server

// The web console over HTTP, against a coordinator running in the test
// process: sign-in, sessions, CSRF refusals, escaping. The browser tests
// (console_browser_test.go) drive the same pages through chromium.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/console"
	"github.com/tendrildeploy/tendril/server/httpapi"
	"github.com/tendrildeploy/tendril/server/secret"
	"github.com/tendrildeploy/tendril/server/store"
)

// consoleClient is a browser stand-in: it keeps the session cookie and
// never follows redirects, so tests see where they point.
type consoleClient struct {
	t      *testing.T
	base   string
	hc     *http.Client
	cookie *http.Cookie
}

func newConsoleClient(t *testing.T, ts *testServer) *consoleClient {
	t.Helper()
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(hc.CloseIdleConnections)
	return &consoleClient{t: t, base: "http://" + ts.HTTPAddr(), hc: hc}
}

func adminKey(t *testing.T, ts *testServer) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ts.dir, api.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// do sends a request with the session cookie, if any, and returns the
// response with its body read.
func (c *consoleClient) do(method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if c.cookie != nil {
		req.AddCookie(c.cookie)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, string(b)
}

func (c *consoleClient) get(path string) (*http.Response, string) {
	c.t.Helper()
	return c.do(http.MethodGet, path, nil, nil)
}

// signIn signs in with key and keeps the session cookie.
func (c *consoleClient) signIn(key string) {
	c.t.Helper()
	resp, body := c.do(http.MethodPost, "/signin", url.Values{"key": {key}, "next": {"/"}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		c.t.Fatalf("sign in: got %d, want 303: %s", resp.StatusCode, body)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == console.CookieName {
			c.cookie = ck
		}
	}
	if c.cookie == nil {
		c.t.Fatal("sign in: no session cookie set")
	}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the session's CSRF token from a page's forms.
func (c *consoleClient) csrf() string {
	c.t.Helper()
	resp, body := c.get("/")
	m := csrfField.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		c.t.Fatalf("home page: got %d and no CSRF field, want 200 with forms", resp.StatusCode)
	}
	return m[1]
}

func TestConsoleSignIn(t *testing.T) {
	ts := startServer(t, nil)
	key := adminKey(t, ts)
	c := newConsoleClient(t, ts)

	tests := []struct {
		name       string
		key        string
		wantStatus int
		wantText   string
	}{
		{"empty key", "", http.StatusBadRequest, "Enter a user name and password, or an API key."},
		{"blank key", "   ", http.StatusBadRequest, "Enter a user name and password, or an API key."},
		{"wrong key", "tdk_not-a-key", http.StatusUnauthorized, "That API key is not valid."},
		{"key with a typo", key + "x", http.StatusUnauthorized, "That API key is not valid."},
		{"oversize key", strings.Repeat("k", httpapi.MaxRequestBody+1), http.StatusBadRequest, "The form could not be read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := c.do(http.MethodPost, "/signin", url.Values{"key": {tt.key}}, nil)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantText) {
				t.Fatalf("got %d, want %d with %q", resp.StatusCode, tt.wantStatus, tt.wantText)
			}
			if len(resp.Cookies()) != 0 {
				t.Fatalf("got cookies %v, want none for a refused sign-in", resp.Cookies())
			}
		})
	}

	// The sign-in page remembers where the visitor was going, but only
	// within this site.
	resp, _ := c.get("/tasks")
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/signin?next=%2Ftasks" {
		t.Fatalf("GET /tasks signed out: got %d to %q, want 303 to /signin?next=%%2Ftasks", resp.StatusCode, loc)
	}
	resp, body := c.do(http.MethodPost, "/signin", url.Values{"key": {" " + key + "\n"}, "next": {"/tasks"}}, nil)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/tasks" {
		t.Fatalf("sign in: got %d to %q, want 303 to /tasks: %s", resp.StatusCode, loc, body)
	}
	var ck *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == console.CookieName {
			ck = k
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure || ck.Path != "/" || len(ck.Value) < 40 {
		t.Fatalf("got cookie %+v, want HttpOnly, SameSite=Strict, Path=/, not Secure over plain HTTP, a long random value", ck)
	}
	if strings.Contains(ck.Value, key) {
		t.Fatal("the cookie carries the API key; want a session id only")
	}
	c.cookie = ck
	resp, body = c.get("/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<h1>Environments</h1>") {
		t.Fatalf("home signed in: got %d, want 200 with the environments page", resp.StatusCode)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("got CSP %q, want scripts limited to the console's own", csp)
	}
	// Signed in, the sign-in page sends the visitor on.
	resp, _ = c.get("/signin?next=/tasks")
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/tasks" {
		t.Fatalf("sign-in page signed in: got %d to %q, want 303 to /tasks", resp.StatusCode, loc)
	}

	// Signing out ends the session on the server: the old cookie is dead.
	csrf := c.csrf()
	resp, _ = c.do(http.MethodPost, "/signout", url.Values{"csrf": {csrf}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/signin" {
		t.Fatalf("sign out: got %d to %q, want 303 to /signin", resp.StatusCode, resp.Header.Get("Location"))
	}
	cleared := false
	for _, k := range resp.Cookies() {
		cleared = cleared || k.Name == console.CookieName && k.MaxAge < 0
	}
	if !cleared {
		t.Fatal("sign out: the session cookie was not cleared")
	}
	resp, _ = c.get("/")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("old cookie after sign out: got %d, want 303 to sign in", resp.StatusCode)
	}
}

func TestConsoleUnauthenticated(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "web-1")
	key := adminKey(t, ts)
	c := newConsoleClient(t, ts)
	stale := &http.Cookie{Name: console.CookieName, Value: "not-a-session"}

	tests := []struct {
		name       string
		method     string
		path       string
		cookie     *http.Cookie
		wantStatus int
		wantLoc    string // for redirects
		wantJSON   bool
	}{
		{"home", "GET", "/", nil, http.StatusSeeOther, "/signin?next=%2F", false},
		{"machine", "GET", "/machines/web-1", nil, http.StatusSeeOther, "/signin?next=%2Fmachines%2Fweb-1", false},
		{"tasks", "GET", "/tasks", stale, http.StatusSeeOther, "/signin?next=%2Ftasks", false},
		{"task", "GET", "/tasks/abc", nil, http.StatusSeeOther, "/signin?next=%2Ftasks%2Fabc", false},
		{"environments fragment", "GET", "/ui/fragments/environments", nil, http.StatusUnauthorized, "", true},
		{"machine fragment", "GET", "/ui/fragments/machines/web-1", stale, http.StatusUnauthorized, "", true},
		{"task log", "GET", "/ui/api/tasks/abc/log", nil, http.StatusUnauthorized, "", true},
		{"delete action", "POST", "/actions/agents/web-1/delete", nil, http.StatusSeeOther, "/signin", false},
		{"update action", "POST", "/actions/calamari/update", stale, http.StatusSeeOther, "/signin", false},
		// A console session is not an API key: the JSON API still wants
		// its bearer key.
		{"API with a cookie only", "GET", "/api/agents", stale, http.StatusUnauthorized, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.cookie = tt.cookie
			var form url.Values
			if tt.method == "POST" {
				form = url.Values{"environment": {"Test"}}
			}
			resp, body := c.do(tt.method, tt.path, form, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got %d, want %d: %s", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantLoc != "" && resp.Header.Get("Location") != tt.wantLoc {
				t.Fatalf("got Location %q, want %q", resp.Header.Get("Location"), tt.wantLoc)
			}
			if tt.wantJSON {
				var e api.APIError
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
					t.Fatalf("got %q (%s), want a JSON error", body, resp.Header.Get("Content-Type"))
				}
			}
		})
	}
	if v := ts.agentView(t, "web-1"); !v.Connected {
		t.Fatal("web-1 changed by refused requests: got disconnected, want connected")
	}

	// The API with its bearer key is unchanged, and a signed-in session
	// does not replace the key there.
	c.signIn(key)
	resp, _ := c.get("/api/agents")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("API with a live session cookie: got %d, want 401", resp.StatusCode)
	}
	resp, body := c.do("GET", "/api/agents", nil, map[string]string{"Authorization": "Bearer " + key})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"web-1"`) {
		t.Fatalf("API with the bearer key: got %d, want 200 listing web-1", resp.StatusCode)
	}
}

func TestConsoleCSRF(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "web-1")
	key := adminKey(t, ts)
	c := newConsoleClient(t, ts)
	c.signIn(key)
	csrf := c.csrf()
	other := newConsoleClient(t, ts)
	other.signIn(key)
	otherCSRF := other.csrf()
	if otherCSRF == csrf {
		t.Fatal("two sessions share a CSRF token; want one per session")
	}

	tests := []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"no token", url.Values{}, nil},
		{"empty token", url.Values{"csrf": {""}}, nil},
		{"wrong token", url.Values{"csrf": {"AAAA" + csrf[4:]}}, nil},
		{"truncated token", url.Values{"csrf": {csrf[:len(csrf)-1]}}, nil},
		{"another session's token", url.Values{"csrf": {otherCSRF}}, nil},
		{"wrong header", url.Values{}, map[string]string{console.CSRFHeader: "nope"}},
		{"right token from another site", url.Values{"csrf": {csrf}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"right token, foreign origin", url.Values{"csrf": {csrf}}, map[string]string{"Origin": "https://evil.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := c.do(http.MethodPost, "/actions/agents/web-1/delete", tt.form, tt.hdr)
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("got %d, want 403: %s", resp.StatusCode, body)
			}
			if v := ts.agentView(t, "web-1"); !v.Connected {
				t.Fatalf("web-1 after a refused delete: got connected=%v, want still there and connected", v.Connected)
			}
		})
	}
	// Sign out needs the token too: a forged sign-out is refused.
	if resp, _ := c.do(http.MethodPost, "/signout", url.Values{}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign out without token: got %d, want 403", resp.StatusCode)
	}
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("session after a refused sign out: got %d, want 200 (still signed in)", resp.StatusCode)
	}

	// The token in a header works for script-sent requests.
	resp, _ := c.do(http.MethodPost, "/actions/agents/web-1/health-check", url.Values{}, map[string]string{console.CSRFHeader: csrf})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/machines/web-1" {
		t.Fatalf("health check with header token: got %d to %q, want 303 to /machines/web-1", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, body := c.get("/machines/web-1")
	if !strings.Contains(body, "web-1 is healthy") {
		t.Fatalf("machine page after a health check: want the flash \"web-1 is healthy\", got:\n%s", body)
	}
	// The test peer says no features in its Hello, as an agent of the
	// previous release: the page says what it cannot do.
	if !strings.Contains(body, `id="agent-lacks">task isolation and locks; task variables, output variables and artifacts; disk retention`) {
		t.Fatalf("machine page of an older agent: want what it lacks, got:\n%s", body)
	}
	// And the right token does what the button says.
	resp, _ = c.do(http.MethodPost, "/actions/agents/web-1/delete", url.Values{"csrf": {csrf}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("delete with the token: got %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, err := ts.Agent(context.Background(), "web-1"); err == nil {
		t.Fatal("web-1 still exists after a delete with the right token")
	}
	_, body = c.get("/")
	if !strings.Contains(body, "Deleted web-1") {
		t.Fatal("home after delete: want the flash \"Deleted web-1\"")
	}
}

func TestConsoleActionErrorsAreShown(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "web-1")
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	csrf := c.csrf()
	tests := []struct {
		name string
		path string
		form url.Values
		want string
	}{
		{"update without a bundle", "/actions/calamari/update", url.Values{"environment": {"Test"}}, "no Calamari bundle has been uploaded"},
		{"upgrade without a package", "/actions/upgrade", url.Values{"environment": {"Test"}}, "no agent package has been uploaded"},
		{"upgrade of nothing", "/actions/upgrade", url.Values{}, "give exactly one of an environment, all or a list of agents"},
		{"health of an unknown agent", "/actions/agents/nobody/health-check", url.Values{}, `no agent named &#34;nobody&#34;`},
		{"cancel of an unknown task", "/actions/tasks/nope/cancel", url.Values{}, "Cancel task failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.form.Set("csrf", csrf)
			resp, _ := c.do(http.MethodPost, tt.path, tt.form, nil)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("got %d, want 303 back to a page", resp.StatusCode)
			}
			_, body := c.get(resp.Header.Get("Location"))
			if !strings.Contains(body, `class="flash error"`) || !strings.Contains(body, tt.want) {
				t.Fatalf("page after the action: want an error flash with %q, got:\n%s", tt.want, body)
			}
		})
	}
}

// hostile is text an attacker would like rendered as markup.
const hostile = `<script>alert(1)</script>"><img src=x onerror=alert(2)>`

func TestConsoleEscapesHostileText(t *testing.T) {
	feed := filepath.Join(t.TempDir(), "releases.json")
	if err := os.WriteFile(feed, []byte(`{"releases": [{"version": "9.0.0", "notes_url": "javascript:alert(3)", "notes": `+jsonString(hostile)+`}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(c *Config) { c.Version = "1.0.0"; c.ReleaseFeed = feed })
	eventually(t, "the release feed read", func() bool { return ts.Updates().CheckedAt != nil })
	ctx := context.Background()
	// Names are validated at enrollment; a store written some other way
	// (an older version, a hand edit) must still render safely.
	token, now := "tdt_hostile", time.Now().UTC()
	if err := ts.store.CreateToken(ctx, store.Token{ID: "tok-1", Hash: secret.Hash(token), Environment: hostile, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	res, err := ts.store.Register(ctx, store.RegisterParams{TokenHash: secret.Hash(token), Thumbprint: strings.Repeat("ab", 32),
		Name: hostile, Environment: hostile, NewID: "00000000-0000-0000-0000-000000000001"})
	if err != nil {
		t.Fatal(err)
	}
	task := store.Task{ID: "task-1", Group: "g", AgentID: res.Agent.ID, AgentName: hostile, Args: []string{"run-script", "--inline", hostile},
		Calamari: "1.0.0", State: api.TaskQueued, CreatedAt: time.Now().UTC(), Variables: []store.TaskVariable{{Name: "HOSTILE", Value: hostile}}}
	if err := ts.store.CreateTasks(ctx, []store.Task{task}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.store.AppendTaskLogs(ctx, task.ID, []store.LogLine{{Time: time.Now().UTC(), Stream: "stdout", Text: "</pre>" + hostile}}); err != nil {
		t.Fatal(err)
	}
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	esc := url.PathEscape(hostile)
	for _, path := range []string{"/", "/machines/" + esc, "/tasks", "/tasks/task-1", "/tasks?agent=" + url.QueryEscape(hostile),
		"/ui/fragments/environments", "/ui/fragments/machines/" + esc, "/ui/fragments/tasks", "/ui/fragments/tasks/task-1",
		"/script", "/script?agent=" + url.QueryEscape(hostile), "/script/g", "/ui/fragments/script/g"} {
		t.Run(path, func(t *testing.T) {
			resp, body := c.get(path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got %d, want 200", resp.StatusCode)
			}
			for _, bad := range []string{"<script>alert", "<img src=x", "javascript:alert"} {
				if strings.Contains(body, bad) {
					t.Fatalf("got %q unescaped in:\n%s", bad, body)
				}
			}
			if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
				t.Fatalf("want the hostile text shown escaped, got:\n%s", body)
			}
		})
	}
	// The update banner links only to safe URLs: a javascript: link is
	// neutralized, the notes shown as text.
	_, body := c.get("/")
	if !strings.Contains(body, `id="update-banner"`) || !strings.Contains(body, "#ZgotmplZ") {
		t.Fatalf("want the update banner with its javascript: link neutralized, got:\n%s", body)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestConsoleStaticAndNotFound(t *testing.T) {
	ts := startServer(t, nil)
	c := newConsoleClient(t, ts)
	tests := []struct {
		path       string
		wantStatus int
		wantType   string
	}{
		{"/static/console.css", http.StatusOK, "text/css"},
		{"/static/console.js", http.StatusOK, "text/javascript"},
		{"/static/", http.StatusNotFound, ""},
		{"/static/nope.js", http.StatusNotFound, ""},
		{"/no/such/page", http.StatusNotFound, "text/html"},
		{"/ui/nope", http.StatusNotFound, "application/json"},
		{"/api/nope", http.StatusNotFound, "application/json"},
	}
	for _, tt := range tests {
		resp, _ := c.get(tt.path)
		if resp.StatusCode != tt.wantStatus || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.wantType) {
			t.Errorf("GET %s: got %d %q, want %d %q", tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), tt.wantStatus, tt.wantType)
		}
	}
}

func TestAPICheckAgentHealth(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "web-1")
	key := adminKey(t, ts)
	c := newConsoleClient(t, ts)
	tests := []struct {
		name       string
		agent      string
		auth       string
		wantStatus int
	}{
		{"no key", "web-1", "", http.StatusUnauthorized},
		{"wrong key", "web-1", "Bearer tdk_wrong", http.StatusUnauthorized},
		{"unknown agent", "nobody", "Bearer " + key, http.StatusNotFound},
		{"connected agent", "web-1", "Bearer " + key, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.auth != "" {
				hdr["Authorization"] = tt.auth
			}
			resp, body := c.do(http.MethodPost, "/api/agents/"+tt.agent+"/health-check", nil, hdr)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got %d, want %d: %s", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantStatus != http.StatusOK {
				return
			}
			var v api.AgentView
			if err := json.Unmarshal([]byte(body), &v); err != nil {
				t.Fatal(err)
			}
			if v.Name != "web-1" || v.Health != api.HealthHealthy || v.LastHealthAt == "" {
				t.Fatalf("got %s health %q checked %q, want web-1 healthy with a check time", v.Name, v.Health, v.LastHealthAt)
			}
		})
	}
}

func TestCheckAgentHealthDisconnected(t *testing.T) {
	ts := startServer(t, nil)
	p := enrolled(t, ts, "web-1")
	p.sess.Close()
	eventually(t, "web-1 disconnected", func() bool { return !ts.agentView(t, "web-1").Connected })
	if _, err := ts.CheckAgentHealth(context.Background(), "web-1"); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("got %v, want a refusal saying the agent is not connected", err)
	}
}

// The console's pages render without a running coordinator's listener
// too: httptest drives the handler directly.
func TestConsoleHandlerDirect(t *testing.T) {
	ts := startServer(t, nil)
	h := ts.handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/signin", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `name="key"`) {
		t.Fatalf("GET /signin: got %d, want 200 with the key field", rec.Code)
	}
}

var rolloutIDInFlash = regexp.MustCompile(`Rollout ([0-9a-f-]{36}) started: upgrading (\d+) agent`)

func TestConsoleUpgradeButtons(t *testing.T) {
	ts := startServer(t, nil)
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	newFakeAgent(t, ts, "web-1", "Test", "1.0.0")
	newFakeAgent(t, ts, "db-1", "Staging", "1.0.0")
	ts.waitConnected(t, "web-1")
	ts.waitConnected(t, "db-1")
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	_, body := c.get("/")
	// The upgrade is a badge beside the health, which keeps the colour.
	for _, want := range []string{`data-machine="web-1" data-state="healthy" data-mode="polling" data-upgrade="recommended"`,
		`<span class="state state-healthy">healthy</span> <span class="state state-upgrade-recommended">upgrade recommended</span>`,
		`data-count="upgrade-recommended">2<`, `id="upgrade-all" class="primary"`} {
		if !strings.Contains(body, want) {
			t.Fatalf("home before the upgrade: want %q in:\n%s", want, body)
		}
	}
	csrf := c.csrf()
	tests := []struct {
		name      string
		form      url.Values
		wantAgent []string
	}{
		{"one environment", url.Values{"environment": {"Test"}}, []string{"web-1"}},
		{"every agent", url.Values{"all": {"true"}}, []string{"db-1"}}, // web-1 is at 2.0.0 by then
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.form.Set("csrf", csrf)
			resp, _ := c.do(http.MethodPost, "/actions/upgrade", tt.form, nil)
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
				t.Fatalf("got %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
			}
			_, body := c.get("/")
			m := rolloutIDInFlash.FindStringSubmatch(body)
			if m == nil || m[2] != "1" {
				t.Fatalf("want a flash naming the rollout and 1 agent to upgrade, got:\n%s", body)
			}
			v := ts.waitRollout(t, m[1])
			if v.State != api.RolloutSucceeded {
				t.Fatalf("rollout: got %s (%s), want succeeded", v.State, v.Reason)
			}
			for _, name := range tt.wantAgent {
				eventually(t, name+" at 2.0.0", func() bool { return ts.agentView(t, name).Version == "2.0.0" })
			}
		})
	}
	_, body = c.get("/ui/fragments/environments")
	if !strings.Contains(body, `data-count="upgrade-recommended">0<`) {
		t.Fatalf("fragment after both rollouts: want no upgrade recommended, got:\n%s", body)
	}
}

func TestConsoleCookieSecureOverTLS(t *testing.T) {
	ts := startServer(t, nil)
	srv := httptest.NewTLSServer(ts.handler())
	defer srv.Close()
	hc := srv.Client()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	defer hc.CloseIdleConnections()
	resp, err := hc.PostForm(srv.URL+"/signin", url.Values{"key": {adminKey(t, ts)}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var ck *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == console.CookieName {
			ck = k
		}
	}
	if resp.StatusCode != http.StatusSeeOther || ck == nil || !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Fatalf("sign in over TLS: got %d and cookie %+v, want 303 and a Secure, HttpOnly, SameSite=Strict cookie", resp.StatusCode, ck)
	}
}
