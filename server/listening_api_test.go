package server

// Listening agents through the HTTP API: added by address and thumbprint
// (POST /api/agents), moved (PUT /api/agents/{name}/address), dialed by
// the coordinator, and every bad input refused with a message that says
// what to change, nothing added or moved.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/servertest"
)

// Thumbprints of listening agents in these tests: well formed, held by no
// certificate.
var (
	listeningThumb  = strings.Repeat("ab", 32)
	listeningThumb2 = strings.Repeat("cd", 32)
)

// listeningBody is the JSON of a request to add a listening agent.
func listeningBody(name, environment, address, thumbprint string) string {
	b, _ := json.Marshal(api.ListeningAgentRequest{Name: name, Environment: environment, Address: address, Thumbprint: thumbprint})
	return string(b)
}

// apiAgentView decodes an agent view answered with status want, failing
// the test on any other answer.
func apiAgentView(t *testing.T, resp *http.Response, body []byte, want int) api.AgentView {
	t.Helper()
	var v api.AgentView
	if resp.StatusCode != want {
		t.Fatalf("got %d %s, want %d", resp.StatusCode, body, want)
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("agent view: %v: %s", err, body)
	}
	return v
}

// TestAPIListeningAgentDialed: an agent added at an address where nothing
// listens is shown listening there, not connected, and, once the
// coordinator has tried, with the reason its dial failed.
func TestAPIListeningAgentDialed(t *testing.T) {
	ts := startServer(t, nil)
	check := newResponseChecker(t, ts)
	addr := servertest.FreeAddr(t)

	body := listeningBody("dmz-1", "DMZ", addr, strings.ToUpper(listeningThumb))
	resp, got := ts.api(t, "POST", "/api/agents", "", strings.NewReader(body))
	check.check(t, "POST", "/api/agents", resp, got)
	v := apiAgentView(t, resp, got, http.StatusCreated)
	if v.Name != "dmz-1" || v.Environment != "DMZ" || v.Mode != api.ModeListening || v.Address != addr ||
		v.Thumbprint != listeningThumb || v.Connected || v.ID == "" {
		t.Fatalf("added: got %+v, want dmz-1 in DMZ, listening at %s, thumbprint %s (normalized), not connected", v, addr, listeningThumb)
	}

	servertest.WaitFor(t, dialDeadline, "dmz-1's dial error", func() bool {
		resp, got := ts.api(t, "GET", "/api/agents/dmz-1", "", nil)
		check.check(t, "GET", "/api/agents/dmz-1", resp, got)
		v = apiAgentView(t, resp, got, http.StatusOK)
		return v.DialError != ""
	})
	if v.Mode != api.ModeListening || v.Address != addr || v.Connected || v.Health != api.HealthUnavailable {
		t.Fatalf("after a failed dial: got %+v, want listening at %s, not connected, unavailable", v, addr)
	}

	// The list shows both kinds of agent, each with its mode.
	enrolled(t, ts, "web-1")
	resp, got = ts.api(t, "GET", "/api/agents", "", nil)
	check.check(t, "GET", "/api/agents", resp, got)
	var agents []api.AgentView
	if err := json.Unmarshal(got, &agents); err != nil {
		t.Fatalf("agents: %v: %s", err, got)
	}
	modes := map[string]string{}
	for _, a := range agents {
		modes[a.Name] = a.Mode
	}
	if want := map[string]string{"dmz-1": api.ModeListening, "web-1": api.ModePolling}; fmt.Sprint(modes) != fmt.Sprint(want) {
		t.Fatalf("modes: got %v, want %v", modes, want)
	}

	// Without a name, the agent is named after the address's host.
	other := servertest.FreeAddr(t)
	resp, got = ts.api(t, "POST", "/api/agents", "", strings.NewReader(listeningBody("", "DMZ", other, listeningThumb2)))
	if v := apiAgentView(t, resp, got, http.StatusCreated); v.Name != "127.0.0.1" || v.Address != other {
		t.Fatalf("added without a name: got %+v, want it named 127.0.0.1, at %s", v, other)
	}
}

// dialDeadline bounds the wait for the coordinator's first dial, which it
// makes at once: only a failing test waits this long.
const dialDeadline = 30 * time.Second

// TestAPISetAgentAddress moves a listening agent; the coordinator dials
// the new address.
func TestAPISetAgentAddress(t *testing.T) {
	ts := startServer(t, nil)
	check := newResponseChecker(t, ts)
	if _, err := ts.AddListeningAgent(t.Context(), api.ListeningAgentRequest{Name: "dmz-1", Environment: "DMZ",
		Address: servertest.FreeAddr(t), Thumbprint: listeningThumb}); err != nil {
		t.Fatal(err)
	}
	moved := servertest.FreeAddr(t)
	resp, got := ts.api(t, "PUT", "/api/agents/dmz-1/address", "", strings.NewReader(`{"address": "`+moved+`"}`))
	check.check(t, "PUT", "/api/agents/dmz-1/address", resp, got)
	if v := apiAgentView(t, resp, got, http.StatusOK); v.Name != "dmz-1" || v.Mode != api.ModeListening || v.Address != moved {
		t.Fatalf("moved: got %+v, want dmz-1 listening at %s", v, moved)
	}
	servertest.WaitFor(t, dialDeadline, "a failed dial to the new address", func() bool {
		v := ts.agentView(t, "dmz-1")
		return v.Address == moved && v.DialError != ""
	})
}

