package server

import (
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/httpapi"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

func TestInitRefusesInitializedFolder(t *testing.T) {
	dir := t.TempDir()
	res, err := datadir.Init(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, datadir.KeyFile))
	if _, err := datadir.Init(context.Background(), dir); !errors.Is(err, datadir.ErrAlreadyInitialized) {
		t.Fatalf("second init: got %v, want ErrAlreadyInitialized", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, datadir.KeyFile))
	if string(before) != string(after) {
		t.Fatal("second init changed the coordinator key")
	}
	got, err := datadir.ReadThumbprint(dir)
	if err != nil || got != res.Thumbprint {
		t.Fatalf("ReadThumbprint: got %s, %v; want %s", got, err, res.Thumbprint)
	}
	for _, f := range []string{datadir.KeyFile, datadir.SigningFile, datadir.MasterFile, api.AdminKeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: got %v, %v; want mode 0600", f, st.Mode().Perm(), err)
		}
	}
	if _, err := datadir.ReadThumbprint(t.TempDir()); !errors.Is(err, api.ErrNotInitialized) {
		t.Errorf("empty folder: got %v, want ErrNotInitialized", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	if _, err := datadir.Init(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no data folder", Config{}, "no data folder"},
		{"uninitialized folder", Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0"}, "tendril-server init"},
		{"plain HTTP beyond loopback", Config{DataDir: dir, Listen: "127.0.0.1:0", HTTP: "0.0.0.0:0"}, "without TLS"},
		{"bad listen address", Config{DataDir: dir, Listen: "127.0.0.1:99999", HTTP: "127.0.0.1:0"}, "listen for agents"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(context.Background(), tt.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("got a server, want an error saying %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %q, want it to say %q", err, tt.want)
			}
		})
	}
}

func TestLegacyTLSPeer(t *testing.T) {
	old := protocol.ClientTLS{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}

	t.Run("refused by default", func(t *testing.T) {
		ts := startServer(t, nil)
		old := old
		old.Identity, old.Pins = newIdentity(t), certs.NewPins(ts.Thumbprint())
		if _, err := dialPeerWith(t, ts, old); err == nil {
			t.Fatal("TLS 1.0 peer completed the handshake, want it refused")
		}
	})
	t.Run("served with --tls-min 1.0, shown as a warning", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.TLSMin = tls.VersionTLS10 })
		old := old
		old.Identity, old.Pins = newIdentity(t), certs.NewPins(ts.Thumbprint())
		p, err := dialPeerWith(t, ts, old)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.register(ts.token(t, "Legacy"), "old-box", false); err != nil {
			t.Fatal(err)
		}
		p, err = dialPeerWith(t, ts, old)
		if err != nil {
			t.Fatal(err)
		}
		p.serveHealth()
		if _, err := p.hello(); err != nil {
			t.Fatal(err)
		}
		ts.checkAllHealth()
		v := ts.agentView(t, "old-box")
		if v.TLSVersion != "1.0" || v.Health != api.HealthWarning || !strings.Contains(v.HealthDetail, "TLS 1.0") {
			t.Fatalf("got tls %q health %q (%s), want 1.0 and a warning that names TLS 1.0", v.TLSVersion, v.Health, v.HealthDetail)
		}
	})
}

func TestUpgradeOnlySession(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.ProtocolMin, c.ProtocolMax = 2, 2 })
	p := enrolled(t, ts, "old-agent") // speaks protocol 1 only
	_ = p
	ts.checkAllHealth()
	v := ts.agentView(t, "old-agent")
	if !v.Connected || v.Upgrade != api.UpgradeRequired || v.Health != api.HealthWarning {
		t.Fatalf("got connected=%v upgrade=%s health=%s, want connected, required, warning", v.Connected, v.Upgrade, v.Health)
	}
}

func TestDiskWarning(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.DiskWarning = 100 << 30 }) // the test peer reports 10 GiB
	enrolled(t, ts, "full-disk")
	ts.checkAllHealth()
	v := ts.agentView(t, "full-disk")
	if v.Health != api.HealthWarning || !strings.Contains(v.HealthDetail, "disk") || v.DiskFree != 10<<30 {
		t.Fatalf("got %s (%s) disk %d, want a disk warning with 10 GiB free", v.Health, v.HealthDetail, v.DiskFree)
	}
}

