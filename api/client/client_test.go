package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/goleak"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server"
	"github.com/tendrildeploy/tendril/server/datadir"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// coordinator is a real tendril-server running in the test process.
type coordinator struct {
	dir  string
	init datadir.InitResult
	srv  *server.Server
	url  string
}

func startCoordinator(t *testing.T) *coordinator {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	res, err := datadir.Init(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(ctx, server.Config{
		DataDir: dir, Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0", Version: "1.2.3-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator run: %v", err)
		}
	})
	// run.json is written by Run; FromDataDir needs it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := api.ReadRunInfo(dir); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("coordinator did not write run.json")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &coordinator{dir: dir, init: res, srv: srv, url: "http://" + srv.HTTPAddr()}
}

// newClient returns a client with its own transport, closed at the end of
// the test so no keep-alive goroutine outlives it.
func newClient(t *testing.T, url, key string) *Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	// No overall Timeout: a followed log may rightly take long; each test
	// call is bounded by its context or by the test binary's timeout.
	c, err := New(url, key, &http.Client{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fakeAgent is the least an agent must do to be listed as connected and
// healthy: enroll, say hello, and answer the coordinator's calls. For
// tasks it says every Calamari version is installed, and runs every task
// as a script of two lines: the first at once, the second and the end
// (success) once release is closed.
type fakeAgent struct {
	sess    *yamux.Session
	release chan struct{}
	done    chan struct{} // closed when the session and its streams have ended
}

func dialCoordinator(t *testing.T, ctx context.Context, addr string, id *certs.Identity, pins ...string) *yamux.Session {
	t.Helper()
	d := tls.Dialer{Config: protocol.ClientTLS{Identity: id, Pins: certs.NewPins(pins...)}.Config()}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := protocol.NewSession(conn, protocol.SessionOptions{})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	return sess
}

func enrollAgent(t *testing.T, tok api.TokenResult, name string) *fakeAgent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	j, err := protocol.ParseJoin(tok.Join)
	if err != nil {
		t.Fatal(err)
	}
	id, err := certs.NewIdentity(name)
	if err != nil {
		t.Fatal(err)
	}
	sess := dialCoordinator(t, ctx, j.Servers[0], id, j.Thumbprint)
	var reg protocol.Registered
	err = protocol.Call(ctx, sess, protocol.TypeRegister, protocol.Register{Token: j.Token, Name: name}, protocol.TypeRegistered, &reg)
	sess.Close()
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	sess = dialCoordinator(t, ctx, j.Servers[0], id, reg.ServerThumbprints...)
	var w protocol.Welcome
	hello := protocol.Hello{
		Version: "1.2.3-test", ProtocolMin: protocol.MinProtocol, ProtocolMax: protocol.ProtocolVersion,
		OS: runtime.GOOS, Arch: runtime.GOARCH,
	}
	if err := protocol.Call(ctx, sess, protocol.TypeHello, hello, protocol.TypeWelcome, &w); err != nil {
		sess.Close()
		t.Fatalf("hello: %v", err)
	}
	fa := &fakeAgent{sess: sess, release: make(chan struct{}), done: make(chan struct{})}
	go fa.serve()
	t.Cleanup(func() {
		sess.Close()
		<-fa.done
	})
	return fa
}

func (fa *fakeAgent) serve() {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		close(fa.done)
	}()
	for {
		st, err := fa.sess.AcceptStream()
		if err != nil {
			return
		}
		wg.Go(func() {
			defer st.Close()
			fa.handle(st)
		})
	}
}

func (fa *fakeAgent) handle(st *yamux.Stream) {
	st.SetDeadline(time.Now().Add(10 * time.Second))
	f, err := protocol.ReadFrame(st, 0)
	if err != nil {
		return
	}
	switch f.Type {
	case protocol.TypeHealthRequest:
		protocol.WriteFrame(st, protocol.TypeHealth, protocol.Health{
			Version: "1.2.3-test", OS: runtime.GOOS, Arch: runtime.GOARCH, DiskFree: 100 << 30,
		})
	case protocol.TypeServerCertificates, protocol.TypeGoAway, protocol.TypeTaskCancel:
		protocol.WriteFrame(st, protocol.TypeAck, nil)
	case protocol.TypeCalamariCheck:
		var c protocol.CalamariCheck
		f.Decode(&c)
		protocol.WriteFrame(st, protocol.TypeCalamariState, protocol.CalamariState{Version: c.Version, Installed: true})
	case protocol.TypeTaskStart:
		var ts protocol.TaskStart
		f.Decode(&ts)
		protocol.WriteFrame(st, protocol.TypeTaskStarted, protocol.TaskStarted{Ticket: ts.Ticket, State: protocol.TaskRunning})
	case protocol.TypeTaskFollow:
		var tf protocol.TaskFollow
		f.Decode(&tf)
		st.SetDeadline(time.Time{})
		entry := func(seq int64, text string) {
			if seq >= tf.From {
				protocol.WriteFrame(st, protocol.TypeTaskLog, protocol.TaskLog{Entries: []protocol.LogEntry{
					{Seq: seq, Time: time.Now().UTC(), Stream: "stdout", Text: text}}})
			}
		}
		entry(1, "hello from "+tf.Ticket)
		select {
		case <-fa.release:
		case <-fa.sess.CloseChan():
			return
		}
		entry(2, "bye")
		protocol.WriteFrame(st, protocol.TypeTaskEnd, protocol.TaskEnd{State: protocol.TaskSucceeded, LastSeq: 2})
	default:
		protocol.WriteError(st, protocol.CodeUnknownType, f.Type)
	}
}

