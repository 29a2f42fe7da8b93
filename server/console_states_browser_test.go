package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// More colours of console.css, as the browser computes them.
const (
	warningBadge     = "rgb(255, 243, 196)" // --warning-bg
	warningBorder    = "rgb(154, 103, 0)"   // --warning
	recommendedBadge = "rgb(221, 238, 255)" // --recommended-bg
)

// signIn opens the console and signs in with key, waiting for sel.
func (b *browser) signIn(key, sel string) {
	b.t.Helper()
	b.do("sign in",
		chromedp.Navigate(b.base+"/signin"),
		chromedp.WaitVisible(chromedp.ID("key")),
		chromedp.SendKeys(chromedp.ID("key"), key),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.CSS(sel)))
}

// badges are the state badges of the machine's row, in order.
func (b *browser) badges(name string) string {
	b.t.Helper()
	return evalString(b, fmt.Sprintf(`Array.from(document.querySelectorAll('li[data-machine=%q] .state')).map(e => e.textContent).join(", ")`, name))
}

// TestConsoleHealthBesideUpgradeInBrowser: a machine recommended an
// upgrade keeps its health's colour, healthy and then warning, with the
// upgrade as a badge beside it and its Calamari in words; before any
// agent package exists the Upgrade buttons are disabled and say why,
// and they come alive, without a reload, once one is uploaded.
func TestConsoleHealthBesideUpgradeInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	findChromium(t)
	ts := startServer(t, nil)
	newFakeAgent(t, ts, "web-1", "Prod", "1.0.0")
	ts.waitConnected(t, "web-1")
	eventually(t, "web-1's first health check recorded", func() bool { return ts.agentView(t, "web-1").LastHealthAt != "" })
	b := newBrowser(t, "http://"+ts.HTTPAddr())
	b.signIn(adminKey(t, ts), `li[data-machine="web-1"]`)

	// No agent package: every Upgrade button is disabled, and the page
	// says why and what to run.
	for _, sel := range []string{`#upgrade-all`, `section[data-environment="Prod"] button.upgrade-agents`} {
		if d := evalString(b, fmt.Sprintf(`String(document.querySelector(%q).disabled)`, sel)); d != "true" {
			t.Fatalf("%s without an agent package: got disabled=%s, want true", sel, d)
		}
	}
	reason := evalString(b, `document.getElementById("upgrade-blocked").textContent`)
	if !strings.Contains(reason, "No agent package has been uploaded") || !strings.Contains(reason, "tendril-server agent-package push") {
		t.Fatalf("reason beside the Upgrade buttons: got %q, want it to say no agent package exists and how to upload one", reason)
	}
	if got, want := b.calamariWords(`li[data-machine="web-1"]`), "no Calamari uploaded yet"; got != want {
		t.Fatalf("web-1's Calamari with no bundle: got %q, want %q", got, want)
	}
	b.screenshot("20-upgrade-disabled")
	b.do("open the machine page", chromedp.Navigate(b.base+"/machines/web-1"), chromedp.WaitVisible(chromedp.ID("upgrade-agent")))
	if d := evalString(b, `String(document.getElementById("upgrade-agent").disabled)`); d != "true" {
		t.Fatalf("Upgrade this agent without an agent package: got disabled=%s, want true", d)
	}
	if r := evalString(b, `document.getElementById("upgrade-blocked").textContent`); r != reason {
		t.Fatalf("machine page's reason: got %q, want %q", r, reason)
	}
	b.screenshot("21-machine-upgrade-disabled")

	// An agent package: the buttons come alive without a reload, and
	// web-1 is recommended the upgrade while its colour stays healthy.
	b.do("back to the environments", chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.CSS(`li[data-machine="web-1"]`)))
	evalString(b, `window.tendrilNotReloaded = "yes"; "ok"`)
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	b.waitFor("the upgrade recommended", `document.querySelector('li[data-machine="web-1"]')?.dataset.upgrade === "recommended"`)
	if v := evalString(b, `String(window.tendrilNotReloaded)`); v != "yes" {
		t.Fatalf("page state after the refresh: got %q, want \"yes\" (no full reload)", v)
	}
	if state, badge, border := b.machineState("web-1"); state != "healthy" || badge != healthyBadge || border != healthyBorder {
		t.Fatalf("web-1 with an upgrade recommended: got %s (badge %s, border %s), want healthy (%s, %s)", state, badge, border, healthyBadge, healthyBorder)
	}
	if got, want := b.badges("web-1"), "healthy, upgrade recommended"; got != want {
		t.Fatalf("web-1's badges: got %q, want %q", got, want)
	}
	if bg := evalString(b, `getComputedStyle(document.querySelector('li[data-machine="web-1"] .state-upgrade-recommended')).backgroundColor`); bg != recommendedBadge {
		t.Fatalf("upgrade badge: got background %s, want %s", bg, recommendedBadge)
	}
	for _, sel := range []string{`#upgrade-all`, `section[data-environment="Prod"] button.upgrade-agents`} {
		if d := evalString(b, fmt.Sprintf(`String(document.querySelector(%q).disabled)`, sel)); d != "false" {
			t.Fatalf("%s with an agent package: got disabled=%s, want false", sel, d)
		}
	}
	if n := evalString(b, `String(document.querySelectorAll("#upgrade-blocked").length)`); n != "0" {
		t.Fatalf("reason with an agent package: got %s, want none shown", n)
	}
	b.screenshot("22-healthy-upgrade-recommended")

	// A Calamari bundle web-1 lacks makes its health a warning: the
	// colour follows the health, the upgrade badge stays beside it, and
	// the words say what is missing.
	ts.upload(t, packBundle(t, "2.0.0", 0))
	ts.checkAllHealth()
	b.waitFor("web-1 a warning", `document.querySelector('li[data-machine="web-1"]')?.dataset.state === "warning"`)
	if state, badge, border := b.machineState("web-1"); state != "warning" || badge != warningBadge || border != warningBorder {
		t.Fatalf("web-1 with a warning and an upgrade: got %s (badge %s, border %s), want warning (%s, %s)", state, badge, border, warningBadge, warningBorder)
	}
	if got, want := b.badges("web-1"), "warning, upgrade recommended"; got != want {
		t.Fatalf("web-1's badges: got %q, want %q", got, want)
	}
	if got, want := b.calamariWords(`li[data-machine="web-1"]`), "Calamari out of date: it has none; the latest is 2.0.0"; got != want {
		t.Fatalf("web-1's Calamari: got %q, want %q", got, want)
	}
	if got, want := b.calamariWords(`section[data-environment="Prod"] > header`), "Calamari out of date on 1 of 1 machine: the latest, 2.0.0, is missing"; got != want {
		t.Fatalf("Prod's Calamari: got %q, want %q", got, want)
	}
	b.screenshot("23-warning-upgrade-recommended")

	// The machine page says the same: health colour, badge, words, and
	// an Upgrade button that may be pressed.
	b.do("open the machine page again", chromedp.Navigate(b.base+"/machines/web-1"), chromedp.WaitVisible(chromedp.ID("upgrade-agent")))
	if state := evalString(b, `document.querySelector(".machine-head").dataset.state`); state != "warning" {
		t.Fatalf("machine page: got state %s, want warning", state)
	}
	if border := evalString(b, `getComputedStyle(document.querySelector(".machine-head")).borderLeftColor`); border != warningBorder {
		t.Fatalf("machine page: got border %s, want the warning's %s", border, warningBorder)
	}
	if got := evalString(b, `Array.from(document.querySelectorAll(".machine-head .state")).map(e => e.textContent).join(", ")`); got != "warning, upgrade recommended" {
		t.Fatalf("machine page badges: got %q, want \"warning, upgrade recommended\"", got)
	}
	if got, want := evalString(b, `document.getElementById("machine-calamari").textContent`), "Calamari out of date: it has none; the latest is 2.0.0"; got != want {
		t.Fatalf("machine page Calamari: got %q, want %q", got, want)
	}
	if d := evalString(b, `String(document.getElementById("upgrade-agent").disabled)`); d != "false" {
		t.Fatalf("Upgrade this agent with a package: got disabled=%s, want false", d)
	}
	b.screenshot("24-machine-warning-upgrade")
	if errs := b.exceptions.all(); len(errs) > 0 {
		t.Fatalf("script errors in the console's pages: got %q, want none", errs)
	}
}
