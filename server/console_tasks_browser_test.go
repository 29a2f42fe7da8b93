package server

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/tendrildeploy/tendril/api"
)

// TestConsoleTasksInBrowser: a task's page shows its isolation and locks,
// and while it is queued behind another, the task it waits for; the
// tasks table shows commands with their quoting and, at a phone's width,
// fits the screen with every cell saying what it is.
func TestConsoleTasksInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	findChromium(t)
	ts := startServer(t, nil)
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	ts.upload(t, packBundle(t, "1.0.0", 0))

	// The holder runs alone until the test lets it go; the other two
	// wait for it.
	release := filepath.Join(t.TempDir(), "release")
	holder := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline",
		"while [ ! -e '" + release + "' ]; do sleep 0.05; done"}})
	// Tasks reach the agent in no set order: the others are created once
	// the holder runs there, so that they wait for it.
	eventually(t, "the holder running", func() bool {
		v, err := ts.Task(context.Background(), holder.ID)
		return err == nil && v.State == api.TaskRunning
	})
	waiter := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", "echo hello"}})
	// A long unbroken argument must wrap rather than widen the page.
	long := "--path=/opt/" + strings.Repeat("deep/", 30) + "app"
	locked := ts.createTask(t, api.TaskRequest{Agent: "web-1", Isolation: api.IsolationNone, Locks: []string{"db", "web-cache"},
		Args: []string{"run-script", "--inline", "echo locked", long}})

	b := newBrowser(t, "http://"+ts.HTTPAddr())
	b.signIn(adminKey(t, ts), `li[data-machine="web-1"]`)

	// The waiting task says what it waits for while it is queued.
	b.do("open the waiting task", chromedp.Navigate(b.base+"/tasks/"+waiter.ID), chromedp.WaitVisible(chromedp.ID("task-state")))
	b.waitFor("the reason it is queued", `document.getElementById("task-waiting")?.textContent.includes("waiting for task `+holder.ID+` (")`)
	if s := evalString(b, `document.getElementById("task-state").textContent`); s != api.TaskQueued {
		t.Fatalf("waiting task: got state %s, want queued", s)
	}
	if got, want := evalString(b, `document.getElementById("task-isolation").textContent`), "full: runs alone on its agent"; got != want {
		t.Fatalf("waiting task's isolation: got %q, want %q", got, want)
	}
	if got, want := evalString(b, `Array.from(document.querySelectorAll("#task dd code")).map(e => e.textContent).join("|")`),
		waiter.ID+"|calamari run-script --inline 'echo hello'"; got != want {
		t.Fatalf("task page's id and command: got %q, want %q", got, want)
	}
	b.screenshot("30-task-queued")

	b.do("open the locked task", chromedp.Navigate(b.base+"/tasks/"+locked.ID), chromedp.WaitVisible(chromedp.ID("task-locks")))
	if got, want := evalString(b, `document.getElementById("task-locks").textContent`), "db, web-cache"; got != want {
		t.Fatalf("locked task's locks: got %q, want %q", got, want)
	}
	if got, want := evalString(b, `document.getElementById("task-isolation").textContent`), "none: runs beside other tasks except those sharing a lock"; got != want {
		t.Fatalf("locked task's isolation: got %q, want %q", got, want)
	}

	// Once the holder ends, the waiter runs and the reason goes.
	b.do("open the waiting task again", chromedp.Navigate(b.base+"/tasks/"+waiter.ID), chromedp.WaitVisible(chromedp.ID("task-state")))
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the waiter succeeded", `document.getElementById("task-state")?.textContent === "succeeded"`)
	if n := evalString(b, `String(document.querySelectorAll("#task-waiting").length)`); n != "0" {
		t.Fatalf("finished task: got %s waiting reasons, want none", n)
	}
	ts.waitFinished(t, locked.ID)
	ts.waitFinished(t, holder.ID)

	// The tasks table on a desktop: quoted commands, isolation and locks.
	b.do("open the tasks", chromedp.Navigate(b.base+"/tasks"), chromedp.WaitVisible(chromedp.CSS("table.tasks")))
	row := func(id string) string { return `document.querySelector('tr[data-task="` + id + `"]')` }
	if got, want := evalString(b, row(waiter.ID)+`.querySelector(".args").textContent`), "run-script --inline 'echo hello'"; got != want {
		t.Fatalf("waiter's command: got %q, want %q", got, want)
	}
	if got, want := evalString(b, row(locked.ID)+`.querySelector(".isolation").textContent`), "none; locks db, web-cache"; got != want {
		t.Fatalf("locked task's isolation cell: got %q, want %q", got, want)
	}
	if got, want := evalString(b, row(holder.ID)+`.querySelector(".isolation").textContent`), "full"; got != want {
		t.Fatalf("holder's isolation cell: got %q, want %q", got, want)
	}
	b.screenshot("31-tasks")

	// At a phone's width: no sideways scrolling, the header row hidden,
	// and every cell labelled.
	b.do("tasks on a phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(b.base+"/tasks"),
		chromedp.WaitVisible(chromedp.CSS("table.tasks")))
	if fits := evalString(b, `String(document.documentElement.scrollWidth <= window.innerWidth)`); fits != "true" {
		t.Fatalf("tasks on a phone: got scrollWidth %s > innerWidth %s, want no sideways scrolling",
			evalString(b, `String(document.documentElement.scrollWidth)`), evalString(b, `String(window.innerWidth)`))
	}
	if wide := evalString(b, `String(Array.from(document.querySelectorAll("table.tasks td")).filter(td => td.getBoundingClientRect().right > window.innerWidth + 0.5).length)`); wide != "0" {
		t.Fatalf("tasks on a phone: got %s cells reaching past the screen's edge, want none", wide)
	}
	if d := evalString(b, `getComputedStyle(document.querySelector("table.tasks thead")).display`); d != "none" {
		t.Fatalf("tasks on a phone: got the header row displayed %q, want none (each cell carries its label)", d)
	}
	labels := evalString(b, `JSON.stringify(Array.from(document.querySelectorAll('tr[data-task="`+locked.ID+`"] td')).map(td => getComputedStyle(td, "::before").content))`)
	var got []string
	if err := json.Unmarshal([]byte(labels), &got); err != nil {
		t.Fatalf("labels %s: %v", labels, err)
	}
	want := []string{`"Created: "`, `"Agent: "`, `"Command: "`, `"Isolation: "`, `"State: "`, `"Exit: "`}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("labels of a task's cells on a phone: got %q, want %q", got, want)
	}
	if n := evalString(b, `String(document.querySelectorAll("table.tasks td:not([data-label])").length)`); n != "0" {
		t.Fatalf("tasks on a phone: got %s cells without a label, want none", n)
	}
	b.screenshot("32-tasks-phone")
	if errs := b.exceptions.all(); len(errs) > 0 {
		t.Fatalf("script errors in the console's pages: got %q, want none", errs)
	}
}