func waitForAgent(t *testing.T, c *Client, name string, ok func(api.AgentView) bool) api.AgentView {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		a, err := c.Agent(context.Background(), name)
		if err == nil && ok(a) {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %q never reached the expected state; last %+v, %v", name, a, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClientAgainstCoordinator(t *testing.T) {
	co := startCoordinator(t)
	c := newClient(t, co.url, co.init.AdminKey)
	ctx := context.Background()

	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != "1.2.3-test" || info.Thumbprint != co.init.Thumbprint || info.AgentAddr != co.srv.AgentAddr() {
		t.Fatalf("info = %+v", info)
	}

	agents, err := c.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(agents) != 0 {
		t.Fatalf("agents before enrollment = %+v", agents)
	}

	tok, err := c.CreateToken(ctx, api.TokenRequest{Environment: "Test", TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	j, err := protocol.ParseJoin(tok.Join)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Environment != "Test" || j.Thumbprint != co.init.Thumbprint || j.Servers[0] != co.srv.AgentAddr() || j.Token != tok.Token {
		t.Fatalf("token = %+v, join = %+v", tok, j)
	}
	if d := time.Until(tok.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("token expires in %s, want 1h", d)
	}

	fa := enrollAgent(t, tok, "web01")
	a := waitForAgent(t, c, "web01", func(a api.AgentView) bool { return a.Connected && a.Health == "healthy" })
	if a.Environment != "Test" || a.Version != "1.2.3-test" || a.TLSVersion != "1.3" || a.Upgrade != "none" || a.LastSeen == "" {
		t.Fatalf("agent = %+v", a)
	}

	agents, err = c.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(agents) != 1 || agents[0].Name != "web01" || !agents[0].Connected {
		t.Fatalf("agents = %+v", agents)
	}

	raw, err := c.AgentsJSON(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var objs []map[string]any
	if err := json.Unmarshal(raw, &objs); err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 {
		t.Fatalf("raw agents = %s", raw)
	}
	// The fields DESIGN.md section 7 promises.
	for _, k := range []string{"id", "name", "environment", "version", "connected", "health", "tls_version",
		"thumbprint", "calamari_version", "calamari_current", "upgrade", "last_seen"} {
		if _, ok := objs[0][k]; !ok {
			t.Errorf("GET /api/agents lacks %q: %s", k, raw)
		}
	}

	rot, err := c.RotateCertificate(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rot.Previous != co.init.Thumbprint || rot.Thumbprint == co.init.Thumbprint || rot.Notified != 1 || len(rot.Failed) != 0 {
		t.Fatalf("rotation = %+v", rot)
	}
	if info, err = c.Info(ctx); err != nil || info.Thumbprint != rot.Thumbprint {
		t.Fatalf("info after rotation = %+v, %v", info, err)
	}

	if err := c.DeleteAgent(ctx, "web01"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fa.done:
	case <-time.After(10 * time.Second):
		t.Fatal("deleted agent's session was not closed")
	}
	if _, err := c.Agent(ctx, "web01"); !IsStatus(err, http.StatusNotFound) {
		t.Fatalf("get deleted agent: %v, want 404", err)
	}
	if err := c.DeleteAgent(ctx, "web01"); !IsStatus(err, http.StatusNotFound) {
		t.Fatalf("delete deleted agent: %v, want 404", err)
	}
}

func TestAuthentication(t *testing.T) {
	co := startCoordinator(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, key, want string
	}{
		{"no key", "", "an API key is required"},
		{"wrong key", "tdk_wrong", "the API key is not valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, co.url, tc.key)
			_, err := c.Agents(ctx)
			var e *Error
			if !errors.As(err, &e) || e.Status != http.StatusUnauthorized {
				t.Fatalf("err = %v, want *Error 401", err)
			}
			if !strings.Contains(e.Message, tc.want) {
				t.Fatalf("message %q, want it to contain %q", e.Message, tc.want)
			}
			if got := err.Error(); !strings.HasPrefix(got, "list agents: "+tc.want) || !strings.HasSuffix(got, "(HTTP 401)") {
				t.Fatalf("error text %q", got)
			}
		})
	}
}

func TestUnknownAgent(t *testing.T) {
	co := startCoordinator(t)
	c := newClient(t, co.url, co.init.AdminKey)
	_, err := c.Agent(context.Background(), "nobody")
	if !IsStatus(err, http.StatusNotFound) || !strings.Contains(err.Error(), `no agent named "nobody"`) {
		t.Fatalf("err = %v, want 404 naming the agent", err)
	}
	if err := c.DeleteAgent(context.Background(), "nobody"); !IsStatus(err, http.StatusNotFound) {
		t.Fatalf("delete: %v, want 404", err)
	}
	if _, err := c.Agent(context.Background(), ""); err == nil {
		t.Fatal("empty name accepted")
	}
}

func TestBadTokenRequests(t *testing.T) {
	co := startCoordinator(t)
	c := newClient(t, co.url, co.init.AdminKey)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  api.TokenRequest
		want string
	}{
		{"empty environment", api.TokenRequest{}, `field "environment": "" is not a name of 1-63 letters`},
		{"bad environment", api.TokenRequest{Environment: "no/slash"}, `field "environment": "no/slash" is not a name of 1-63 letters`},
		{"bad ttl", api.TokenRequest{Environment: "Test", TTL: "soon"}, `field "ttl": "soon" is not a duration such as 30s, 10m or 24h`},
		{"negative ttl", api.TokenRequest{Environment: "Test", TTL: "-1h"}, `field "ttl": "-1h" is not a duration`},
		{"bad server", api.TokenRequest{Environment: "Test", Servers: []string{"no-port"}}, "no-port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CreateToken(ctx, tc.req)
			if !IsStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want 400 containing %q", err, tc.want)
			}
		})
	}
	t.Run("unknown field", func(t *testing.T) {
		// A typo in a field name must not be silently ignored; the typed
		// client cannot send one, so go below it.
		err := c.do(ctx, http.MethodPost, "/api/tokens", map[string]any{"environment": "Test", "tll": "1h"}, nil)
		if !IsStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "tll") {
			t.Fatalf("err = %v, want 400 naming the field", err)
		}
	})
}

