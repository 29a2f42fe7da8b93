package server

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/api"
)

// scriptAgents starts real agents of environment Test, connected, with
// the test bundle uploaded, and returns each one's home by name.
func scriptAgents(t *testing.T, ts *testServer, names ...string) map[string]string {
	t.Helper()
	homes := map[string]string{}
	for _, name := range names {
		homes[name] = registerAgent(t, ts, ts.AgentAddr(), name, nil)
		startAgent(t, homes[name], nil)
	}
	for _, name := range names {
		ts.waitConnected(t, name)
	}
	ts.upload(t, packBundle(t, "1.0.0", 0))
	return homes
}

// groupRow is the group view's row of machine name, as a JavaScript
// expression.
func groupRow(name string) string {
	return fmt.Sprintf(`document.querySelector('.group-task[data-agent=%q]')`, name)
}

// pageSource is what the server answers for the page shown, fetched with
// its session, and what the browser made of it: together, everything a
// page load puts in front of someone.
func (b *browser) pageSource() string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	src, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch(location.href, {cache: "no-store"}).then(r => r.text())`, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("fetch the page's source: %v", err)
	}
	return src + evalString(b, `document.documentElement.outerHTML`)
}

// TestConsoleScriptOnEnvironmentInBrowser: from an environment's "Run a
// script", a script with a plain and a sensitive variable runs on its
// three machines; the run's view shows each machine's row with its
// result and its own output in its log, the sensitive value masked
// there and in no page; a target list naming a machine that is not
// connected is refused with the coordinator's message, the form kept
// but for the sensitive value, and nothing runs.
func TestConsoleScriptOnEnvironmentInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	findChromium(t)
	ts := startServer(t, nil)
	names := []string{"web-1", "web-2", "web-3"}
	homes := scriptAgents(t, ts, names...)
	// Enrolled in another environment and never started: not connected.
	registerAgent(t, ts, ts.AgentAddr(), "db-1", func(rc *agent.RegisterConfig) { rc.Token = ts.token(t, "Staging") })
	const secret = "Br0wser-Secret-Value"

	b := newBrowser(t, "http://"+ts.HTTPAddr())
	b.signIn(adminKey(t, ts), `li[data-machine="web-1"]`)
	b.do("run a script on Test", chromedp.Click(chromedp.CSS(`section[data-environment="Test"] a.run-script`)),
		chromedp.WaitVisible(chromedp.ID("script")))
	if got := evalString(b, `document.getElementById("script-environment").value + " " + document.getElementById("target-environment").checked`); got != "Test true" {
		t.Fatalf("form from Test's link: got environment and its target %q, want %q", got, "Test true")
	}
	b.do("fill in the script",
		chromedp.SendKeys(chromedp.ID("script"), `echo "ran in $TENDRIL_HOME for $REGION"`+"\n"+`echo "secret is $DB_PASSWORD"`),
		chromedp.SendKeys(chromedp.CSS(`#variables input[name="var_name"]`), "REGION"),
		chromedp.SendKeys(chromedp.CSS(`#variables input[name="var_value"]`), "eu-west"),
		chromedp.SendKeys(chromedp.CSS(`#secrets input[name="secret_name"]`), "DB_PASSWORD"),
		chromedp.SendKeys(chromedp.CSS(`#secrets input[name="secret_value"]`), secret))
	if typ := evalString(b, `document.querySelector('#secrets input[name="secret_value"]').type`); typ != "password" {
		t.Fatalf("sensitive value's input: got type %q, want password", typ)
	}
	b.screenshot("60-script-form")
	b.do("run it", chromedp.Click(chromedp.ID("run-script")), chromedp.WaitVisible(chromedp.CSS(".group-task")))

	// One row per machine, each succeeded with exit code 0, its log
	// holding its own output line and the secret masked.
	if n := evalString(b, `String(document.querySelectorAll(".group-task").length)`); n != "3" {
		t.Fatalf("group view: got %s rows, want 3", n)
	}
	for _, name := range names {
		row := groupRow(name)
		b.waitFor(name+" succeeded", row+`.querySelector(".group-task-head").dataset.state === "succeeded"`)
		b.waitFor(name+"'s output in its log", row+`.querySelector("pre.log").textContent.includes(`+jsString("ran in "+homes[name]+" for eu-west\n")+`)`)
		b.waitFor(name+"'s log ended", row+`.querySelector("pre.log").dataset.ended === "succeeded"`)
		if got := evalString(b, row+`.querySelector(".exit-code").textContent`); got != "0" {
			t.Errorf("%s's exit code: got %q, want 0", name, got)
		}
		if log := evalString(b, row+`.querySelector("pre.log").textContent`); !strings.Contains(log, "secret is ********\n") {
			t.Errorf("%s's log: got %q, want the sensitive value masked", name, log)
		}
	}
	if got := evalString(b, `document.getElementById("group-counts").textContent`); got != "3 succeeded" {
		t.Errorf("group counts: got %q, want %q", got, "3 succeeded")
	}
	if n := evalString(b, `String(document.querySelectorAll("#cancel-all, .cancel-task").length)`); n != "0" {
		t.Errorf("finished run: got %s cancel buttons, want none", n)
	}
	if src := b.pageSource(); strings.Contains(src, secret) {
		t.Error("group view: got the sensitive value in the page, want it nowhere")
	}
	b.screenshot("61-script-group")

	// A machine's task page: its variables, the sensitive one by name,
	// and a link back to the run.
	b.do("open web-2's task", chromedp.Click(chromedp.CSS(`.group-task[data-agent="web-2"] a.task-link`)),
		chromedp.WaitVisible(chromedp.ID("task-variables")))
	vars := evalString(b, `Array.from(document.querySelectorAll("#task-variables tbody tr")).map(r => r.innerText.replace(/\s+/g, " ").trim()).join("|")`)
	if want := "REGION eu-west|DB_PASSWORD (sensitive)"; vars != want {
		t.Errorf("web-2's variables: got %q, want %q", vars, want)
	}
	if !strings.Contains(evalString(b, `document.getElementById("log").textContent`), "secret is ********") {
		t.Error("web-2's task log: want the sensitive value masked")
	}
	if src := b.pageSource(); strings.Contains(src, secret) {
		t.Error("task page: got the sensitive value in the page, want it nowhere")
	}
	b.do("back to the run", chromedp.Click(chromedp.ID("task-group")), chromedp.WaitVisible(chromedp.CSS(".group-task")))

	// Refused: a list naming db-1, which is not connected. Nothing runs,
	// and the form comes back as it was but for the sensitive value.
	before := len(ts.tasksOf(t, ""))
	b.do("open the script console", chromedp.Click(chromedp.ID("nav-script")), chromedp.WaitVisible(chromedp.ID("script")))
	if got := evalString(b, `document.querySelector('input[name="agent"][value="db-1"]').closest("label").textContent.trim()`); got != "db-1 (not connected)" {
		t.Errorf("db-1's choice: got %q, want it to say it is not connected", got)
	}
	const refusedScript = "echo must not run"
	b.do("fill in a refused run",
		chromedp.Click(chromedp.CSS(`input[name="agent"][value="web-1"]`)),
		chromedp.Click(chromedp.CSS(`input[name="agent"][value="db-1"]`)),
		chromedp.SendKeys(chromedp.ID("script"), refusedScript),
		chromedp.SendKeys(chromedp.CSS(`#variables input[name="var_name"]`), "REGION"),
		chromedp.SendKeys(chromedp.CSS(`#variables input[name="var_value"]`), "eu-north"),
		chromedp.SendKeys(chromedp.CSS(`#secrets input[name="secret_name"]`), "TOKEN"),
		chromedp.SendKeys(chromedp.CSS(`#secrets input[name="secret_value"]`), secret+"-2"))
	if got := evalString(b, `String(document.getElementById("target-machines").checked)`); got != "true" {
		t.Fatalf("after ticking machines: got the machines target checked=%s, want true", got)
	}
	b.do("submit it", chromedp.Click(chromedp.ID("run-script")), chromedp.WaitVisible(chromedp.ID("script-error")))
	msg := evalString(b, `document.getElementById("script-error").textContent`)
	if !strings.Contains(msg, "[db-1] not connected to this coordinator; nothing was started") {
		t.Errorf("refusal: got %q, want the coordinator's message naming db-1", msg)
	}
	for _, tt := range []struct{ what, expr, want string }{
		{"script", `document.getElementById("script").value`, refusedScript},
		{"plain value", `document.querySelector('#variables input[name="var_value"]').value`, "eu-north"},
		{"sensitive name", `document.querySelector('#secrets input[name="secret_name"]').value`, "TOKEN"},
		{"sensitive value", `document.querySelector('#secrets input[name="secret_value"]').value`, ""},
		{"machines ticked", `Array.from(document.querySelectorAll('input[name="agent"]:checked')).map(i => i.value).join(",")`, "db-1,web-1"},
	} {
		if got := evalString(b, tt.expr); got != tt.want {
			t.Errorf("refused form's %s: got %q, want %q", tt.what, got, tt.want)
		}
	}
	if html := evalString(b, `document.documentElement.outerHTML`); strings.Contains(html, secret) {
		t.Error("refused form: got the sensitive value in the page, want it cleared")
	}
	if after := len(ts.tasksOf(t, "")); after != before {
		t.Errorf("after the refusal: got %d tasks, want %d (nothing started)", after, before)
	}
	b.screenshot("62-script-refused")
	if errs := b.exceptions.all(); len(errs) > 0 {
		t.Fatalf("script errors in the console's pages: got %q, want none", errs)
	}
}

