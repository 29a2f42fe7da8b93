package server

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
)

var flashRolloutLink = regexp.MustCompile(`<a href="/rollouts/([0-9a-f-]{36})" class="flash-link">`)

// TestConsoleRollouts: pressing Upgrade links to the rollout's page, which
// shows each batch and agent with its state, time and reason, refreshes
// from a fragment, and halts and resumes the rollout behind the CSRF
// check.
func TestConsoleRollouts(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	a := newFakeAgent(t, ts, "web-1", "Test", "1.0.0")
	newFakeAgent(t, ts, "web-2", "Test", "1.0.0")
	ts.waitConnected(t, "web-1")
	ts.waitConnected(t, "web-2")
	makeBusy(t, ts, a) // batch 1 waits for it
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	csrf := c.csrf()

	if resp, body := c.get("/rollouts"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "No rollouts yet") {
		t.Fatalf("rollouts before any: got %d, want 200 saying there are none:\n%s", resp.StatusCode, body)
	}
	// The Upgrade button's flash links to the rollout it started.
	newFakeAgent(t, ts, "solo-1", "Solo", "1.0.0")
	ts.waitConnected(t, "solo-1")
	resp, _ := c.do(http.MethodPost, "/actions/upgrade", url.Values{"csrf": {csrf}, "environment": {"Solo"}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("upgrade: got %d, want 303", resp.StatusCode)
	}
	_, body := c.get("/")
	m := flashRolloutLink.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("home after Upgrade: want a link to the rollout in the flash, got:\n%s", body)
	}
	if v := ts.waitRollout(t, m[1]); v.State != api.RolloutSucceeded || v.Environment != "Solo" {
		t.Fatalf("the linked rollout: got %s of %q, want the Solo rollout succeeded", v.State, v.Environment)
	}
	// Test's agents one per batch, the first held busy.
	r, err := ts.rollouts.StartRollout(ctx, api.RolloutRequest{Environment: "Test", Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	id := r.ID
	page := "/rollouts/" + id
	eventually(t, "web-1 waiting for idle", func() bool {
		return agentRow(ts.rollout(t, id), "web-1").State == api.UpgradeWaitingForIdle
	})

	_, body = c.get("/rollouts")
	for _, want := range []string{`data-rollout="` + id + `"`, `href="/rollouts/` + id + `"`, `data-rollout-state="running"`, "<td>Test</td>", "<td>2.0.0</td>",
		`data-rollout="` + m[1] + `"`, `data-rollout-state="succeeded"`} {
		if !strings.Contains(body, want) {
			t.Fatalf("rollouts list: want %q in:\n%s", want, body)
		}
	}
	resp, body = c.get(page)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("rollout page: got %d, want 200", resp.StatusCode)
	}
	for _, want := range []string{
		`data-refresh="/ui/fragments/rollouts/` + id + `"`,
		`data-batch="1" data-batch-state="running"`,
		`<tr data-agent="web-1" data-state="waiting_for_idle">`,
		"waiting for the agent to be connected and idle",
		`id="halt-rollout"`,
		`<progress id="rollout-progress" max="2" value="0">`,
	} {
		if !strings.Contains(body, want) {
			t.Fatalf("rollout page: want %q in:\n%s", want, body)
		}
	}

	// Halting needs the session's CSRF token; a refusal changes nothing.
	for name, form := range map[string]url.Values{"no token": {}, "wrong token": {"csrf": {"AAAA" + csrf[4:]}}} {
		resp, _ := c.do(http.MethodPost, "/actions/rollouts/"+id+"/halt", form, nil)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("halt with %s: got %d, want 403", name, resp.StatusCode)
		}
		if ts.rollout(t, id).Paused {
			t.Fatalf("halt with %s: the rollout is halted, want it untouched", name)
		}
	}
	resp, _ = c.do(http.MethodPost, "/actions/rollouts/"+id+"/halt", url.Values{"csrf": {csrf}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != page {
		t.Fatalf("halt: got %d to %q, want 303 to %s", resp.StatusCode, resp.Header.Get("Location"), page)
	}
	if !ts.rollout(t, id).Paused {
		t.Fatal("halt: the rollout is not halted")
	}
	_, body = c.get(page)
	for _, want := range []string{"Rollout halted", `id="rollout-paused"`, `id="resume-rollout"`, `data-rollout-state="paused"`} {
		if !strings.Contains(body, want) {
			t.Fatalf("rollout page after halt: want %q in:\n%s", want, body)
		}
	}
	// The batch under way finishes; the next one is held, and the page's
	// fragment says so.
	a.set(func(f *fakeAgent) { f.running = 0 })
	ts.checkAllHealth()
	eventually(t, "web-1 upgraded and web-2 held", func() bool {
		v := ts.rollout(t, id)
		return agentRow(v, "web-1").State == api.UpgradeSucceeded && heldByHalt(v, "web-2")
	})
	resp, body = c.get("/ui/fragments/rollouts/" + id)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "batch 2 waits: the rollout was halted by an operator") ||
		!strings.Contains(body, `data-batch="1" data-batch-state="done"`) || strings.Contains(body, "<html") {
		t.Fatalf("fragment while halted: got %d, want batch 1 done and batch 2 held, without the page around it:\n%s", resp.StatusCode, body)
	}

	resp, _ = c.do(http.MethodPost, "/actions/rollouts/"+id+"/resume", url.Values{"csrf": {csrf}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("resume: got %d, want 303", resp.StatusCode)
	}
	if v := ts.waitRollout(t, id); v.State != api.RolloutSucceeded {
		t.Fatalf("after resume: got %s (%s), want succeeded", v.State, v.Reason)
	}
	eventually(t, "web-2 at 2.0.0", func() bool { return ts.agentView(t, "web-2").Version == "2.0.0" })
	_, body = c.get(page)
	if strings.Contains(body, `id="halt-rollout"`) || strings.Contains(body, `id="resume-rollout"`) || !strings.Contains(body, `data-rollout-state="succeeded"`) {
		t.Fatalf("finished rollout page: want no halt or resume button and the state succeeded:\n%s", body)
	}
	// Halting it now fails, and the page says why.
	c.do(http.MethodPost, "/actions/rollouts/"+id+"/halt", url.Values{"csrf": {csrf}}, nil)
	if _, body = c.get(page); !strings.Contains(body, "Halt rollout failed: rollout "+id+" has already finished") {
		t.Fatalf("halting a finished rollout: want the error shown, got:\n%s", body)
	}

	// Unknown rollouts, and no session.
	if resp, body := c.get("/rollouts/nope"); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "There is no rollout") {
		t.Fatalf("unknown rollout page: got %d, want 404 saying so", resp.StatusCode)
	}
	if resp, body := c.get("/ui/fragments/rollouts/nope"); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `no rollout \"nope\"`) {
		t.Fatalf("unknown rollout fragment: got %d %s, want 404 JSON", resp.StatusCode, body)
	}
	anon := newConsoleClient(t, ts)
	if resp, _ := anon.get(page); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("rollout page signed out: got %d, want 303 to sign in", resp.StatusCode)
	}
	if resp, _ := anon.get("/ui/fragments/rollouts"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("rollouts fragment signed out: got %d, want 401", resp.StatusCode)
	}
	if _, err := ts.rollouts.HaltRollout(ctx, id); err == nil {
		t.Fatal("halting a finished rollout: got no error")
	}
}