func TestUnresponsiveAgentIsUnhealthy(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HealthTimeout = 200 * time.Millisecond })
	id := newIdentity(t)
	p, _ := dialPeer(t, ts, id)
	if _, err := p.register(ts.token(t, "Test"), "stuck", false); err != nil {
		t.Fatal(err)
	}
	p, _ = dialPeer(t, ts, id)
	if _, err := p.hello(); err != nil { // and never answers health requests
		t.Fatal(err)
	}
	ts.checkAllHealth()
	v := ts.agentView(t, "stuck")
	if v.Health != api.HealthUnhealthy || !v.Connected {
		t.Fatalf("got %s connected=%v, want unhealthy and connected", v.Health, v.Connected)
	}
	p.sess.Close()
	eventually(t, "stuck disconnected", func() bool { return !ts.agentView(t, "stuck").Connected })
	if v := ts.agentView(t, "stuck"); v.Health != api.HealthUnavailable {
		t.Fatalf("after disconnect: got %s, want unavailable", v.Health)
	}
}

// api calls the HTTP API with the admin key unless key says otherwise. A
// body goes as JSON, or as bytes to an upload (see apiUpload).
func (ts *testServer) api(t *testing.T, method, path, key string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	ct := ""
	if body != nil {
		ct = "application/json"
		if isUpload(method, path) {
			ct = "application/octet-stream"
		}
	}
	return ts.apiAs(t, method, path, key, ct, body)
}

// isUpload reports whether the route of method and path takes a file's
// bytes rather than JSON.
func isUpload(method, path string) bool {
	p, _, _ := strings.Cut(path, "?")
	for _, rt := range httpapi.Routes() {
		if rt.RawBody != nil && rt.Method == method && rt.Path == p {
			return true
		}
	}
	return false
}

// apiAs is api with the body sent as Content-Type ct ("" sends none).
func (ts *testServer) apiAs(t *testing.T, method, path, key, ct string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+ts.HTTPAddr()+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if key == "" {
		b, _ := os.ReadFile(filepath.Join(ts.dir, api.AdminKeyFile))
		key = strings.TrimSpace(string(b))
	}
	if key != "-" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestAPIAgentsFields(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "web-1")
	ts.checkAllHealth()
	resp, body := ts.api(t, "GET", "/api/agents", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var agents []map[string]any
	if err := json.Unmarshal(body, &agents); err != nil || len(agents) != 1 {
		t.Fatalf("got %s (%v), want one agent", body, err)
	}
	a := agents[0]
	want := map[string]any{
		"name": "web-1", "environment": "Test", "version": "1.0.0", "connected": true,
		"health": "healthy", "tls_version": "1.3", "calamari_version": "", "calamari_current": true, "upgrade": "none",
	}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("%s: got %v, want %v", k, a[k], v)
		}
	}
	// The test peer names no features in its Hello: an older agent.
	if lacks, _ := a["lacks"].([]any); len(lacks) != 6 || lacks[1] != "task variables, output variables and artifacts" {
		t.Errorf("lacks: got %v, want the six features an agent of the previous release lacks", a["lacks"])
	}
	for _, k := range []string{"id", "thumbprint", "last_seen"} {
		if s, _ := a[k].(string); s == "" {
			t.Errorf("%s: got empty, want a value", k)
		}
	}
	if _, err := time.Parse(time.RFC3339, a["last_seen"].(string)); err != nil {
		t.Errorf("last_seen: %v", err)
	}
}

