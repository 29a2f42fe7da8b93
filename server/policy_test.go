package server

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/store"
)

// TestPolicyHealthIntervalFlag checks the deprecated --health-interval
// (Config.HealthInterval): copied into the database at start unless an
// operator set the policy, whose value then wins.
func TestPolicyHealthIntervalFlag(t *testing.T) {
	dir := t.TempDir()
	if _, err := datadir.Init(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	flag := func(d time.Duration) func(*Config) { return func(c *Config) { c.HealthInterval = d } }
	steps := []struct {
		name      string
		flag      time.Duration
		operator  *api.PolicyRequest // set through the API once the coordinator runs
		wantEvery time.Duration
		wantBy    string
	}{
		{"no flag: the migration's default", 0, nil, time.Minute, store.PolicySetByDefault},
		{"flag given: copied", 2 * time.Hour, nil, 2 * time.Hour, store.PolicySetByFlag},
		{"same flag again: unchanged", 2 * time.Hour, nil, 2 * time.Hour, store.PolicySetByFlag},
		{"flag left out: the stored value stays", 0, nil, 2 * time.Hour, store.PolicySetByFlag},
		{"another flag: copied", 3 * time.Hour, nil, 3 * time.Hour, store.PolicySetByFlag},
		{"operator sets it", 3 * time.Hour, &api.PolicyRequest{HealthInterval: new("90m")}, 90 * time.Minute, store.PolicySetByOperator},
		{"flag after an operator: ignored", 5 * time.Hour, nil, 90 * time.Minute, store.PolicySetByOperator},
	}
	for _, st := range steps {
		ts := runServer(t, dir, flag(st.flag))
		if st.operator != nil {
			if _, err := ts.SetPolicy(context.Background(), *st.operator); err != nil {
				t.Fatalf("%s: SetPolicy: %v", st.name, err)
			}
		}
		got, err := ts.store.Policy(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got.HealthInterval != st.wantEvery || got.SetBy != st.wantBy {
			t.Errorf("%s: got %s set by %s, want %s set by %s", st.name, got.HealthInterval, got.SetBy, st.wantEvery, st.wantBy)
		}
		if cur := ts.policy.Current(); cur.HealthInterval != st.wantEvery {
			t.Errorf("%s: the running coordinator uses %s, want %s", st.name, cur.HealthInterval, st.wantEvery)
		}
		if info := ts.Info(); info.HealthSeconds != st.wantEvery.Seconds() {
			t.Errorf("%s: server info says %v seconds, want %v", st.name, info.HealthSeconds, st.wantEvery.Seconds())
		}
		ts.stop()
	}

	// A flag below the policy's minimum stops the start, naming why.
	fresh := t.TempDir()
	if _, err := datadir.Init(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	_, err := New(context.Background(), Config{DataDir: fresh, Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0", HealthInterval: time.Millisecond})
	if !errors.Is(err, store.ErrBadPolicy) {
		t.Fatalf("flag below 1s: got %v, want ErrBadPolicy", err)
	}
}

// TestPollHealthFollowsPolicy checks that a new health interval applies
// without a restart: with the harness's hour-long interval no periodic
// sweep would come during the test, so one coming proves the ticker was
// reset.
func TestPollHealthFollowsPolicy(t *testing.T) {
	ts := startServer(t, nil)
	waitPolling(t, ts)
	if got := counterValue(t, ts.metrics.Sweeps); got != 0 {
		t.Fatalf("got %v sweeps before the change, want 0", got)
	}
	if _, err := ts.SetPolicy(context.Background(), api.PolicyRequest{HealthInterval: new("1s")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a periodic health sweep at the new interval", func() bool {
		return counterValue(t, ts.metrics.Sweeps) >= 1
	})
}

// TestPolicyRefreshFromAnotherNode checks that a policy another node
// stored is picked up on a refresh and wakes pollHealth.
func TestPolicyRefreshFromAnotherNode(t *testing.T) {
	ts := startServer(t, nil)
	waitPolling(t, ts)
	p, err := ts.store.Policy(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p.HealthInterval, p.CalamariKeep, p.SetBy, p.UpdatedAt = time.Second, 5, store.PolicySetByOperator, time.Now()
	if err := ts.store.SetPolicy(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	ts.policy.Refresh(context.Background())
	if got := ts.policy.Current(); got.CalamariKeep != 5 || got.HealthInterval != time.Second {
		t.Fatalf("after refresh: got keep %d every %s, want 5 every 1s", got.CalamariKeep, got.HealthInterval)
	}
	eventually(t, "a periodic health sweep at the refreshed interval", func() bool {
		return counterValue(t, ts.metrics.Sweeps) >= 1
	})
}

// TestPolicyCalamariKeep checks that pushes carry the policy's keep count
// and that a real agent prunes to it.
func TestPolicyCalamariKeep(t *testing.T) {
	ts := startServer(t, nil)
	a := startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	if _, err := ts.SetPolicy(context.Background(), api.PolicyRequest{CalamariKeep: new(1)}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1.0.0", "2.0.0"} {
		ts.upload(t, packBundle(t, v, 0))
		res, err := ts.UpdateCalamari(context.Background(), api.UpdateTarget{Agent: "web-1"})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 || res[0].Error != "" {
			t.Fatalf("push %s: got %+v, want one success", v, res)
		}
	}
	entries, err := os.ReadDir(filepath.Join(a.home, "Calamari"))
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			versions = append(versions, e.Name())
		}
	}
	if !slices.Equal(versions, []string{"2.0.0"}) {
		t.Fatalf("got %v on the agent, want [2.0.0]: the policy keeps 1", versions)
	}
}

// TestRolloutUsesPolicyDefaults checks that a rollout started without a
// batch size or failure budget takes the policy's, and that given ones
// win.
func TestRolloutUsesPolicyDefaults(t *testing.T) {
	ts := startServer(t, nil)
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	newFakeAgent(t, ts, "web-1", "Prod", "1.0.0")
	newFakeAgent(t, ts, "web-2", "Prod", "1.0.0")
	if _, err := ts.SetPolicy(context.Background(), api.PolicyRequest{UpgradeBatch: new(1), UpgradeMaxFailures: new(2)}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                 string
		req                  api.RolloutRequest
		wantBatch, wantFails int
	}{
		{"neither given", api.RolloutRequest{Environment: "Prod"}, 1, 2},
		{"both given", api.RolloutRequest{Environment: "Prod", Batch: 2, MaxFailures: new(0), AllowDowngrade: true}, 2, 0},
	}
	for _, tc := range tests {
		v, err := ts.rollouts.StartRollout(context.Background(), tc.req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if v.Batch != tc.wantBatch || v.MaxFailures != tc.wantFails {
			t.Errorf("%s: got batch %d max failures %d, want %d and %d", tc.name, v.Batch, v.MaxFailures, tc.wantBatch, tc.wantFails)
		}
		ts.waitRollout(t, v.ID)
	}
}

// TestPolicyAPIAdminOnly checks that a standard API key reads the policy
// but cannot change it.
func TestPolicyAPIAdminOnly(t *testing.T) {
	ts := startServer(t, nil)
	standard, err := ts.access.CreateAPIKey(context.Background(), "reader", api.RoleOperator, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newConsoleClient(t, ts)
	if resp, body := apiCall(t, c, "GET", "/api/policy", standard.Key, ""); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"calamari_keep": 3`) {
		t.Fatalf("GET with a standard key: got %d %s, want 200 with the default keep", resp.StatusCode, body)
	}
	if resp, body := apiCall(t, c, "PUT", "/api/policy", standard.Key, `{"calamari_keep": 9}`); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("PUT with a standard key: got %d %s, want 403", resp.StatusCode, body)
	}
	if p, err := ts.store.Policy(context.Background()); err != nil || p.CalamariKeep != 3 {
		t.Fatalf("after a refused PUT: got keep %d (%v), want 3", p.CalamariKeep, err)
	}
}

// counterValue reads a counter's current value.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// waitPolling waits until pollHealth runs with the interval it read at
// start, so that a sweep coming soon after can only come from a change.
func waitPolling(t *testing.T, ts *testServer) {
	t.Helper()
	select {
	case <-ts.polling:
	case <-time.After(10 * time.Second):
		t.Fatal("pollHealth did not start within 10s")
	}
}