// TestConsoleScriptCancelInBrowser: a long script on three machines
// chosen one by one; Cancel on one row cancels that machine's task, and
// Cancel all the others, which all end cancelled.
func TestConsoleScriptCancelInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	findChromium(t)
	ts := startServer(t, nil)
	names := []string{"web-1", "web-2", "web-3"}
	scriptAgents(t, ts, names...)

	b := newBrowser(t, "http://"+ts.HTTPAddr())
	b.signIn(adminKey(t, ts), `li[data-machine="web-1"]`)
	b.do("open the script console", chromedp.Navigate(b.base+"/script"), chromedp.WaitVisible(chromedp.ID("script")))
	for _, name := range names {
		b.do("choose "+name, chromedp.Click(chromedp.CSS(fmt.Sprintf(`input[name="agent"][value=%q]`, name))))
	}
	b.do("run a long script", chromedp.SendKeys(chromedp.ID("script"), "echo started; sleep 120; echo not cancelled"),
		chromedp.Click(chromedp.ID("run-script")), chromedp.WaitVisible(chromedp.CSS(".group-task")))
	for _, name := range names {
		b.waitFor(name+" running", groupRow(name)+`.querySelector(".group-task-head").dataset.state === "running"`)
		b.waitFor(name+" started", groupRow(name)+`.querySelector("pre.log").textContent.includes("started")`)
	}
	b.waitFor("Cancel all (3)", `document.getElementById("cancel-all")?.textContent === "Cancel all (3)"`)
	b.screenshot("63-script-running")

	b.do("cancel web-2", chromedp.Click(chromedp.CSS(`.group-task[data-agent="web-2"] button.cancel-task`)),
		chromedp.WaitVisible(chromedp.CSS(".flash.ok")))
	b.waitFor("web-2 cancelled", groupRow("web-2")+`.querySelector(".group-task-head").dataset.state === "cancelled"`)
	b.waitFor("Cancel all (2)", `document.getElementById("cancel-all")?.textContent === "Cancel all (2)"`)
	b.clearFlashes()
	b.do("cancel all", chromedp.Click(chromedp.ID("cancel-all")), chromedp.WaitVisible(chromedp.CSS(".flash.ok")))
	if d := b.dialogs.all(); len(d) != 2 || d[1] != "Cancel the 2 unfinished tasks of this run?" {
		t.Errorf("confirmations: got %q, want the second to ask about the 2 unfinished tasks", d)
	}
	for _, name := range names {
		b.waitFor(name+" cancelled", groupRow(name)+`.querySelector(".group-task-head").dataset.state === "cancelled"`)
	}
	b.waitFor("no Cancel all", `document.getElementById("cancel-all") === null`)
	if n := evalString(b, `String(document.querySelectorAll(".cancel-task").length)`); n != "0" {
		t.Errorf("cancelled run: got %s Cancel buttons, want none", n)
	}
	for _, tk := range ts.tasksOf(t, "") {
		if tk.State != api.TaskCancelled {
			t.Errorf("task on %s: got %s, want cancelled", tk.Agent, tk.State)
		}
		if _, ok := lineWith(ts.taskLines(t, tk.ID), "stdout", "not cancelled"); ok {
			t.Errorf("task on %s ran to its end, want it stopped", tk.Agent)
		}
	}
	b.screenshot("64-script-cancelled")
	if errs := b.exceptions.all(); len(errs) > 0 {
		t.Fatalf("script errors in the console's pages: got %q, want none", errs)
	}
}

