package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tendrildeploy/tendril/api"
)

// agentsAPI stands in for the coordinator's agent endpoints: it records
// what "agents add" and "agents set-address" send and answers as a
// coordinator would, or with the scripted refusal.
type agentsAPI struct {
	srv *httptest.Server

	mu       sync.Mutex
	requests []string // "METHOD /path body", in order
	// refuse, if not 0, answers every request with this status and
	// refuseMsg.
	refuse    int
	refuseMsg string
}

func newAgentsAPI(t *testing.T) *agentsAPI {
	t.Helper()
	f := &agentsAPI{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/agents", func(w http.ResponseWriter, r *http.Request) {
		var req api.ListeningAgentRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeTestJSON(w, http.StatusBadRequest, api.APIError{Error: err.Error()})
			return
		}
		name := req.Name
		if name == "" {
			name, _, _ = net.SplitHostPort(req.Address)
		}
		writeTestJSON(w, http.StatusCreated, api.AgentView{Name: name, Environment: req.Environment, Mode: api.ModeListening,
			Address: req.Address, Thumbprint: req.Thumbprint, Health: api.HealthUnavailable})
	})
	mux.HandleFunc("PUT /api/agents/{name}/address", func(w http.ResponseWriter, r *http.Request) {
		var req api.AgentAddressRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeTestJSON(w, http.StatusBadRequest, api.APIError{Error: err.Error()})
			return
		}
		writeTestJSON(w, http.StatusOK, api.AgentView{Name: r.PathValue("name"), Mode: api.ModeListening, Address: req.Address})
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.EscapedPath()+" "+strings.TrimSpace(string(b)))
		status, msg := f.refuse, f.refuseMsg
		f.mu.Unlock()
		if status != 0 {
			writeTestJSON(w, status, api.APIError{Error: msg})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *agentsAPI) vars() map[string]string {
	return map[string]string{envURL: f.srv.URL, envAPIKey: "k"}
}

func (f *agentsAPI) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// thumb is a well-formed agent thumbprint for the tests.
var thumb = strings.Repeat("ab", 32)