func TestFromDataDir(t *testing.T) {
	co := startCoordinator(t)
	c, err := FromDataDir(co.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	if c.URL() != co.url {
		t.Fatalf("URL = %s, want %s", c.URL(), co.url)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Thumbprint != co.init.Thumbprint {
		t.Fatalf("info = %+v", info)
	}
}

func TestFromDataDirNoCoordinator(t *testing.T) {
	ctx := context.Background()

	t.Run("not initialized", func(t *testing.T) {
		_, err := FromDataDir(t.TempDir())
		if !errors.Is(err, api.ErrNotInitialized) {
			t.Fatalf("err = %v, want ErrNotInitialized", err)
		}
	})

	dir := t.TempDir()
	if _, err := datadir.Init(ctx, dir); err != nil {
		t.Fatal(err)
	}
	t.Run("never started", func(t *testing.T) {
		_, err := FromDataDir(dir)
		if err == nil || !strings.Contains(err.Error(), "no coordinator is running") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("stale run.json", func(t *testing.T) {
		// A coordinator that was killed leaves run.json behind; its port
		// is closed now.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		b, _ := json.Marshal(api.RunInfo{PID: 1, HTTP: addr, AgentAddr: "127.0.0.1:1"})
		if err := os.WriteFile(filepath.Join(dir, api.RunFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := FromDataDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseIdleConnections()
		_, err = c.Agents(ctx)
		if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "not running at http://"+addr) {
			t.Fatalf("err = %v, want ErrNotRunning naming http://%s", err, addr)
		}
	})
}

func TestNewValidatesURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:10980", "ftp://host", "http://", "http://user:pw@host", "http://host/?x=1", "://bad"} {
		if _, err := New(u, "k", nil); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
	c, err := New("https://tendril.example:8443/", "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.URL() != "https://tendril.example:8443" {
		t.Fatalf("URL = %s", c.URL())
	}
}

func TestRunInfoURL(t *testing.T) {
	for _, tc := range []struct {
		ri   api.RunInfo
		want string
	}{
		{api.RunInfo{HTTP: "127.0.0.1:10980"}, "http://127.0.0.1:10980"},
		{api.RunInfo{HTTP: "0.0.0.0:10980", HTTPS: true}, "https://127.0.0.1:10980"},
		{api.RunInfo{HTTP: "[::]:10980"}, "http://[::1]:10980"},
		{api.RunInfo{HTTP: "tendril.example:443", HTTPS: true}, "https://tendril.example:443"},
	} {
		got, err := RunInfoURL(tc.ri)
		if err != nil || got != tc.want {
			t.Errorf("RunInfoURL(%+v) = %q, %v; want %q", tc.ri, got, err, tc.want)
		}
	}
}

func TestNonJSONError(t *testing.T) {
	// A proxy in front of the coordinator answers with its own page.
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad gateway: upstream down\n<html>...</html>", http.StatusBadGateway)
	}))
	defer ts.Close()
	c := newClient(t, ts.URL, "k")
	_, err := c.Info(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusBadGateway || e.Message != "bad gateway: upstream down" {
		t.Fatalf("err = %#v", err)
	}
	if got, want := (&Error{Status: 503}).Error(), "service unavailable (HTTP 503)"; got != want {
		t.Fatalf("empty message: %q, want %q", got, want)
	}
}
