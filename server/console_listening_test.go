package server

// Listening agents in the web console, over HTTP: the form that adds one,
// its mode, address and dial error on the pages, the form that moves it,
// and bad input shown on the page with nothing changed.

import (
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/internal/servertest"
)

// listeningForm is the add form as a browser sends it.
func listeningForm(name, environment, address, thumbprint string) url.Values {
	return url.Values{"name": {name}, "environment": {environment}, "address": {address}, "thumbprint": {thumbprint}}
}

func TestConsoleAddListeningAgent(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "web-1")
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))

	_, home := c.get("/")
	for _, want := range []string{`id="listening-form"`, `action="/actions/agents"`, `name="thumbprint"`, `<option value="Test">`,
		`data-mode="polling"`, `class="mode mode-polling"`} {
		if !strings.Contains(home, want) {
			t.Fatalf("home: want %q in:\n%s", want, home)
		}
	}

	// Added, the browser lands on the new machine's page.
	addr := servertest.FreeAddr(t)
	resp, page := c.post("/actions/agents", listeningForm(" dmz-1 ", "DMZ", addr, strings.ToUpper(listeningThumb)))
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/machines/dmz-1" {
		t.Fatalf("add: got %d at %s, want 200 on /machines/dmz-1:\n%s", resp.StatusCode, resp.Request.URL.Path, page)
	}
	for _, want := range []string{`class="flash ok"`, "Added listening agent dmz-1 to DMZ: the coordinator dials " + addr,
		`id="agent-mode">listening`, `id="agent-address">` + addr + `<`, `id="address-form"`, `value="` + addr + `"`, listeningThumb} {
		if !strings.Contains(page, want) {
			t.Fatalf("machine page after the add: want %q in:\n%s", want, page)
		}
	}
	if v := ts.agentView(t, "dmz-1"); v.Mode != "listening" || v.Address != addr || v.Environment != "DMZ" || v.Thumbprint != listeningThumb {
		t.Fatalf("added: got %+v, want dmz-1 in DMZ listening at %s", v, addr)
	}
	// The page's fragment shows why the coordinator cannot connect.
	servertest.WaitFor(t, dialDeadline, "the dial error on dmz-1's page", func() bool {
		_, frag := c.get("/ui/fragments/machines/dmz-1")
		return strings.Contains(frag, `id="agent-dial-error"`)
	})
	_, frag := c.get("/ui/fragments/environments")
	if !strings.Contains(frag, `data-machine="dmz-1" data-state="unavailable" data-mode="listening"`) || !strings.Contains(frag, `class="mode mode-listening"`) {
		t.Fatalf("environments fragment: want dmz-1 unavailable and listening, got:\n%s", frag)
	}
	// A polling agent's page has no address to change.
	if _, page := c.get("/machines/web-1"); strings.Contains(page, `id="address-form"`) || !strings.Contains(page, `id="agent-mode">polling`) {
		t.Fatalf("web-1's page: want polling and no address form, got:\n%s", page)
	}

	tests := []struct {
		name string
		form url.Values
		want string
	}{
		{"address without port", listeningForm("dmz-2", "DMZ", "127.0.0.1", listeningThumb2), "missing port in address"},
		{"port 0", listeningForm("dmz-2", "DMZ", "127.0.0.1:0", listeningThumb2), "port must be 1-65535"},
		{"bad thumbprint", listeningForm("dmz-2", "DMZ", addr, "abcd"), "want 64 hex digits, got 4"},
		{"no environment", listeningForm("dmz-2", "", addr, listeningThumb2), `environment name "": use 1-63 letters`},
		{"hostile name", listeningForm(hostile, "DMZ", addr, listeningThumb2), "agent name"},
		{"name taken", listeningForm("dmz-1", "DMZ", addr, listeningThumb2), "agent name is already taken"},
		{"thumbprint taken", listeningForm("dmz-2", "DMZ", addr, listeningThumb), "certificate is already registered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := listeningState(t, ts)
			resp, page := c.post("/actions/agents", tt.form)
			if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" {
				t.Fatalf("got %d at %s, want 200 back on /", resp.StatusCode, resp.Request.URL.Path)
			}
			if !strings.Contains(page, `class="flash error"`) || !strings.Contains(page, "Add listening agent failed") ||
				!strings.Contains(page, html.EscapeString(tt.want)) {
				t.Fatalf("page after a refused add: want an error flash with %q, got:\n%s", tt.want, page)
			}
			if strings.Contains(page, "<script>alert") {
				t.Fatal("the name tried is shown unescaped")
			}
			if after := listeningState(t, ts); after != before {
				t.Fatalf("refused, but the agents changed:\nbefore: %s\nafter:  %s", before, after)
			}
		})
	}

	// A forged form adds nothing.
	before := listeningState(t, ts)
	resp, _ = c.do(http.MethodPost, "/actions/agents", listeningForm("dmz-3", "DMZ", addr, listeningThumb2), nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("add without the CSRF token: got %d, want 403", resp.StatusCode)
	}
	if after := listeningState(t, ts); after != before {
		t.Fatalf("forged add changed the agents:\nbefore: %s\nafter:  %s", before, after)
	}
}

