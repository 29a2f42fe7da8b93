package server

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/diagnostics"
)

// diagnosticsOf asks the API for an agent's diagnostics and reads the
// archive, which must come as a gzip download.
func diagnosticsOf(t *testing.T, ts *testServer, name string) diag.Archive {
	t.Helper()
	resp, body := ts.api(t, "POST", "/api/agents/"+name+"/diagnostics", "", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/gzip" ||
		!strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment; filename=tendril-diagnostics-"+name+"-") {
		t.Fatalf("POST /api/agents/%s/diagnostics: got %d %q %q %.200q, want 200 and a gzip attachment", name, resp.StatusCode,
			resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"), body)
	}
	a, err := diag.Read(bytes.NewReader(body), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if a.Manifest.Kind != diag.KindAgentFromCoordinator || a.Manifest.Subject != name || a.Manifest.Tool.Name != "tendril-server" {
		t.Fatalf("manifest: got kind %q subject %q tool %+v, want the coordinator's archive of %s", a.Manifest.Kind, a.Manifest.Subject, a.Manifest.Tool, name)
	}
	return a
}

// coordinatorSide is what every archive of an agent from the coordinator
// holds, whatever the agent could send.
var coordinatorSide = []string{diag.ManifestName, "coordinator/versions.json", "coordinator/agent.json", "coordinator/health.json",
	"coordinator/tasks.json", "coordinator/upgrades.json"}

func hasAll(t *testing.T, files map[string][]byte, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, ok := files[n]; !ok {
			var got []string
			for k := range files {
				got = append(got, k)
			}
			slices.Sort(got)
			t.Errorf("no %s; got %q", n, got)
		}
	}
}

func hasNote(t *testing.T, a diag.Archive, want string) {
	t.Helper()
	if !slices.ContainsFunc(a.Manifest.Notes, func(n string) bool { return strings.Contains(n, want) }) {
		t.Errorf("notes: got %q, want one saying %q", a.Manifest.Notes, want)
	}
}

// pemLines returns the body lines of the PEM file at path: any of them
// in an archive is a piece of a key.
func pemLines(t *testing.T, path string) map[string][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s is not PEM", path)
	}
	out := map[string][]byte{filepath.Base(path) + "'s bytes": block.Bytes}
	for i, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasPrefix(l, "-----") {
			out[fmt.Sprintf("line %d of %s", i, filepath.Base(path))] = []byte(l)
		}
	}
	return out
}