func TestAPIAuthAndErrors(t *testing.T) {
	ts := startServer(t, nil)
	tests := []struct {
		name, method, path, key, body string
		want                          int
		wantMsg                       string
	}{
		{"no key", "GET", "/api/agents", "-", "", 401, "API key is required"},
		{"wrong key", "GET", "/api/agents", "tdk_wrong", "", 401, "not valid"},
		{"unknown agent", "GET", "/api/agents/nobody", "", "", 404, "no agent named"},
		{"delete unknown agent", "DELETE", "/api/agents/nobody", "", "", 404, "no agent named"},
		{"unknown endpoint", "GET", "/api/nothing", "", "", 404, "no API endpoint"},
		{"token without environment", "POST", "/api/tokens", "", `{}`, 400, `field "environment" is required`},
		{"token with bad ttl", "POST", "/api/tokens", "", `{"environment":"Prod","ttl":"forever"}`, 400, "not a duration"},
		{"token with huge ttl", "POST", "/api/tokens", "", `{"environment":"Prod","ttl":"100000h"}`, 400, "at most"},
		{"token with unknown field", "POST", "/api/tokens", "", `{"environment":"Prod","colour":"red"}`, 400, `unknown field "colour"`},
		{"token with garbage", "POST", "/api/tokens", "", `{{{`, 400, "not valid JSON"},
		{"token with bad server", "POST", "/api/tokens", "", `{"environment":"Prod","servers":["nope"]}`, 400, "nope"},
		{"oversize body", "POST", "/api/tokens", "", `{"environment":"` + strings.Repeat("a", 100<<10) + `"}`, 413, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := ts.api(t, tt.method, tt.path, tt.key, strings.NewReader(tt.body))
			var e api.APIError
			json.Unmarshal(body, &e)
			if resp.StatusCode != tt.want || !strings.Contains(e.Error, tt.wantMsg) {
				t.Fatalf("got %d %q, want %d with %q", resp.StatusCode, e.Error, tt.want, tt.wantMsg)
			}
		})
	}
	if toks, _ := ts.store.ListTokens(context.Background()); len(toks) != 0 {
		t.Errorf("tokens: got %d, want 0 after only bad requests", len(toks))
	}
	resp, body := ts.api(t, "POST", "/api/tokens", "", strings.NewReader(`{"environment":"Prod","ttl":"1h"}`))
	var tr api.TokenResult
	json.Unmarshal(body, &tr)
	if resp.StatusCode != 201 || !strings.HasPrefix(tr.Join, "tendril://") {
		t.Fatalf("create token: got %d %s", resp.StatusCode, body)
	}
	j, err := protocol.ParseJoin(tr.Join)
	if err != nil || j.Thumbprint != ts.Thumbprint() || j.Token != tr.Token {
		t.Fatalf("join string %q: %+v, %v", tr.Join, j, err)
	}
	if resp, _ := ts.api(t, "GET", "/healthz", "-", nil); resp.StatusCode != 200 {
		t.Errorf("healthz without key: got %d, want 200", resp.StatusCode)
	}
}

