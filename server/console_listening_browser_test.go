package server

// Listening agents in a real browser: the add form refusing a bad address
// and then adding a real listening agent at an address where it is not,
// its page showing the mode, the address and, without a reload, why the
// coordinator cannot connect, and the address form moving it to where it
// listens, after which the page shows it connected and healthy.
// Screenshots are named listening-*.png.

import (
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/internal/servertest"

	"github.com/chromedp/chromedp"
)

func TestConsoleListeningAgentInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	findChromium(t)
	ts := startServer(t, fastDialer)
	agent, listening := listeningAgent(t, ts.Thumbprint())
	thumb := agent.Status().Thumbprint
	b := newBrowser(t, "http://"+ts.HTTPAddr())
	b.do("sign in",
		chromedp.Navigate(b.base+"/"),
		chromedp.WaitVisible(chromedp.ID("key")),
		chromedp.SendKeys(chromedp.ID("key"), adminKey(t, ts)),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("listening-form")))

	addr := servertest.FreeAddr(t)
	// add fills in the form and submits it.
	add := func(address string, then chromedp.Action[chromedp.Void]) []chromedp.Action[chromedp.Void] {
		return []chromedp.Action[chromedp.Void]{
			chromedp.SetValue(chromedp.ID("listening-address"), address),
			chromedp.SetValue(chromedp.ID("listening-thumbprint"), thumb),
			chromedp.SetValue(chromedp.ID("listening-environment"), "DMZ"),
			chromedp.SetValue(chromedp.ID("listening-name"), "dmz-1"),
			chromedp.Click(chromedp.ID("add-listening-agent")),
			then,
		}
	}
	b.do("add with an address without a port", add("127.0.0.1", chromedp.WaitVisible(chromedp.CSS(".flash.error")))...)
	if msg := evalString(b, `document.querySelector(".flash.error").textContent`); !strings.Contains(msg, "missing port in address") {
		t.Fatalf("refused add: got %q, want it to say the port is missing", msg)
	}
	b.screenshot("listening-01-refused")

	b.clearFlashes()
	b.do("add dmz-1", add(addr, chromedp.WaitVisible(chromedp.ID("agent-mode")))...)
	if got := evalString(b, `document.getElementById("agent-mode").textContent`); !strings.HasPrefix(got, "listening") {
		t.Fatalf("mode on the machine page: got %q, want listening", got)
	}
	if got := evalString(b, `document.getElementById("agent-address").textContent`); got != addr {
		t.Fatalf("address on the machine page: got %q, want %s", got, addr)
	}
	b.waitFor("the dial error, without a reload", `document.getElementById("agent-dial-error")?.textContent.length > 0`)
	b.screenshot("listening-02-added")

	moved := listening
	b.clearFlashes()
	b.do("change the address",
		chromedp.SetValue(chromedp.ID("new-address"), moved),
		chromedp.Click(chromedp.ID("set-address")),
		chromedp.WaitVisible(chromedp.CSS(".flash.ok")))
	if msg := evalString(b, `document.querySelector(".flash.ok").textContent`); !strings.Contains(msg, "dmz-1 moved: the coordinator dials "+moved) {
		t.Fatalf("flash after the move: got %q, want it to name %s", msg, moved)
	}
	if got := evalString(b, `document.getElementById("agent-address").textContent`); got != moved {
		t.Fatalf("address after the move: got %q, want %s", got, moved)
	}
	b.waitFor("the agent connected and healthy, without a reload",
		`document.querySelector(".machine-head")?.dataset.state === "healthy" && !document.getElementById("agent-dial-error")`)
	b.screenshot("listening-03-moved")

	b.do("open the environments", chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.CSS(`li[data-machine="dmz-1"]`)))
	if got := evalString(b, `document.querySelector('li[data-machine="dmz-1"] .mode').textContent`); got != "listening" {
		t.Fatalf("mode on the environments page: got %q, want listening", got)
	}
	b.screenshot("listening-04-environments")
	if errs := b.exceptions.all(); len(errs) > 0 {
		t.Fatalf("script errors in the console's pages: got %q, want none", errs)
	}
}