// TestAgentsAddRefusesBadFlags: a command line the coordinator would
// refuse is refused first, as a usage error naming the flag to fix, and
// nothing is sent.
func TestAgentsAddRefusesBadFlags(t *testing.T) {
	f := newAgentsAPI(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"nothing", nil, "--listening HOST:PORT, --thumbprint HEX and --environment ENV are required"},
		{"no address", []string{"--thumbprint", thumb, "--environment", "Prod"}, "--listening HOST:PORT is required"},
		{"no thumbprint", []string{"--listening", "10.0.0.5:10933", "--environment", "Prod"}, "--thumbprint HEX is required"},
		{"no environment", []string{"--listening", "10.0.0.5:10933", "--thumbprint", thumb}, "--environment ENV is required"},
		{"address without port", []string{"--listening", "10.0.0.5", "--thumbprint", thumb, "--environment", "Prod"},
			`--listening: address "10.0.0.5": address 10.0.0.5: missing port in address`},
		{"port 0", []string{"--listening", "10.0.0.5:0", "--thumbprint", thumb, "--environment", "Prod"},
			`--listening: address "10.0.0.5:0": port must be 1-65535`},
		{"port 99999", []string{"--listening", "10.0.0.5:99999", "--thumbprint", thumb, "--environment", "Prod"},
			`--listening: address "10.0.0.5:99999": port must be 1-65535`},
		{"short thumbprint", []string{"--listening", "10.0.0.5:10933", "--thumbprint", "abcd", "--environment", "Prod"},
			`--thumbprint: thumbprint "abcd": want 64 hex digits, got 4`},
		{"thumbprint not hex", []string{"--listening", "10.0.0.5:10933", "--thumbprint", strings.Repeat("zz", 32), "--environment", "Prod"},
			"--thumbprint: thumbprint \"" + strings.Repeat("zz", 32) + "\": not hex"},
		{"bad environment", []string{"--listening", "10.0.0.5:10933", "--thumbprint", thumb, "--environment", "no/slash"},
			`--environment: environment name "no/slash": use 1-63 letters`},
		{"bad name", []string{"--listening", "10.0.0.5:10933", "--thumbprint", thumb, "--environment", "Prod", "--name", "web 1"},
			`--name: agent name "web 1": use 1-63 letters`},
		{"an argument", []string{"web-1", "--listening", "10.0.0.5:10933", "--thumbprint", thumb, "--environment", "Prod"},
			`unexpected argument "web-1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, context.Background(), f.vars(), append([]string{"agents", "add"}, tt.args...)...)
			if code != 2 || stdout != "" || !strings.HasPrefix(stderr, "tendril-server: ") || !strings.Contains(stderr, tt.want) ||
				!strings.Contains(stderr, `(see "tendril-server agents add --help")`) {
				t.Fatalf("got %d, stdout %q, stderr %q; want 2 and one line saying %q", code, stdout, stderr, tt.want)
			}
		})
	}
	if got := f.sent(); len(got) != 0 {
		t.Fatalf("requests: got %q, want none for refused command lines", got)
	}
}

func TestAgentsAdd(t *testing.T) {
	f := newAgentsAPI(t)
	code, stdout, stderr := cli(t, context.Background(), f.vars(), "agents", "add",
		"--listening", "dmz-1.example:10933", "--thumbprint", thumb, "--environment", "Prod")
	want := "Added listening agent dmz-1.example in Prod: the coordinator dials dmz-1.example:10933 and accepts only the certificate " + thumb + ".\n" +
		"See whether it connected with \"tendril-server agents list\".\n"
	if code != 0 || stdout != want {
		t.Fatalf("agents add: got %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
	}
	code, stdout, stderr = cli(t, context.Background(), f.vars(), "agents", "add", "--name", "dmz-2",
		"--listening", "[2001:db8::7]:10933", "--thumbprint", thumb, "--environment", "Prod", "--json")
	var v api.AgentView
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil || v.Name != "dmz-2" || v.Mode != api.ModeListening || v.Address != "[2001:db8::7]:10933" {
		t.Fatalf("agents add --json: got %d, stdout %q, stderr %q (%v); want the agent as JSON", code, stdout, stderr, err)
	}
	wantSent := []string{
		`POST /api/agents {"environment":"Prod","address":"dmz-1.example:10933","thumbprint":"` + thumb + `"}`,
		`POST /api/agents {"name":"dmz-2","environment":"Prod","address":"[2001:db8::7]:10933","thumbprint":"` + thumb + `"}`,
	}
	if got := f.sent(); !slices.Equal(got, wantSent) {
		t.Fatalf("requests:\ngot  %q\nwant %q", got, wantSent)
	}

	// The coordinator's refusal is the one line the command prints.
	f.mu.Lock()
	f.refuse, f.refuseMsg = http.StatusConflict, `add listening agent "dmz-1": agent name is already taken`
	f.mu.Unlock()
	code, stdout, stderr = cli(t, context.Background(), f.vars(), "agents", "add", "--name", "dmz-1",
		"--listening", "10.0.0.5:10933", "--thumbprint", thumb, "--environment", "Prod")
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, `tendril-server: add listening agent "dmz-1": `) ||
		!strings.HasSuffix(stderr, "agent name is already taken (HTTP 409)\n") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("name taken: got %d, stdout %q, stderr %q; want 1 and one line with the coordinator's reason", code, stdout, stderr)
	}
}

func TestAgentsSetAddress(t *testing.T) {
	f := newAgentsAPI(t)
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"moved", []string{"dmz-1", "10.0.0.6:10933"}, 0, "Agent dmz-1 moved: the coordinator dials 10.0.0.6:10933 from now on.\n", ""},
		{"a name to escape", []string{"a b", "10.0.0.6:10933"}, 0, "Agent a b moved", ""},
		{"json", []string{"dmz-1", "10.0.0.7:10933", "--json"}, 0, `"address": "10.0.0.7:10933"`, ""},
		{"no address", []string{"dmz-1"}, 2, "", "want an agent name and its new HOST:PORT, got 1 arguments"},
		{"too many", []string{"dmz-1", "10.0.0.6:10933", "extra"}, 2, "", "want an agent name and its new HOST:PORT, got 3 arguments"},
		{"address without port", []string{"dmz-1", "10.0.0.6"}, 2, "", `missing port in address`},
		{"port 0", []string{"dmz-1", "10.0.0.6:0"}, 2, "", `address "10.0.0.6:0": port must be 1-65535`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, context.Background(), f.vars(), append([]string{"agents", "set-address"}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(stdout, tt.wantStdout) || !strings.Contains(stderr, tt.wantStderr) {
				t.Fatalf("got %d, stdout %q, stderr %q; want %d with %q and %q", code, stdout, stderr, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
		})
	}
	wantSent := []string{
		`PUT /api/agents/dmz-1/address {"address":"10.0.0.6:10933"}`,
		`PUT /api/agents/a%20b/address {"address":"10.0.0.6:10933"}`,
		`PUT /api/agents/dmz-1/address {"address":"10.0.0.7:10933"}`,
	}
	if got := f.sent(); !slices.Equal(got, wantSent) {
		t.Fatalf("requests:\ngot  %q\nwant %q", got, wantSent)
	}
}

// freeAddr returns a loopback address where nothing listens: a port
// that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestListeningAgentCommandsEndToEnd adds a listening agent at an
// address where nothing listens, through a real coordinator: the list
// shows it listening and, once the coordinator has tried, why it could
// not connect; set-address moves it, and the refusals reach the user.
func TestListeningAgentCommandsEndToEnd(t *testing.T) {
	dir, _ := startCoordinatorCmd(t)
	bg := context.Background()
	addr := freeAddr(t)
	code, stdout, stderr := cli(t, bg, nil, "agents", "add", "--data", dir, "--name", "dmz-1",
		"--listening", addr, "--thumbprint", strings.ToUpper(thumb), "--environment", "DMZ", "--json")
	var v api.AgentView
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil {
		t.Fatalf("agents add: got %d, stdout %q, stderr %q (%v); want the agent as JSON", code, stdout, stderr, err)
	}
	if v.Name != "dmz-1" || v.Environment != "DMZ" || v.Mode != api.ModeListening || v.Address != addr || v.Thumbprint != thumb || v.Connected {
		t.Fatalf("agents add: got %+v, want dmz-1 in DMZ, listening at %s, thumbprint %s (normalized), not connected", v, addr, thumb)
	}

	// The coordinator dials, fails, and says why.
	var listed []api.AgentView
	waitFor(t, "dmz-1's dial error in agents list --json", func() bool {
		code, stdout, stderr := cli(t, bg, nil, "agents", "list", "--data", dir, "--json")
		if code != 0 {
			t.Fatalf("agents list --json: got %d %q", code, stderr)
		}
		listed = nil
		if err := json.Unmarshal([]byte(stdout), &listed); err != nil || len(listed) != 1 {
			t.Fatalf("agents list --json: got %q (%v), want one agent", stdout, err)
		}
		return listed[0].DialError != ""
	})
	if a := listed[0]; a.Mode != api.ModeListening || a.Address != addr || a.Connected {
		t.Fatalf("agents list --json: got %+v, want dmz-1 listening at %s, not connected", a, addr)
	}
	code, stdout, stderr = cli(t, bg, nil, "agents", "list", "--data", dir)
	lines := strings.Split(stdout, "\n")
	if code != 0 || len(lines) < 4 || !strings.Contains(lines[0], "  MODE  ") || !strings.Contains(lines[1], "  listening  ") ||
		!strings.Contains(stdout, "dmz-1 (listening at "+addr+"): the coordinator cannot connect: ") {
		t.Fatalf("agents list: got %d, stdout %q, stderr %q; want a MODE column saying listening and the dial error below", code, stdout, stderr)
	}

	moved := freeAddr(t)
	code, stdout, stderr = cli(t, bg, nil, "agents", "set-address", "dmz-1", moved, "--data", dir)
	if code != 0 || stdout != "Agent dmz-1 moved: the coordinator dials "+moved+" from now on.\n" {
		t.Fatalf("agents set-address: got %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"name taken", []string{"agents", "add", "--name", "dmz-1", "--listening", addr, "--thumbprint", strings.Repeat("cd", 32), "--environment", "DMZ"},
			"(HTTP 409)"},
		{"thumbprint taken", []string{"agents", "add", "--name", "dmz-2", "--listening", addr, "--thumbprint", thumb, "--environment", "DMZ"},
			"(HTTP 409)"},
		{"unknown agent", []string{"agents", "set-address", "ghost", addr}, `set address of agent "ghost": no agent named "ghost" (HTTP 404)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, bg, nil, append(tt.args, "--data", dir)...)
			if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "tendril-server: ") || !strings.Contains(stderr, tt.want) {
				t.Fatalf("got %d, stdout %q, stderr %q; want 1 and one line with %q", code, stdout, stderr, tt.want)
			}
		})
	}
	code, stdout, _ = cli(t, bg, nil, "agents", "list", "--data", dir, "--json")
	if err := json.Unmarshal([]byte(stdout), &listed); code != 0 || err != nil || len(listed) != 1 || listed[0].Address != moved {
		t.Fatalf("agents after the refusals: got %d %q, want dmz-1 alone, at %s", code, stdout, moved)
	}
}