func TestMetrics(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "m-1")
	ts.checkAllHealth()
	resp, body := ts.api(t, "GET", "/metrics", "-", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, want := range []string{
		"tendril_agents_connected 1",
		`tendril_handshakes_total{outcome="ok"}`,
		"tendril_health_check_duration_seconds_count",
		`tendril_health_checks_total{health="healthy"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestAcceptLimiterSheds(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.AcceptRate, c.AcceptBurst = 0.001, 2 })
	var shed int
	for range 5 {
		p, err := dialPeer(t, ts, newIdentity(t))
		if err != nil {
			shed++
			continue
		}
		p.sess.Close()
	}
	if shed != 3 {
		t.Fatalf("shed %d of 5 connections, want 3 beyond the burst of 2", shed)
	}
	_, body := ts.api(t, "GET", "/metrics", "-", nil)
	if !strings.Contains(string(body), `tendril_handshakes_total{outcome="shed"} 3`) {
		t.Error("metrics do not count 3 shed connections")
	}
}

func TestCoordinatorCertificateRotation(t *testing.T) {
	ts := startServer(t, nil)
	online := enrolled(t, ts, "online")
	// An agent that is away during the rotation.
	awayID := newIdentity(t)
	pa, _ := dialPeer(t, ts, awayID)
	if _, err := pa.register(ts.token(t, "Test"), "away", false); err != nil {
		t.Fatal(err)
	}
	pa.sess.Close()
	old := ts.Thumbprint()

	res, err := ts.RotateCertificate(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Previous != old || res.Thumbprint == old || res.Notified != 1 {
		t.Fatalf("got %+v, want previous %s, a new thumbprint, 1 notified", res, old)
	}
	if online.sess.IsClosed() {
		t.Fatal("online agent was disconnected by the rotation")
	}
	// The away agent still only trusts the old certificate: it asks for it
	// by hint and is served it.
	p, err := dialPeerWith(t, ts, protocol.ClientTLS{Identity: awayID, Pins: certs.NewPins(old), Hint: old})
	if err != nil {
		t.Fatalf("agent that missed the rotation: %v", err)
	}
	p.serveHealth()
	w, err := p.hello()
	if err != nil {
		t.Fatal(err)
	}
	if len(w.ServerThumbprints) != 2 || w.ServerThumbprints[0] != res.Thumbprint {
		t.Fatalf("welcome thumbprints: got %v, want [%s %s]", w.ServerThumbprints, res.Thumbprint, old)
	}
	// Once it has acknowledged, every agent trusts the new certificate and
	// the old one is retired.
	eventually(t, "previous certificate retired", func() bool { return !ts.ids.HasPrevious() })
	if _, err := os.Stat(filepath.Join(ts.dir, datadir.PrevKeyFile)); !os.IsNotExist(err) {
		t.Errorf("previous key file: got %v, want removed", err)
	}
	if _, err := dialPeerWith(t, ts, protocol.ClientTLS{Identity: awayID, Pins: certs.NewPins(old), Hint: old}); err == nil {
		t.Error("old certificate still served after retirement")
	}
	// A restarted coordinator uses the new certificate.
	ts.stop()
	ts2 := runServer(t, ts.dir, nil)
	if ts2.Thumbprint() != res.Thumbprint {
		t.Errorf("after restart: got %s, want %s", ts2.Thumbprint(), res.Thumbprint)
	}
}

func TestNewerDatabaseNamesTheBackup(t *testing.T) {
	dir := t.TempDir()
	if _, err := datadir.Init(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	// A newer coordinator migrated the database one version further.
	db, err := sql.Open("sqlite", filepath.Join(dir, datadir.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)`, sqlstore.SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	cfg := Config{DataDir: dir, Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "tendril-server backup") {
		t.Fatalf("no copy kept: got %v, want advice to restore a backup", err)
	}
	// With the copy the newer coordinator took before migrating, the
	// refusal names it.
	os.MkdirAll(backupsDir(dir), 0o700)
	copyPath := filepath.Join(backupsDir(dir), fmt.Sprintf("tendril-schema%d-20260101T000000.000Z.db", sqlstore.SchemaVersion))
	os.WriteFile(copyPath, nil, 0o600)
	_, err = New(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), copyPath) || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("got %v, want the refusal to name %s", err, copyPath)
	}
}

// TestNewRefusesFolderMadeForPostgres: a folder that records a PostgreSQL
// database, opened with no store, is refused rather than run on an empty
// SQLite database with the fleet's identity.
func TestNewRefusesFolderMadeForPostgres(t *testing.T) {
	dir := t.TempDir()
	if _, err := datadir.Init(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if err := datadir.SaveDatabase(dir, "postgres://tendril:secret@db.example/tendril"); err != nil {
		t.Fatal(err)
	}
	_, err := New(context.Background(), Config{DataDir: dir, Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0", Logger: zaptest.NewLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "was made for a PostgreSQL database, and none was opened") {
		t.Fatalf("got %v, want a refusal naming the PostgreSQL database", err)
	}
}

// TestAPIMethodNotAllowed: a path that exists with other methods answers
// 405 with Allow, not 404.
func TestAPIMethodNotAllowed(t *testing.T) {
	ts := startServer(t, nil)
	tests := []struct {
		method, path, allow string
	}{
		{"DELETE", "/api/tasks", "GET, POST"},
		{"PUT", "/api/agents/web-1", "GET, DELETE"},
		{"GET", "/api/certificate/rotate", "POST"},
	}
	for _, tt := range tests {
		resp, body := ts.api(t, tt.method, tt.path, "", nil)
		var e api.APIError
		json.Unmarshal(body, &e)
		want := tt.method + " " + tt.path + " is not allowed; this endpoint takes " + tt.allow
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tt.allow || e.Error != want {
			t.Errorf("%s %s: got %d, Allow %q, %q; want 405, %q, %q", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Allow"), e.Error, tt.allow, want)
		}
	}
}