// TestConsoleTaskArtifactInBrowser: a script run from a machine's page
// attaches a file; its task page lists it with its output variable, and
// the browser downloads it from there, byte for byte.
func TestConsoleTaskArtifactInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	findChromium(t)
	ts := startServer(t, nil)
	scriptAgents(t, ts, "web-1")

	report := strings.Repeat("line of the report <b>not markup</b>\n", 200)
	src := filepath.Join(t.TempDir(), "report.txt")
	if err := os.WriteFile(src, []byte(report), 0o600); err != nil {
		t.Fatal(err)
	}
	script := strings.Join([]string{
		"cp '" + src + "' report.txt",
		serviceLine("set-output", "VERSION", "2.4.1"),
		serviceLine("artifact", "", "report.txt"),
	}, "\n")

	b := newBrowser(t, "http://"+ts.HTTPAddr())
	b.signIn(adminKey(t, ts), `li[data-machine="web-1"]`)
	b.do("open web-1", chromedp.Navigate(b.base+"/machines/web-1"), chromedp.WaitVisible(chromedp.ID("run-script-here")))
	b.do("run a script on it", chromedp.Click(chromedp.ID("run-script-here")), chromedp.WaitVisible(chromedp.ID("script")))
	if got := evalString(b, `Array.from(document.querySelectorAll('input[name="agent"]:checked')).map(i => i.value).join(",")`); got != "web-1" {
		t.Fatalf("form from web-1's link: got %q ticked, want web-1", got)
	}
	b.do("run the script", chromedp.SetValue(chromedp.ID("script"), script), chromedp.Click(chromedp.ID("run-script")),
		chromedp.WaitVisible(chromedp.CSS(".group-task")))
	b.waitFor("web-1 succeeded", groupRow("web-1")+`.querySelector(".group-task-head").dataset.state === "succeeded"`)
	b.do("open its task", chromedp.Click(chromedp.CSS(`.group-task[data-agent="web-1"] a.task-link`)), chromedp.WaitVisible(chromedp.ID("task-state")))
	// The coordinator fetches the artifact once the task has finished;
	// the page's refresh shows it.
	b.waitFor("the artifact listed", `document.querySelector('#task-artifacts a.artifact')`)
	if got := evalString(b, `document.querySelector('#task-outputs tr[data-output="VERSION"] .value').textContent`); got != "2.4.1" {
		t.Errorf("output VERSION: got %q, want 2.4.1", got)
	}
	if got, want := evalString(b, `document.querySelector('#task-artifacts tr[data-artifact="report.txt"]').innerText.replace(/\s+/g, " ").trim()`),
		fmt.Sprintf("report.txt %s", humanSize(len(report))); !strings.HasPrefix(got, want) {
		t.Errorf("artifact row: got %q, want it to start %q", got, want)
	}
	b.screenshot("65-task-artifact")

	// The download itself, into a folder of the test's.
	dir := t.TempDir()
	if _, err := chromedp.CallBrowser(b.ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
		Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir}); err != nil {
		t.Fatalf("allow downloads: %v", err)
	}
	b.do("download the artifact", chromedp.Click(chromedp.CSS(`#task-artifacts a.artifact`)))
	var got []byte
	eventually(t, "the artifact downloaded", func() bool {
		got, _ = os.ReadFile(filepath.Join(dir, "report.txt"))
		return len(got) == len(report)
	})
	if !bytes.Equal(got, []byte(report)) {
		t.Fatalf("downloaded artifact: got %d bytes that differ from the %d the script attached", len(got), len(report))
	}
	// Still on the task page: a download never navigates the console.
	if n := evalString(b, `String(document.querySelectorAll("#task-artifacts").length)`); n != "1" {
		t.Errorf("after the download: got %s artifact tables, want the task page still shown", n)
	}
	if errs := b.exceptions.all(); len(errs) > 0 {
		t.Fatalf("script errors in the console's pages: got %q, want none", errs)
	}
}

// humanSize is the console's size of n bytes.
func humanSize(n int) string {
	return fmt.Sprintf("%.1f KiB", float64(n)/1024)
}

// tasksOf lists the tasks of one agent, or every agent's for "".
func (ts *testServer) tasksOf(t *testing.T, agent string) []api.TaskView {
	t.Helper()
	tasks, err := ts.Tasks(context.Background(), api.TaskFilter{Agent: agent, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return tasks
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string { return jsonString(s) }