func TestConsoleSetAgentAddress(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "web-1")
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	if _, page := c.post("/actions/agents", listeningForm("dmz-1", "DMZ", servertest.FreeAddr(t), listeningThumb)); !strings.Contains(page, `id="address-form"`) {
		t.Fatalf("add dmz-1: want its page with the address form, got:\n%s", page)
	}

	moved := servertest.FreeAddr(t)
	resp, page := c.post("/actions/agents/dmz-1/address", url.Values{"address": {" " + moved + " "}})
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/machines/dmz-1" {
		t.Fatalf("move: got %d at %s, want 200 on /machines/dmz-1", resp.StatusCode, resp.Request.URL.Path)
	}
	if !strings.Contains(page, `class="flash ok"`) || !strings.Contains(page, "dmz-1 moved: the coordinator dials "+moved) ||
		!strings.Contains(page, `id="agent-address">`+moved+`<`) {
		t.Fatalf("page after the move: want the flash and the new address %s, got:\n%s", moved, page)
	}
	if v := ts.agentView(t, "dmz-1"); v.Address != moved {
		t.Fatalf("moved: got address %s, want %s", v.Address, moved)
	}

	tests := []struct {
		name, path, address string
		back, want          string
	}{
		{"address without port", "/actions/agents/dmz-1/address", "127.0.0.1", "/machines/dmz-1", "missing port in address"},
		{"port 99999", "/actions/agents/dmz-1/address", "127.0.0.1:99999", "/machines/dmz-1", "port must be 1-65535"},
		{"no address", "/actions/agents/dmz-1/address", "", "/machines/dmz-1", `address ""`},
		{"polling agent", "/actions/agents/web-1/address", moved, "/machines/web-1", `agent "web-1": it is a polling agent`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := listeningState(t, ts)
			resp, page := c.post(tt.path, url.Values{"address": {tt.address}})
			if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != tt.back {
				t.Fatalf("got %d at %s, want 200 back on %s", resp.StatusCode, resp.Request.URL.Path, tt.back)
			}
			if !strings.Contains(page, `class="flash error"`) || !strings.Contains(page, "failed: ") || !strings.Contains(page, html.EscapeString(tt.want)) {
				t.Fatalf("page after a refused move: want an error flash with %q, got:\n%s", tt.want, page)
			}
			if after := listeningState(t, ts); after != before {
				t.Fatalf("refused, but the agents changed:\nbefore: %s\nafter:  %s", before, after)
			}
		})
	}
	// An unknown agent: back to its (missing) page, which says so.
	resp, _ = c.do(http.MethodPost, "/actions/agents/ghost/address", url.Values{"address": {moved}, "csrf": {c.csrf()}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/machines/ghost" {
		t.Fatalf("move of an unknown agent: got %d to %q, want 303 to /machines/ghost", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, page := c.get("/machines/ghost"); resp.StatusCode != http.StatusNotFound || !strings.Contains(page, html.EscapeString(`no agent named "ghost"`)) {
		t.Fatalf("page after moving an unknown agent: got %d, want 404 with the flash naming ghost:\n%s", resp.StatusCode, page)
	}
}
