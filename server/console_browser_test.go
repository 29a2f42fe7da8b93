package server

// The web console in a real browser: Debian's chromium, headless, driven
// by chromedp against a coordinator with a real agent connected over TLS.
// Screenshots of every page go to $TENDRIL_ARTIFACTS/console-browser (or
// the test's temporary folder); the test logs where.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/tendrildeploy/tendril/api"
)

// findChromium returns the browser to drive. Without one the test skips
// with the way to install it, except in CI, where a missing browser must
// not pass as a skipped test.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium is not installed; install it with: apt-get install -y chromium (scripts/deps.sh does it)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// artifactDir is where the screenshots go.
func artifactDir(t *testing.T) string {
	t.Helper()
	base := os.Getenv("TENDRIL_ARTIFACTS")
	if base == "" {
		return t.TempDir()
	}
	dir := filepath.Join(base, "console-browser")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser is one headless chromium with one tab, closed when the test
// ends.
type browser struct {
	t         *testing.T
	ctx       context.Context
	base      string
	artifacts string
	// dialogs are the confirmation questions asked (and accepted);
	// exceptions the uncaught script errors of any page.
	dialogs, exceptions eventLog
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	exe := findChromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
		// Containers often have a small /dev/shm.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	// The first call starts the browser; it lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		cancelCtx()
		cancelAlloc()
		t.Fatalf("start chromium %s: %v", exe, err)
	}
	// Accept every confirmation dialog (data-confirm buttons) and record
	// its text, so the test can check the question was asked; record
	// uncaught script errors too.
	b := &browser{t: t, ctx: ctx, base: base, artifacts: artifactDir(t)}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ev, err := range chromedp.Events(ctx, page.JavascriptDialogOpening) {
			if err != nil {
				return
			}
			b.dialogs.add(ev.Message)
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	go func() {
		defer wg.Done()
		for ev, err := range chromedp.Events(ctx, runtime.ExceptionThrown) {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			b.exceptions.add(fmt.Sprintf("%s:%d: %s", d.URL, d.LineNumber+1, msg))
		}
	}()
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
		wg.Wait()
	})
	t.Logf("console screenshots: %s", b.artifacts)
	return b
}

// eventLog collects texts from the browser's event goroutines.
type eventLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *eventLog) add(m string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, m)
}

func (l *eventLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// do runs steps with a deadline that only matters when the test fails.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.screenshot("failed-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func evalString(b *browser, expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript predicate until it is true. Evaluation
// errors count as false: a click may be navigating to the next page while
// the predicate runs.
func (b *browser) waitFor(what, predicate string) {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("Boolean("+predicate+")"))
		cancel()
		if err == nil && ok {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			b.screenshot("failed-" + strings.ReplaceAll(what, " ", "-"))
			b.t.Fatalf("timed out waiting for %s (last error: %v)", what, lastErr)
		}
		<-tick.C
	}
}

// clearFlashes removes the messages of the last action from the page, so
// that waiting for the next one cannot see the old one.
func (b *browser) clearFlashes() {
	b.t.Helper()
	evalString(b, `document.querySelectorAll(".flash").forEach(e => e.remove()); "ok"`)
}

// screenshot saves the whole page as NAME.png.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(b.artifacts, name+".png"), png, 0o644); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
	}
}

// machineState is the machine's state on the environments page and the
// colours it is drawn in: badge background and left border.
func (b *browser) machineState(name string) (state, badge, border string) {
	b.t.Helper()
	sel := fmt.Sprintf(`document.querySelector('li[data-machine=%q]')`, name)
	state = evalString(b, sel+`.dataset.state`)
	badge = evalString(b, `getComputedStyle(`+sel+`.querySelector('.state')).backgroundColor`)
	border = evalString(b, `getComputedStyle(`+sel+`).borderLeftColor`)
	return state, badge, border
}