// TestAPIListeningAgentBadInput: every request a person could get wrong
// is refused with its status and a message naming what to change, and
// neither adds nor moves an agent.
func TestAPIListeningAgentBadInput(t *testing.T) {
	ts := startServer(t, nil)
	check := newResponseChecker(t, ts)
	enrolled(t, ts, "web-1")
	addr := servertest.FreeAddr(t)
	if _, err := ts.AddListeningAgent(t.Context(), api.ListeningAgentRequest{Name: "dmz-1", Environment: "DMZ",
		Address: addr, Thumbprint: listeningThumb}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"address without port", "POST", "/api/agents", listeningBody("dmz-2", "DMZ", "127.0.0.1", listeningThumb2),
			400, `address "127.0.0.1": address 127.0.0.1: missing port in address`},
		{"address without host", "POST", "/api/agents", listeningBody("dmz-2", "DMZ", ":10933", listeningThumb2),
			400, `address ":10933": no host`},
		{"port 0", "POST", "/api/agents", listeningBody("dmz-2", "DMZ", "127.0.0.1:0", listeningThumb2),
			400, `address "127.0.0.1:0": port must be 1-65535`},
		{"port 99999", "POST", "/api/agents", listeningBody("dmz-2", "DMZ", "127.0.0.1:99999", listeningThumb2),
			400, `address "127.0.0.1:99999": port must be 1-65535`},
		{"no address", "POST", "/api/agents", listeningBody("dmz-2", "DMZ", "", listeningThumb2),
			400, `address "": missing port in address`},
		{"short thumbprint", "POST", "/api/agents", listeningBody("dmz-2", "DMZ", addr, "abcd"),
			400, `thumbprint "abcd": want 64 hex digits, got 4`},
		{"thumbprint not hex", "POST", "/api/agents", listeningBody("dmz-2", "DMZ", addr, strings.Repeat("zz", 32)),
			400, "not hex"},
		{"no thumbprint", "POST", "/api/agents", listeningBody("dmz-2", "DMZ", addr, ""),
			400, `thumbprint "": want 64 hex digits, got 0`},
		{"no environment", "POST", "/api/agents", listeningBody("dmz-2", "", addr, listeningThumb2),
			400, `field "environment": "" is not a name of 1-63 letters, digits`},
		{"bad environment", "POST", "/api/agents", listeningBody("dmz-2", "no/slash", addr, listeningThumb2),
			400, `field "environment": "no/slash" is not a name of 1-63 letters, digits`},
		{"bad name", "POST", "/api/agents", listeningBody("dmz 2", "DMZ", addr, listeningThumb2),
			400, `field "name": "dmz 2" is not a name of 1-63 letters, digits`},
		{"duplicate name", "POST", "/api/agents", listeningBody("dmz-1", "DMZ", addr, listeningThumb2),
			409, "agent name is already taken"},
		{"name of a polling agent", "POST", "/api/agents", listeningBody("web-1", "DMZ", addr, listeningThumb2),
			409, "agent name is already taken"},
		{"duplicate thumbprint", "POST", "/api/agents", listeningBody("dmz-2", "DMZ", addr, listeningThumb),
			409, "certificate is already registered"},
		{"set-address on a polling agent", "PUT", "/api/agents/web-1/address", `{"address": "` + addr + `"}`,
			400, `agent "web-1": it is a polling agent`},
		{"set-address on an unknown agent", "PUT", "/api/agents/ghost/address", `{"address": "` + addr + `"}`,
			404, `no agent named "ghost"`},
		{"set-address without port", "PUT", "/api/agents/dmz-1/address", `{"address": "127.0.0.1"}`,
			400, "missing port in address"},
		{"set-address to port 0", "PUT", "/api/agents/dmz-1/address", `{"address": "127.0.0.1:0"}`,
			400, "port must be 1-65535"},
		{"set-address to nothing", "PUT", "/api/agents/dmz-1/address", `{}`,
			400, `field "address" is required`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := listeningState(t, ts)
			resp, got := ts.api(t, tt.method, tt.path, "", strings.NewReader(tt.body))
			check.check(t, tt.method, tt.path, resp, got)
			var e api.APIError
			if err := json.Unmarshal(got, &e); err != nil || resp.StatusCode != tt.status || !strings.Contains(e.Error, tt.msg) {
				t.Fatalf("got %d %s, want %d with an error saying %q", resp.StatusCode, got, tt.status, tt.msg)
			}
			if after := listeningState(t, ts); after != before {
				t.Fatalf("refused, but the agents changed:\nbefore: %s\nafter:  %s", before, after)
			}
		})
	}
}

// listeningState is what a refused request must not change: each agent's
// name, environment, mode, address and thumbprint.
func listeningState(t *testing.T, ts *testServer) string {
	t.Helper()
	agents, err := ts.Agents(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, a := range agents {
		fmt.Fprintf(&b, "%s %s %s %s %s; ", a.Name, a.Environment, a.Mode, a.Address, a.Thumbprint)
	}
	return b.String()
}
