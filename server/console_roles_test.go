package server

// Roles in the console: a viewer sees no button that changes anything and
// every action it posts anyway is refused, nothing changed; a deployer
// sees its environments only, and a script aimed elsewhere is refused
// whole.

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
)

func TestConsoleRoles(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.UpgradeIdleTimeout = time.Hour })
	fx := setUpAPIFixture(t, ts)
	ctx := context.Background()
	if _, err := ts.access.CreateUser(ctx, "vera", "correct horse", api.RoleViewer, nil); err != nil {
		t.Fatal(err)
	}
	viewer := newConsoleClient(t, ts)
	viewer.signInAs("vera", "correct horse")

	_, home := viewer.get("/")
	_, machine := viewer.get("/machines/" + fx.agent)
	_, config := viewer.get("/configuration")
	for page, body := range map[string]string{"environments": home, "machine": machine, "configuration": config} {
		for _, button := range []string{`id="upgrade-all"`, `class="update-calamari`, `class="button run-script"`, `id="listening-form"`,
			`id="health-check"`, `id="collect-diagnostics"`, `id="delete-agent"`, `id="run-script-here"`, `id="nav-script"`,
			`id="maintenance-toggle"`, `id="token-form"`, `class="danger revoke-token"`, `id="api-key-form"`} {
			if strings.Contains(body, button) {
				t.Errorf("%s page of a viewer: got %s, want no button that changes anything", page, button)
			}
		}
		if !strings.Contains(body, fx.agent) && page != "configuration" {
			t.Errorf("%s page of a viewer: want %s shown, got:\n%s", page, fx.agent, body)
		}
	}
	if !strings.Contains(config, "user &#34;vera&#34; has the role viewer, which may only read") {
		t.Errorf("configuration page of a viewer: want its role said, got:\n%s", config)
	}

	toks, err := ts.access.Tokens(ctx)
	if err != nil || len(toks) == 0 {
		t.Fatal(toks, err)
	}
	actions := []struct {
		path string
		form url.Values
	}{
		{"/actions/calamari/update", url.Values{"environment": {"Prod"}}},
		{"/actions/upgrade", url.Values{"all": {"true"}}},
		{"/actions/agents/" + fx.agent + "/health-check", url.Values{}},
		{"/actions/agents/" + fx.agent + "/diagnostics", url.Values{}},
		{"/actions/agents/" + fx.away + "/delete", url.Values{}},
		{"/actions/tasks/" + fx.task + "/cancel", url.Values{}},
		{"/actions/maintenance", url.Values{"on": {"true"}}},
		{"/actions/tokens", url.Values{"environment": {"Prod"}, "ttl": {"24h"}}},
		{"/actions/tokens/" + toks[0].ID + "/revoke", url.Values{}},
		{"/actions/api-keys", url.Values{"name": {"escalate"}, "role": {"admin"}}},
		{"/actions/api-keys/" + fx.apiKey + "/revoke", url.Values{}},
		{"/actions/agents", url.Values{"address": {"127.0.0.1:1"}, "thumbprint": {listeningThumb2}, "environment": {"DMZ"}}},
		{"/actions/agents/" + fx.listening + "/address", url.Values{"address": {"127.0.0.1:2"}}},
		{"/actions/rollouts/" + fx.rollout + "/halt", url.Values{}},
		{"/actions/rollouts/" + fx.rollout + "/resume", url.Values{}},
		{"/actions/script", url.Values{"target": {"machines"}, "agent": {fx.agent}, "script": {"id"}}},
		{"/actions/script/some-group/cancel", url.Values{}},
	}
	for _, a := range actions {
		before := apiState(t, ts)
		resp, body := viewer.post(a.path, a.form)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "has the role viewer, which may only read") || !strings.Contains(body, "nothing changed") {
			t.Errorf("viewer posts %s: got %d, want 403 naming its role and that nothing changed:\n%s", a.path, resp.StatusCode, body)
		}
		if after := apiState(t, ts); after != before {
			t.Errorf("viewer posts %s: refused, but the state changed:\nbefore:\n%s\nafter:\n%s", a.path, before, after)
		}
	}

	// A deployer of Away.
	k, err := ts.access.CreateAPIKey(ctx, "away-deployer", api.RoleDeployer, []string{"Away"})
	if err != nil {
		t.Fatal(err)
	}
	dep := newConsoleClient(t, ts)
	dep.signIn(k.Key)
	if _, body := dep.get("/"); !strings.Contains(body, `data-machine="`+fx.away+`"`) || strings.Contains(body, `data-machine="`+fx.agent+`"`) {
		t.Errorf("environments page of a deployer of Away: want away-1 alone, got:\n%s", body)
	}
	if resp, body := dep.get("/machines/" + fx.agent); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "for the environments Away only") {
		t.Errorf("another environment's machine page: got %d, want 403 naming Away:\n%s", resp.StatusCode, body)
	}
	if _, body := dep.get("/script"); !strings.Contains(body, fx.away) || strings.Contains(body, `value="`+fx.agent+`"`) {
		t.Errorf("script console of a deployer: want only its machines offered, got:\n%s", body)
	}
	before := apiState(t, ts)
	resp, body := dep.post("/actions/script", url.Values{"target": {"machines"}, "agent": {fx.away, fx.agent}, "script": {"cat /etc/shadow"}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "for the environments Away only") ||
		!strings.Contains(body, "agent web-1 (environment Prod); nothing was started") {
		t.Errorf("a script on a machine elsewhere: got %d, want 403 refusing it whole:\n%s", resp.StatusCode, body)
	}
	if after := apiState(t, ts); after != before {
		t.Errorf("refused script: the state changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if resp, _ := dep.post("/actions/upgrade", url.Values{"environment": {"Away"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a deployer upgrades its own environment: got %d, want 403", resp.StatusCode)
	}
}
