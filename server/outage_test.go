package server

// A coordinator whose PostgreSQL database goes away and comes back: the
// API says the database is unreachable (503, Retry-After) rather than
// failing, what needs no database keeps working, an agent that knocks
// meanwhile is told why and when to come back, and comes back then.

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/pgtest"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

// outageNode runs a coordinator node on a PostgreSQL cluster of its own,
// which the test may halt: the shared cluster serves the tests running
// beside it.
func outageNode(t *testing.T) (*pgtest.Cluster, *testServer) {
	t.Helper()
	pg.Cluster(t) // skips, or fails on CI, where PostgreSQL is not installed
	ctx := context.Background()
	c, err := pgtest.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop postgres: %v", err)
		}
	})
	url := c.NewDatabase(t)
	dir := t.TempDir()
	if _, err := datadir.InitWith(ctx, dir, datadir.InitOptions{Database: url}); err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.OpenPostgres(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	ts := runServer(t, dir, func(cfg *Config) {
		cfg.Store, cfg.NodeName, cfg.HeartbeatInterval = st, "a", haHeartbeat
		cfg.Logger = zaptest.NewLogger(t).Named("a")
	})
	return c, ts
}

// TestPostgresOutage halts PostgreSQL under a node with one agent
// connected and another about to connect, and resumes it.
func TestPostgresOutage(t *testing.T) {
	cluster, ts := outageNode(t)
	ctx := context.Background()

	web1 := haAgent(t, ts, "web-1", ts.AgentAddr())
	id1 := ts.waitConnected(t, "web-1").ID
	// web-2 is enrolled now and started during the outage, with the
	// backoff of a real agent (its default minimum) growing far beyond
	// the outage, so that only being told when to come back brings it
	// back soon.
	home2 := registerAgent(t, ts, ts.AgentAddr(), "web-2", nil)

	if err := cluster.Down(); err != nil {
		t.Fatal(err)
	}

	// The API: 503, when to try again, and that the database is why;
	// the API key's check included, which every route needs.
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/api/agents", ""},
		{"GET", "/api/tasks", ""},
		{"POST", "/api/tasks", `{"agent": "web-1", "args": ["run-script", "--inline", "true"]}`},
	} {
		resp, body := ts.api(t, r.method, r.path, "", strings.NewReader(r.body))
		var e api.APIError
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "5" ||
			json.Unmarshal(body, &e) != nil || !strings.HasPrefix(e.Error, "the database is unreachable") {
			t.Fatalf("%s %s during the outage: got %d (Retry-After %q) %s; want 503, Retry-After 5 and the database named",
				r.method, r.path, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	// What needs no database answers: the coordinator's own health, and
	// the agents' sessions, whose health checks go on in memory.
	if resp, body := ts.api(t, "GET", "/healthz", "-", nil); resp.StatusCode != 200 {
		t.Fatalf("healthz during the outage: got %d %s", resp.StatusCode, body)
	}
	before := len(ts.HealthHistory(id1))
	if n := ts.checkAllHealth(); n != 1 {
		t.Fatalf("health sweep during the outage: checked %d agents, want 1", n)
	}
	if got := len(ts.HealthHistory(id1)); got != before+1 {
		t.Fatalf("health history during the outage: got %d points, want %d", got, before+1)
	}

	web2 := startAgent(t, home2, func(c *agent.Config) { c.MinBackoff, c.MaxBackoff = time.Second, 10*time.Minute })
	// Refused a few times (each refusal names its own retry time), so
	// that the outage outlasts the node's heartbeats and web-2's backoff
	// would have grown.
	refusals := map[string]bool{}
	servertest.WaitFor(t, time.Minute, "web-2 told three times why it is refused", func() bool {
		if e := web2.Status().LastError; strings.Contains(e, "coordinator node a cannot reach its database") {
			refusals[e] = true
		}
		return len(refusals) >= 3
	})
	if st := web1.Status(); !st.Connected || st.Sessions != 1 {
		t.Fatalf("web-1 during the outage: got %+v, want its first session still up", st)
	}

	if err := cluster.Up(ctx); err != nil {
		t.Fatal(err)
	}
	servertest.WaitFor(t, time.Minute, "web-2 connected once the database is back", func() bool {
		return web2.Status().Connected
	})
	ts.waitConnected(t, "web-2")
	if resp, body := ts.api(t, "GET", "/api/agents", "", nil); resp.StatusCode != 200 {
		t.Fatalf("agents list once the database is back: got %d %s", resp.StatusCode, body)
	}
	if st := web1.Status(); !st.Connected || st.Sessions != 1 {
		t.Fatalf("web-1 after the outage: got %+v, want its first session still up", st)
	}
}
