package server

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/tendrildeploy/tendril/api"
)

// TestConsoleRolloutsInBrowser: press Upgrade, follow the flash's link to
// the rollout and see it finish; then halt a rollout of two batches from
// its page, see the batch under way finish and the next held without a
// reload, resume it and see it succeed. The agents are the rollout tests'
// simulated ones, which restart into the new version without a binary.
func TestConsoleRolloutsInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	findChromium(t)
	ts := startServer(t, nil)
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	a := newFakeAgent(t, ts, "web-1", "Prod", "1.0.0")
	newFakeAgent(t, ts, "web-2", "Prod", "1.0.0")
	newFakeAgent(t, ts, "solo-1", "Solo", "1.0.0")
	for _, n := range []string{"web-1", "web-2", "solo-1"} {
		ts.waitConnected(t, n)
	}
	makeBusy(t, ts, a)
	b := newBrowser(t, "http://"+ts.HTTPAddr())
	b.do("sign in",
		chromedp.Navigate(b.base+"/signin"),
		chromedp.WaitVisible(chromedp.ID("key")),
		chromedp.SendKeys(chromedp.ID("key"), adminKey(t, ts)),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.CSS(`section[data-environment="Solo"]`)))

	// Upgrade from the environments page; the flash links to the rollout,
	// whose page follows it to the end.
	b.do("press Upgrade agents of Solo",
		chromedp.Click(chromedp.CSS(`section[data-environment="Solo"] button.upgrade-agents`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash.ok a.flash-link`)))
	b.screenshot("11-upgrade-started")
	b.do("follow the flash's link", chromedp.Click(chromedp.CSS(`.flash.ok a.flash-link`)), chromedp.WaitVisible(chromedp.ID("rollout")))
	b.waitFor("the Solo rollout shown succeeded", `document.querySelector("#rollout [data-rollout-state]")?.dataset.rolloutState === "succeeded"`)
	if text := evalString(b, `document.querySelector("#rollout h1").textContent`); text != "Upgrade Solo to 2.0.0" {
		t.Fatalf("rollout heading: got %q, want \"Upgrade Solo to 2.0.0\"", text)
	}
	b.screenshot("12-rollout-succeeded")

	// Prod, one agent per batch, web-1 busy.
	r, err := ts.rollouts.StartRollout(context.Background(), api.RolloutRequest{Environment: "Prod", Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	b.do("open the rollouts list", chromedp.Navigate(b.base+"/rollouts"), chromedp.WaitVisible(chromedp.CSS(`tr[data-rollout="`+r.ID+`"]`)))
	if n := evalString(b, `String(document.querySelectorAll("tr.rollout").length)`); n != "2" {
		t.Fatalf("rollouts list: got %s rows, want 2", n)
	}
	b.screenshot("13-rollouts")
	b.do("open the Prod rollout",
		chromedp.Click(chromedp.CSS(`tr[data-rollout="`+r.ID+`"] a`)),
		chromedp.WaitVisible(chromedp.ID("halt-rollout")))
	b.waitFor("web-1 waiting for idle", `document.querySelector('tr[data-agent="web-1"]')?.dataset.state === "waiting_for_idle"`)
	b.do("halt", chromedp.Click(chromedp.ID("halt-rollout")), chromedp.WaitVisible(chromedp.ID("resume-rollout")))
	if got := b.dialogs.all(); len(got) == 0 || !strings.Contains(got[len(got)-1], "Halt this rollout?") {
		t.Fatalf("confirmation dialogs: got %q, want the halt question", got)
	}
	b.screenshot("14-rollout-halted")

	// The batch under way finishes and the next is held, shown without a
	// reload.
	evalString(b, `window.tendrilNotReloaded = "yes"; "ok"`)
	a.set(func(f *fakeAgent) { f.running = 0 })
	ts.checkAllHealth()
	b.waitFor("batch 1 done, batch 2 held",
		`document.querySelector('[data-batch="1"]')?.dataset.batchState === "done" && `+
			`document.querySelector('tr[data-agent="web-2"] .reason')?.textContent.includes("halted by an operator")`)
	if v := evalString(b, `String(window.tendrilNotReloaded)`); v != "yes" {
		t.Fatalf("page state after the refresh: got %q, want \"yes\" (no full reload)", v)
	}
	if v := ts.rollout(t, r.ID); agentRow(v, "web-2").State != api.UpgradeQueued {
		t.Fatalf("web-2 while halted: got %s, want queued", agentRow(v, "web-2").State)
	}
	b.screenshot("15-rollout-batch-held")

	b.do("resume", chromedp.Click(chromedp.ID("resume-rollout")), chromedp.WaitVisible(chromedp.CSS(`.flash.ok`)))
	b.waitFor("the Prod rollout shown succeeded", `document.querySelector("#rollout [data-rollout-state]")?.dataset.rolloutState === "succeeded"`)
	if done := evalString(b, `document.getElementById("rollout-done").textContent`); done != "2 of 2" {
		t.Fatalf("progress: got %q, want \"2 of 2\"", done)
	}
	b.screenshot("16-rollout-resumed-succeeded")

	b.do("rollout page on a phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(b.base+"/rollouts/"+r.ID),
		chromedp.WaitVisible(chromedp.ID("rollout")))
	if fits := evalString(b, `String(document.documentElement.scrollWidth <= window.innerWidth)`); fits != "true" {
		t.Fatalf("rollout page on a phone: got scrollWidth %s > innerWidth %s, want no sideways scrolling",
			evalString(b, `String(document.documentElement.scrollWidth)`), evalString(b, `String(window.innerWidth)`))
	}
	b.screenshot("17-rollout-phone")
	if errs := b.exceptions.all(); len(errs) > 0 {
		t.Fatalf("script errors in the console's pages: got %q, want none", errs)
	}
}