// calamariWords is what the first Calamari words inside the element sel
// selects say.
func (b *browser) calamariWords(sel string) string {
	b.t.Helper()
	return evalString(b, fmt.Sprintf(`document.querySelector(%q).querySelector('.calamari').textContent`, sel))
}

// Colours of console.css, as the browser computes them.
const (
	calamariBorder = "rgb(125, 90, 0)"    // --calamari
	healthyBadge   = "rgb(218, 251, 225)" // --healthy-bg
	healthyBorder  = "rgb(26, 127, 55)"   // --healthy
)

func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	findChromium(t)
	// A release feed naming a newer coordinator: the console shows the
	// update notice.
	feed := filepath.Join(t.TempDir(), "releases.json")
	const notes = "https://releases.example/tendril/1.1.0"
	if err := os.WriteFile(feed, []byte(`{"releases": [{"version": "1.1.0", "notes_url": "`+notes+`", "notes": "Faster health checks."}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(c *Config) { c.Version = "1.0.0"; c.ReleaseFeed = feed })
	eventually(t, "the release feed read", func() bool { return ts.Updates().CheckedAt != nil })
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	// The connect-time health check must be over before the upload: a
	// check that sees the new bundle missing pushes it on its own, and
	// the button below is what should do that here.
	eventually(t, "web-1's first health check recorded", func() bool { return ts.agentView(t, "web-1").LastHealthAt != "" })
	ts.upload(t, packBundle(t, "2.0.0", 0))
	if v := ts.agentView(t, "web-1"); v.CalamariCurrent {
		t.Fatal("web-1 has Calamari 2.0.0 before the update button was pressed")
	}
	key := adminKey(t, ts)
	b := newBrowser(t, "http://"+ts.HTTPAddr())

	// Signed out, the console asks for a key; a wrong one is refused.
	b.do("open the console", chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.ID("key")))
	if loc := evalString(b, `location.pathname + location.search`); loc != "/signin?next=%2F" {
		t.Fatalf("signed out at /: got %s, want /signin?next=%%2F", loc)
	}
	b.screenshot("01-signin")
	b.do("sign in with a wrong key",
		chromedp.SendKeys(chromedp.ID("key"), "tdk_wrong"),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("signin-error")))
	b.screenshot("01b-signin-refused")

	// Signed in: the environment with its connected agent, still in its
	// health's colour, saying in words that it lacks the latest Calamari.
	b.do("sign in",
		chromedp.SendKeys(chromedp.ID("key"), key),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.CSS(`section[data-environment="Test"] li[data-machine="web-1"]`)))
	if state, badge, border := b.machineState("web-1"); state != "healthy" || badge != healthyBadge || border != healthyBorder {
		t.Fatalf("web-1 before the update: got %s (badge %s, border %s), want its health, healthy (%s, %s)", state, badge, border, healthyBadge, healthyBorder)
	}
	if got := b.calamariWords(`li[data-machine="web-1"]`); !strings.HasPrefix(got, "Calamari out of date: it has") || !strings.HasSuffix(got, "the latest is 2.0.0") {
		t.Fatalf("web-1's Calamari before the update: got %q, want it out of date, naming the latest, 2.0.0", got)
	}
	if got, want := b.calamariWords(`section[data-environment="Test"] > header`), "Calamari out of date on 1 of 1 machine: the latest, 2.0.0, is missing"; got != want {
		t.Fatalf("Test's Calamari before the update: got %q, want %q", got, want)
	}
	if c := evalString(b, `getComputedStyle(document.querySelector('li[data-machine="web-1"] .calamari')).color`); c != calamariBorder {
		t.Fatalf("web-1's Calamari words: got colour %s, want %s (--calamari)", c, calamariBorder)
	}
	if n := evalString(b, `document.querySelector('[data-count="calamari-outdated"]').textContent`); n != "1" {
		t.Fatalf("Calamari out of date count: got %s, want 1", n)
	}
	if href := evalString(b, `document.querySelector("#update-banner a").href`); href != notes {
		t.Fatalf("update banner: got link %q, want the release notes %q", href, notes)
	}
	if text := evalString(b, `document.getElementById("update-notice").textContent`); !strings.Contains(text, "Tendril 1.1.0 is available") {
		t.Fatalf("update notice: got %q, want it to name 1.1.0", text)
	}
	b.screenshot("02-environments-calamari-outdated")

	// "Update Calamari" pushes the bundle; the machine turns current.
	b.do("press Update Calamari",
		chromedp.Click(chromedp.CSS(`section[data-environment="Test"] button.update-calamari`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash.ok`)))
	b.waitFor("web-1's Calamari current", `document.querySelector('li[data-machine="web-1"]')?.dataset.calamari === "current"`)
	if state, badge, border := b.machineState("web-1"); state != "healthy" || badge != healthyBadge || border != healthyBorder {
		t.Fatalf("web-1 after the update: got %s (badge %s, border %s), want healthy (%s, %s)", state, badge, border, healthyBadge, healthyBorder)
	}
	if got, want := b.calamariWords(`li[data-machine="web-1"]`), "Calamari current (2.0.0)"; got != want {
		t.Fatalf("web-1's Calamari after the update: got %q, want %q", got, want)
	}
	if got, want := b.calamariWords(`section[data-environment="Test"] > header`), "Calamari current (2.0.0)"; got != want {
		t.Fatalf("Test's Calamari after the update: got %q, want %q", got, want)
	}
	if msg := evalString(b, `document.querySelector('.flash.ok').textContent`); !strings.Contains(msg, "installed on web-1") {
		t.Fatalf("flash after the update: got %q, want it to say installed on web-1", msg)
	}
	if v := ts.agentView(t, "web-1"); !v.CalamariCurrent || v.CalamariVersion != "2.0.0" {
		t.Fatalf("web-1 after the update: got current=%v version %s, want current 2.0.0", v.CalamariCurrent, v.CalamariVersion)
	}
	b.screenshot("03-environments-updated")

	// The page follows the coordinator without a reload: a newer bundle
	// makes the machine out of date again on screen.
	evalString(b, `window.tendrilNotReloaded = "yes"; "ok"`)
	ts.upload(t, packBundle(t, "3.0.0", 0))
	b.waitFor("web-1 out of date after a new bundle", `document.querySelector('li[data-machine="web-1"]')?.dataset.calamari === "outdated"`)
	if v := evalString(b, `String(window.tendrilNotReloaded)`); v != "yes" {
		t.Fatalf("page state after the refresh: got %q, want \"yes\" (no full reload)", v)
	}
	b.clearFlashes()
	b.do("press Update Calamari again",
		chromedp.Click(chromedp.CSS(`section[data-environment="Test"] button.update-calamari`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash.ok`)))
	b.waitFor("web-1 current at 3.0.0", `document.querySelector('li[data-machine="web-1"] .calamari')?.textContent === "Calamari current (3.0.0)"`)

	// The machine's page, and a health check from it.
	b.do("open the machine page",
		chromedp.Click(chromedp.CSS(`li[data-machine="web-1"] a.name`)),
		chromedp.WaitVisible(chromedp.ID("health-check")))
	body := evalString(b, `document.querySelector('main').textContent`)
	thumb := ts.agentView(t, "web-1").Thumbprint
	for _, want := range []string{thumb, "1.2.3", "TLS version", "1.3", "Calamari current (3.0.0); installed: 3.0.0, 2.0.0", "Recent tasks"} {
		if !strings.Contains(body, want) {
			t.Fatalf("machine page: want %q in:\n%s", want, body)
		}
	}
	b.do("check health now",
		chromedp.Click(chromedp.ID("health-check")),
		chromedp.WaitVisible(chromedp.CSS(`.flash.ok`)))
	if msg := evalString(b, `document.querySelector('.flash.ok').textContent`); !strings.Contains(msg, "web-1 is healthy") {
		t.Fatalf("flash after the health check: got %q, want web-1 is healthy", msg)
	}
	b.screenshot("04-machine")

	// A task whose log follows live: the second line arrives while the
	// page is open.
	gate := filepath.Join(t.TempDir(), "go-on")
	script := fmt.Sprintf("echo first-line; while [ ! -e %s ]; do sleep 0.05; done; echo '<b>second-line</b>'", gate)
	ts1, err := ts.CreateTasks(context.Background(), api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", script}})
	if err != nil {
		t.Fatal(err)
	}
	b.do("open the task page", chromedp.Navigate(b.base+"/tasks/"+ts1[0].ID), chromedp.WaitVisible(chromedp.ID("log")))
	b.waitFor("the first log line", `document.getElementById("log").textContent.includes("first-line")`)
	b.screenshot("05-task-running")
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the second log line, live", `document.getElementById("log").textContent.includes("<b>second-line</b>")`)
	b.waitFor("the task shown succeeded", `document.getElementById("task-state")?.textContent === "succeeded"`)
	if n := evalString(b, `String(document.querySelectorAll("#log b").length)`); n != "0" {
		t.Fatalf("log markup: got %s <b> elements, want the log's tags shown as text", n)
	}
	b.screenshot("06-task-succeeded")

	// Cancelling a running task from its page.
	script = fmt.Sprintf("echo waiting; while [ ! -e %s.never ]; do sleep 0.05; done", gate)
	ts2, err := ts.CreateTasks(context.Background(), api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", script}})
	if err != nil {
		t.Fatal(err)
	}
	b.do("open the second task", chromedp.Navigate(b.base+"/tasks/"+ts2[0].ID), chromedp.WaitVisible(chromedp.ID("log")))
	b.waitFor("the task running", `document.getElementById("log").textContent.includes("waiting")`)
	b.do("cancel the task", chromedp.Click(chromedp.ID("cancel-task")), chromedp.WaitVisible(chromedp.CSS(`.flash.ok`)))
	b.waitFor("the task shown cancelled", `document.getElementById("task-state")?.textContent === "cancelled"`)
	if got := b.dialogs.all(); len(got) == 0 || !strings.Contains(got[len(got)-1], "Cancel this task?") {
		t.Fatalf("confirmation dialogs: got %q, want the cancel question", got)
	}
	b.screenshot("07-task-cancelled")

	b.do("open the tasks list", chromedp.Navigate(b.base+"/tasks"), chromedp.WaitVisible(chromedp.CSS("table.tasks")))
	if n := evalString(b, `String(document.querySelectorAll("tr.task").length)`); n != "2" {
		t.Fatalf("tasks list: got %s rows, want 2", n)
	}
	b.screenshot("08-tasks")

	// On a phone's width the page fits without sideways scrolling.
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(b.base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`li[data-machine="web-1"]`)))
	if fits := evalString(b, `String(document.documentElement.scrollWidth <= window.innerWidth)`); fits != "true" {
		t.Fatalf("environments on a phone: got scrollWidth %s > innerWidth %s, want no sideways scrolling",
			evalString(b, `String(document.documentElement.scrollWidth)`), evalString(b, `String(window.innerWidth)`))
	}
	b.screenshot("09-environments-phone")
	b.do("machine page on a phone", chromedp.Navigate(b.base+"/machines/web-1"), chromedp.WaitVisible(chromedp.ID("health-check")))
	if fits := evalString(b, `String(document.documentElement.scrollWidth <= window.innerWidth)`); fits != "true" {
		t.Fatal("machine page on a phone: want no sideways scrolling")
	}
	b.screenshot("10-machine-phone")

	// Signing out ends the session: the console asks for the key again.
	b.do("sign out", chromedp.EmulateViewport(1280, 900), chromedp.Navigate(b.base+"/"),
		chromedp.Click(chromedp.CSS(`form.signout button`)), chromedp.WaitVisible(chromedp.ID("key")))
	b.do("home after sign out", chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.ID("key")))
	if errs := b.exceptions.all(); len(errs) > 0 {
		t.Fatalf("script errors in the console's pages: got %q, want none", errs)
	}
}