// TestAgentDiagnosticsThroughAPI: a connected agent's archive holds the
// coordinator's side and the agent's own, with its goroutines and status,
// and no secret of either side, in any file, decompressed.
func TestAgentDiagnosticsThroughAPI(t *testing.T) {
	ts := startServer(t, nil)
	token := ts.token(t, "Test")
	home := registerAgent(t, ts, ts.AgentAddr(), "web-1", func(rc *agent.RegisterConfig) { rc.Token = token })
	// A proxy with credentials in the registration, which this run
	// overrides: the agent still keeps it in agent.json.
	const proxyPassword = "pr0xy-pa55word"
	path := filepath.Join(home, "agent.json")
	var st map[string]any
	b, _ := os.ReadFile(path)
	json.Unmarshal(b, &st)
	st["proxy"] = "http://deploy:" + proxyPassword + "@proxy.example:3128"
	b, _ = json.Marshal(st)
	os.WriteFile(path, b, 0o600)
	startAgent(t, home, func(c *agent.Config) { c.Proxy = "none" })
	ts.waitConnected(t, "web-1")
	ts.checkAllHealth()

	a := diagnosticsOf(t, ts, "web-1")
	hasAll(t, a.Files, append(slices.Clone(coordinatorSide), diagnostics.AgentArchiveName)...)
	if len(a.Manifest.Notes) != 0 || len(a.Manifest.Missing) != 0 {
		t.Errorf("a connected agent: got notes %q, missing %+v; want none", a.Manifest.Notes, a.Manifest.Missing)
	}
	var view api.AgentView
	json.Unmarshal(a.Files["coordinator/agent.json"], &view)
	if view.Name != "web-1" || !view.Connected || view.Version != "1.2.3" {
		t.Errorf("coordinator/agent.json: got %s, want web-1 connected at 1.2.3", a.Files["coordinator/agent.json"])
	}
	var health struct {
		Recent []map[string]any `json:"recent"`
	}
	json.Unmarshal(a.Files["coordinator/health.json"], &health)
	if len(health.Recent) == 0 {
		t.Errorf("coordinator/health.json: got %s, want the health checks made", a.Files["coordinator/health.json"])
	}

	files, err := a.Flatten(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	const own = diagnostics.AgentArchiveName + "/"
	hasAll(t, files, own+"versions.json", own+"config/agent.json", own+"certificates.json", own+diag.GoroutinesName,
		own+"status.json", own+"calamari.json", own+"disk.json", own+"tasks.json")
	if !bytes.Contains(files[own+"config/agent.json"], []byte("http://xxxxx@proxy.example:3128")) {
		t.Errorf("the agent's agent.json: got %s, want its proxy without credentials", files[own+"config/agent.json"])
	}

	forbidden := map[string][]byte{
		"a PEM private key block": []byte("PRIVATE KEY"),
		"the enrollment token":    []byte(token),
		"the proxy password":      []byte(proxyPassword),
		"the admin API key":       []byte(adminKey(t, ts)),
	}
	for _, p := range []string{filepath.Join(home, "certs", "agent.key"), filepath.Join(ts.dir, datadir.KeyFile), filepath.Join(ts.dir, datadir.SigningFile)} {
		for what, b := range pemLines(t, p) {
			forbidden[what] = b
		}
	}
	for name, content := range files {
		for what, secret := range forbidden {
			if bytes.Contains(content, secret) {
				t.Errorf("%s holds %s", name, what)
			}
		}
	}
}

// TestAgentDiagnosticsOfOfflineAgent: an agent that is not connected
// still gets an archive, of the coordinator's side, saying so.
func TestAgentDiagnosticsOfOfflineAgent(t *testing.T) {
	ts := startServer(t, nil)
	p, err := dialPeer(t, ts, newIdentity(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.register(ts.token(t, "Away"), "away-1", false); err != nil {
		t.Fatal(err)
	}
	p.sess.Close()

	a := diagnosticsOf(t, ts, "away-1")
	hasAll(t, a.Files, coordinatorSide...)
	if _, ok := a.Files[diagnostics.AgentArchiveName]; ok {
		t.Error("an agent archive from an agent that is not connected")
	}
	hasNote(t, a, "agent away-1 is not connected")
	if !slices.ContainsFunc(a.Manifest.Missing, func(m diag.Missing) bool { return m.Name == diagnostics.AgentArchiveName }) {
		t.Errorf("missing: got %+v, want %s with why", a.Manifest.Missing, diagnostics.AgentArchiveName)
	}

	resp, body := ts.api(t, "POST", "/api/agents/nobody/diagnostics", "", nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `no agent named \"nobody\"`) {
		t.Fatalf("unknown agent: got %d %s, want 404 naming it", resp.StatusCode, body)
	}

	// The machine page's button downloads the same archive.
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	if _, page := c.get("/machines/away-1"); !strings.Contains(page, `action="/actions/agents/away-1/diagnostics"`) || !strings.Contains(page, "Collect diagnostics") {
		t.Fatal("the machine page has no Collect diagnostics button")
	}
	resp, archive := c.do(http.MethodPost, "/actions/agents/away-1/diagnostics", url.Values{"csrf": {c.csrf()}}, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/gzip" || !strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("console: got %d %q %q, want the archive as a download", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"))
	}
	if a, err := diag.Read(strings.NewReader(archive), 1<<30); err != nil || a.Manifest.Subject != "away-1" {
		t.Fatalf("console download: got %v, %v; want the archive of away-1", a.Manifest.Subject, err)
	}
	if _, page := c.post("/actions/agents/nobody/diagnostics", url.Values{}); !strings.Contains(page, "no agent named &#34;nobody&#34;") {
		t.Fatalf("console, unknown agent: got a page without the reason:\n%.2000s", page)
	}
}

// TestAgentDiagnosticsOfOldAgent: an agent older than diagnostics
// answers the request as every agent answers a type it does not know;
// the archive of the coordinator's side says to upgrade it.
func TestAgentDiagnosticsOfOldAgent(t *testing.T) {
	ts := startServer(t, nil)
	p := enrolledPeer(t, ts, "old-1", false)
	go func() {
		for {
			st, err := p.sess.AcceptStream()
			if err != nil {
				return
			}
			f, err := protocol.ReadFrame(st, 0)
			switch {
			case err != nil:
			case f.Type == protocol.TypeHealthRequest:
				protocol.WriteFrame(st, protocol.TypeHealth, protocol.Health{Version: "1.0.0", DiskFree: 10 << 30})
			default:
				protocol.WriteError(st, protocol.CodeUnknownType, fmt.Sprintf("unknown message type %q", f.Type))
			}
			st.Close()
		}
	}()
	ts.waitConnected(t, "old-1")

	a := diagnosticsOf(t, ts, "old-1")
	hasAll(t, a.Files, coordinatorSide...)
	hasNote(t, a, "agent version 1.0.0 cannot collect diagnostics; upgrade it")
	if _, ok := a.Files[diagnostics.AgentArchiveName]; ok {
		t.Error("an agent archive from an agent that cannot make one")
	}
}

// TestGoroutinesNeedAnAdminKey: the coordinator's goroutine dump is for
// its operators.
func TestGoroutinesNeedAnAdminKey(t *testing.T) {
	ts := startServer(t, nil)
	resp, body := ts.api(t, "GET", "/api/server/goroutines", "", nil)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || !strings.Contains(string(body), "goroutine ") {
		t.Fatalf("admin key: got %d %q %.100q, want 200 and the dump", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	k, err := ts.access.CreateAPIKey(t.Context(), "ci", api.RoleOperator, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := ts.api(t, "GET", "/api/server/goroutines", k.Key, nil); resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "GET /api/server/goroutines needs the role admin") {
		t.Fatalf("other key: got %d %s, want 403", resp.StatusCode, body)
	}
}
