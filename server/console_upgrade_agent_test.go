package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/httpapi"
)

// The Machine page's upgrade button upgrades that machine only, not its
// environment: web-2 shares web-1's environment and stays at 1.0.0.
func TestConsoleUpgradeThisAgent(t *testing.T) {
	ts := startServer(t, nil)
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	newFakeAgent(t, ts, "web-1", "Test", "1.0.0")
	newFakeAgent(t, ts, "web-2", "Test", "1.0.0")
	ts.waitConnected(t, "web-1")
	ts.waitConnected(t, "web-2")
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))

	_, page := c.get("/machines/web-1")
	for _, want := range []string{`<input type="hidden" name="agent" value="web-1">`, `>Upgrade this agent</button>`} {
		if !strings.Contains(page, want) {
			t.Fatalf("machine page: want %q in:\n%s", want, page)
		}
	}
	if strings.Contains(page, "Upgrade agents of") {
		t.Fatalf("machine page: got an environment-wide upgrade button, want only this agent's:\n%s", page)
	}
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("machine page: no CSRF field in:\n%s", page)
	}
	form := url.Values{"agent": {"web-1"}, "back": {"/machines/web-1"}}

	// Without the session's token nothing starts.
	resp, _ := c.do(http.MethodPost, "/actions/upgrade", form, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("upgrade without a CSRF token: got %d, want 403", resp.StatusCode)
	}
	if rs, err := ts.rollouts.Rollouts(context.Background()); err != nil || len(rs) != 0 {
		t.Fatalf("rollouts after a refused upgrade: got %d (%v), want none", len(rs), err)
	}

	form.Set("csrf", m[1])
	resp, _ = c.do(http.MethodPost, "/actions/upgrade", form, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/machines/web-1" {
		t.Fatalf("upgrade: got %d to %q, want 303 to /machines/web-1", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, page = c.get("/machines/web-1")
	f := rolloutIDInFlash.FindStringSubmatch(page)
	if f == nil || f[2] != "1" {
		t.Fatalf("machine page after the upgrade: want a flash naming the rollout and 1 agent, got:\n%s", page)
	}
	if want := `href="/rollouts/` + f[1] + `"`; !strings.Contains(page, want) {
		t.Fatalf("flash: want a link %s in:\n%s", want, page)
	}
	v := ts.waitRollout(t, f[1])
	if v.State != api.RolloutSucceeded {
		t.Fatalf("rollout: got %s (%s), want succeeded", v.State, v.Reason)
	}
	if got := agentStates(v); !reflect.DeepEqual(got, map[string]string{"web-1": api.UpgradeSucceeded}) {
		t.Fatalf("rollout agents: got %v, want only web-1, succeeded", got)
	}
	if v.All || v.Environment != "" || !reflect.DeepEqual(v.TargetAgents, []string{"web-1"}) {
		t.Fatalf("rollout target: got all=%v environment=%q agents=%v, want agents [web-1]", v.All, v.Environment, v.TargetAgents)
	}
	eventually(t, "web-1 at 2.0.0", func() bool { return ts.agentView(t, "web-1").Version == "2.0.0" })
	if got := ts.agentView(t, "web-2").Version; got != "1.0.0" {
		t.Fatalf("web-2: got version %s, want 1.0.0 (not in the rollout)", got)
	}
	_, list := c.get("/rollouts")
	if !strings.Contains(list, "web-1") {
		t.Fatalf("rollouts page: want the target web-1 in:\n%s", list)
	}
}

// The OpenAPI document is generated from the Go types: the agents target
// of a rollout request, and the target of a rollout view, are in it.
func TestOpenAPIRolloutAgentsTarget(t *testing.T) {
	b, err := httpapi.Document("1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Type  any `json:"type"`
					Items *struct {
						Type any `json:"type"`
					} `json:"items"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("document is not JSON: %v", err)
	}
	tests := []struct{ schema, field string }{
		{"RolloutRequest", "agents"},
		{"RolloutView", "target_agents"},
	}
	for _, tt := range tests {
		p, ok := doc.Components.Schemas[tt.schema].Properties[tt.field]
		if !ok {
			t.Fatalf("schema %s: got no property %q, want an array of strings", tt.schema, tt.field)
		}
		if got := fmt.Sprint(p.Type); !strings.Contains(got, "array") || p.Items == nil || fmt.Sprint(p.Items.Type) != "string" {
			t.Fatalf("schema %s property %s: got type %v items %+v, want an array of strings", tt.schema, tt.field, p.Type, p.Items)
		}
	}
}
