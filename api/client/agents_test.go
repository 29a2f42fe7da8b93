package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tendrildeploy/tendril/internal/servertest"

	"github.com/tendrildeploy/tendril/api"
)

func TestListeningAgents(t *testing.T) {
	co := startCoordinator(t)
	c := newClient(t, co.url, co.init.AdminKey)
	ctx := testContext(t)
	thumb := strings.Repeat("ab", 32)

	addr := servertest.FreeAddr(t)
	v, err := c.AddListeningAgent(ctx, api.ListeningAgentRequest{Name: "dmz-1", Environment: "DMZ", Address: addr, Thumbprint: thumb})
	if err != nil {
		t.Fatal(err)
	}
	if v.Name != "dmz-1" || v.Environment != "DMZ" || v.Mode != api.ModeListening || v.Address != addr || v.Thumbprint != thumb || v.Connected {
		t.Fatalf("added: got %+v, want dmz-1 in DMZ listening at %s, not connected", v, addr)
	}
	// Nothing listens there: the coordinator says why it cannot connect.
	waitForAgent(t, c, "dmz-1", func(a api.AgentView) bool { return a.DialError != "" })

	moved := servertest.FreeAddr(t)
	if v, err = c.SetAgentAddress(ctx, "dmz-1", moved); err != nil || v.Address != moved || v.Mode != api.ModeListening {
		t.Fatalf("moved: got %+v, %v; want dmz-1 listening at %s", v, err, moved)
	}

	for _, tc := range []struct {
		name   string
		call   func() (api.AgentView, error)
		status int
		want   string
	}{
		{"address without port", func() (api.AgentView, error) {
			return c.AddListeningAgent(ctx, api.ListeningAgentRequest{Name: "dmz-2", Environment: "DMZ", Address: "127.0.0.1", Thumbprint: thumb})
		}, http.StatusBadRequest, `add listening agent "dmz-2": `},
		{"port 0, no name", func() (api.AgentView, error) {
			return c.AddListeningAgent(ctx, api.ListeningAgentRequest{Environment: "DMZ", Address: "127.0.0.1:0", Thumbprint: thumb})
		}, http.StatusBadRequest, `add listening agent at "127.0.0.1:0": `},
		{"bad thumbprint", func() (api.AgentView, error) {
			return c.AddListeningAgent(ctx, api.ListeningAgentRequest{Name: "dmz-2", Environment: "DMZ", Address: addr, Thumbprint: "abcd"})
		}, http.StatusBadRequest, "want 64 hex digits"},
		{"name taken", func() (api.AgentView, error) {
			return c.AddListeningAgent(ctx, api.ListeningAgentRequest{Name: "dmz-1", Environment: "DMZ", Address: addr, Thumbprint: strings.Repeat("cd", 32)})
		}, http.StatusConflict, "agent name is already taken"},
		{"move of an unknown agent", func() (api.AgentView, error) { return c.SetAgentAddress(ctx, "ghost", moved) },
			http.StatusNotFound, `set address of agent "ghost": no agent named "ghost"`},
		{"move to a bad address", func() (api.AgentView, error) { return c.SetAgentAddress(ctx, "dmz-1", "127.0.0.1:99999") },
			http.StatusBadRequest, "port must be 1-65535"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.call(); !IsStatus(err, tc.status) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want HTTP %d with %q", err, tc.status, tc.want)
			}
		})
	}
	if _, err := c.SetAgentAddress(ctx, "", moved); err == nil || !strings.Contains(err.Error(), "no agent name given") {
		t.Fatalf("move without a name: got %v, want it refused before any request", err)
	}
}

// TestListeningAgentRequests: the requests on the wire, names escaped in
// the path.
func TestListeningAgentRequests(t *testing.T) {
	var (
		mu  sync.Mutex
		got []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.EscapedPath()+" "+strings.TrimSpace(string(b)))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(api.AgentView{Name: "x"})
	}))
	defer srv.Close()
	c := newClient(t, srv.URL, "k")
	ctx := context.Background()
	if _, err := c.AddListeningAgent(ctx, api.ListeningAgentRequest{Environment: "DMZ", Address: "h:1", Thumbprint: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetAgentAddress(ctx, "a b/c", "h:2"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`POST /api/agents {"environment":"DMZ","address":"h:1","thumbprint":"t"}`,
		`PUT /api/agents/a%20b%2Fc/address {"address":"h:2"}`,
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Fatalf("requests:\ngot  %q\nwant %q", got, want)
	}
}
