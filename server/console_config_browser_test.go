package server

// The configuration page in a real browser, signed in with a user and
// password: an enrollment token whose join command enrolls an agent, and
// maintenance mode turned on while a task runs, refusing a new one, then
// off. Screenshots go where console_browser_test.go puts its own, named
// config-*.png.

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
)

func TestConsoleConfigurationInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	findChromium(t)
	ctx := context.Background()
	ts := startServer(t, func(c *Config) { c.Version = "1.0.0" })
	const password = "correct horse battery"
	if _, err := ts.access.CreateUser(ctx, "alice", password, api.RoleAdmin, nil); err != nil {
		t.Fatal(err)
	}
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	ts.upload(t, packBundle(t, "2.0.0", 0))
	b := newBrowser(t, "http://"+ts.HTTPAddr())

	// A wrong password is refused without saying which part was wrong;
	// the right one signs in.
	b.do("open the console", chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.ID("user")))
	b.do("sign in with a wrong password",
		chromedp.SendKeys(chromedp.ID("user"), "alice"),
		chromedp.SendKeys(chromedp.ID("password"), "wrong horse"),
		chromedp.Click(chromedp.ID("signin-password")),
		chromedp.WaitVisible(chromedp.ID("signin-error")))
	if msg := evalString(b, `document.getElementById("signin-error").textContent`); msg != signinBadPassword {
		t.Fatalf("refused sign-in: got %q, want %q", msg, signinBadPassword)
	}
	if user := evalString(b, `document.getElementById("user").value`); user != "alice" {
		t.Fatalf("user field after a refusal: got %q, want alice kept", user)
	}
	b.screenshot("config-01-signin-password-refused")
	b.do("sign in as alice",
		chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("signin-password")),
		chromedp.WaitVisible(chromedp.CSS(`li[data-machine="web-1"]`)))
	if who := evalString(b, `document.getElementById("signed-in-as").textContent`); who != "alice" {
		t.Fatalf("header: got signed in as %q, want alice", who)
	}

	// An enrollment token from the Configuration page: its join command
	// is shown ready to copy, and it enrolls an agent.
	b.do("open the configuration page",
		chromedp.Click(chromedp.CSS(`header.top a[href="/configuration"]`)),
		chromedp.WaitVisible(chromedp.ID("token-form")))
	b.screenshot("config-02-configuration")
	b.do("create a token",
		chromedp.SendKeys(chromedp.ID("token-environment"), "Production"),
		chromedp.SetValue(chromedp.ID("token-ttl"), "1h"),
		chromedp.Click(chromedp.ID("create-token")),
		chromedp.WaitVisible(chromedp.ID("join-command")))
	cmd := evalString(b, `document.getElementById("join-command").textContent`)
	const prefix = "tendril-agent register --home /var/lib/tendril-agent --join '"
	if !strings.HasPrefix(cmd, prefix) || !strings.HasSuffix(cmd, "'") {
		t.Fatalf("join command: got %q, want %s...'", cmd, prefix)
	}
	if env := evalString(b, `document.querySelector('#token-list tr[data-state="unused"] td').textContent`); env != "Production" {
		t.Fatalf("token list: got the unused token for %q, want Production", env)
	}
	b.do("press Copy", chromedp.Click(chromedp.CSS(`button.copy-button`)))
	// Headless chromium may deny the clipboard; the text is then selected
	// for the person to copy.
	b.waitFor("copy feedback", `["Copied", "Press Ctrl+C to copy"].includes(document.querySelector("button.copy-button").textContent)`)
	b.screenshot("config-03-token-created")
	join, err := protocol.ParseJoin(strings.TrimSuffix(strings.TrimPrefix(cmd, prefix), "'"))
	if err != nil {
		t.Fatal(err)
	}
	registerAgent(t, ts, join.Servers[0], "web-2", func(rc *agent.RegisterConfig) {
		rc.Token, rc.ServerThumbprint = join.Token, join.Thumbprint
	})
	if v := ts.agentView(t, "web-2"); v.Environment != "Production" {
		t.Fatalf("web-2 enrolled with the console's token: got environment %q, want Production", v.Environment)
	}
	b.do("reload the configuration page", chromedp.Navigate(b.base+"/configuration"), chromedp.WaitVisible(chromedp.ID("token-list")))
	if n := evalString(b, `String(document.querySelectorAll("#join-command").length)`); n != "0" {
		t.Fatal("the join command is shown again after a reload; want it shown once")
	}
	if by := evalString(b, `document.querySelector('#token-list tr[data-state="used"] .used-by').textContent`); by != "web-2" {
		t.Fatalf("token list: got the token used by %q, want web-2", by)
	}

	// Maintenance mode while a task runs: the switch says what still
	// runs, a new task is refused, the count follows the task to its end
	// without a reload, and turning it off lets tasks start again.
	gate := filepath.Join(t.TempDir(), "go-on")
	tasks, err := ts.CreateTasks(ctx, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline",
		"echo started; while [ ! -e " + gate + " ]; do sleep 0.05; done"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the task running", func() bool {
		v, err := ts.Task(ctx, tasks[0].ID)
		return err == nil && v.State == api.TaskRunning
	})
	b.do("reload the configuration page", chromedp.Navigate(b.base+"/configuration"), chromedp.WaitVisible(chromedp.ID("maintenance-toggle")))
	b.do("turn maintenance mode on",
		chromedp.Click(chromedp.ID("maintenance-toggle")),
		chromedp.WaitVisible(chromedp.CSS(`[data-maintenance="on"]`)),
		chromedp.WaitVisible(chromedp.ID("maintenance-banner")))
	if got := b.dialogs.all(); len(got) == 0 || !strings.Contains(got[len(got)-1], "Turn maintenance mode on?") {
		t.Fatalf("confirmation dialogs: got %q, want the maintenance question", got)
	}
	if n := evalString(b, `document.querySelector('[data-count="running-tasks"]').textContent`); n != "1" {
		t.Fatalf("tasks still running: got %s, want 1", n)
	}
	if text := evalString(b, `document.getElementById("maintenance-running").textContent`); !strings.Contains(text, "1 task still running") {
		t.Fatalf("maintenance state: got %q, want it to say 1 task still running", text)
	}
	b.screenshot("config-04-maintenance-on")

	c := newConsoleClient(t, ts)
	resp, body := apiCall(t, c, "POST", "/api/tasks", adminKey(t, ts), `{"agent": "web-1", "args": ["version"]}`)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "maintenance mode") {
		t.Fatalf("a task in maintenance mode: got %d %s, want 409 saying maintenance mode", resp.StatusCode, body)
	}
	evalString(b, `window.tendrilNotReloaded = "yes"; "ok"`)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b.waitFor("no task running", `document.querySelector('[data-count="running-tasks"]')?.textContent === "0"`)
	b.waitFor("the banner following the drain", `document.getElementById("maintenance-banner").textContent.includes("0 tasks still running")`)
	if v := evalString(b, `String(window.tendrilNotReloaded)`); v != "yes" {
		t.Fatalf("page state after the refresh: got %q, want \"yes\" (no full reload)", v)
	}
	b.screenshot("config-05-maintenance-drained")

	b.do("turn maintenance mode off",
		chromedp.Click(chromedp.ID("maintenance-toggle")),
		chromedp.WaitVisible(chromedp.CSS(`[data-maintenance="off"]`)))
	if n := evalString(b, `String(document.querySelectorAll("#maintenance-banner").length)`); n != "0" {
		t.Fatal("the maintenance banner is still shown after turning it off")
	}
	resp, body = apiCall(t, c, "POST", "/api/tasks", adminKey(t, ts), `{"agent": "web-1", "args": ["version"]}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("a task after maintenance: got %d %s, want 201", resp.StatusCode, body)
	}
	b.screenshot("config-06-maintenance-off")

	// On a phone's width the page fits without sideways scrolling.
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(b.base+"/configuration"),
		chromedp.WaitVisible(chromedp.ID("token-form")))
	if fits := evalString(b, `String(document.documentElement.scrollWidth <= window.innerWidth)`); fits != "true" {
		t.Fatalf("configuration on a phone: got scrollWidth %s > innerWidth %s, want no sideways scrolling",
			evalString(b, `String(document.documentElement.scrollWidth)`), evalString(b, `String(window.innerWidth)`))
	}
	b.screenshot("config-07-configuration-phone")
	if errs := b.exceptions.all(); len(errs) > 0 {
		t.Fatalf("script errors in the console's pages: got %q, want none", errs)
	}
}
