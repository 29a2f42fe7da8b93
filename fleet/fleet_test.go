package fleet

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/agent/upgrade"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/server"
	"github.com/tendrildeploy/tendril/server/datadir"
)

// startCoordinator runs a real coordinator on loopback, as the server
// tests do, and returns an admin client for it.
func startCoordinator(t *testing.T) (*server.Server, *client.Client) {
	t.Helper()
	dir := t.TempDir()
	res, err := datadir.Init(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, server.Config{
		DataDir: dir, Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0",
		HealthInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
	cl, err := client.New("http://"+srv.HTTPAddr(), res.AdminKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	return srv, cl
}

func TestFleetConnectsAndIsHealthy(t *testing.T) {
	const n = 20
	srv, cl := startCoordinator(t)
	cfg := Config{Dir: t.TempDir(), Agents: n, Coordinator: srv.AgentAddr(), Admin: cl}
	ctx := context.Background()
	reg, err := Prepare(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if reg != n {
		t.Fatalf("registered %d agents, want %d", reg, n)
	}
	// A second Prepare reuses every home.
	if reg, err := Prepare(ctx, cfg); err != nil || reg != 0 {
		t.Fatalf("second Prepare registered %d (err %v), want 0", reg, err)
	}

	f, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		healthy := 0
		agents, err := cl.Agents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range agents {
			if a.Connected && a.Health == "healthy" {
				healthy++
			}
		}
		st := f.Stats()
		if healthy == n && st.Connected == n {
			if st.Sessions != n || st.Running != n || st.Exited != 0 {
				t.Errorf("stats %+v: want %d sessions and running, none exited", st, n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15s: %d of %d agents listed connected and healthy; fleet %+v; %+v", healthy, n, st, agents)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := f.Stop(); err != nil {
		t.Fatalf("an agent stopped on its own: %v", err)
	}
	if st := f.Stats(); st.Running != 0 {
		t.Fatalf("after Stop %d agents still run", st.Running)
	}
}

func TestConfigValidate(t *testing.T) {
	cl, _ := client.New("http://127.0.0.1:1", "k", nil)
	for _, c := range []Config{
		{Agents: 1, Coordinator: "127.0.0.1:1", Admin: cl},
		{Dir: "d", Agents: 0, Coordinator: "127.0.0.1:1", Admin: cl},
		{Dir: "d", Agents: 1, Coordinator: "nope", Admin: cl},
		{Dir: "d", Agents: 1, Coordinator: "127.0.0.1:1"},
		{Dir: "d", Agents: 1, Coordinator: "127.0.0.1:1", Admin: cl, Ramp: -1},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("config %+v: no error", c)
		}
	}
}

func TestFleetRolloutRestartsAtNewVersion(t *testing.T) {
	const n = 3
	srv, cl := startCoordinator(t)
	cfg := Config{Dir: t.TempDir(), Agents: n, Coordinator: srv.AgentAddr(), Admin: cl,
		Agent: agent.Config{Version: "1.0.0", MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}}
	ctx := context.Background()
	if _, err := Prepare(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	f, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	// listed polls the agents listing until every one is connected at
	// version v.
	listed := func(v string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			agents, err := cl.Agents(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ok := 0
			for _, a := range agents {
				if a.Connected && a.Version == v {
					ok++
				}
			}
			if ok == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after 20s: %d of %d agents listed connected at %s: %+v", ok, n, v, agents)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	listed("1.0.0")

	// A stand-in stamped 2.0.0, which the coordinator checks the version
	// of: simulated agents do not run the package.
	pkg := servertest.AgentBinary(t, "2.0.0", runtime.GOOS, runtime.GOARCH)
	if _, err := cl.UploadAgentPackage(ctx, "2.0.0", runtime.GOOS, runtime.GOARCH, bytes.NewReader(pkg), int64(len(pkg))); err != nil {
		t.Fatal(err)
	}
	r, err := cl.StartRollout(ctx, api.RolloutRequest{All: true, Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for r.State == api.RolloutRunning {
		if time.Now().After(deadline) {
			t.Fatalf("rollout still running after 30s: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
		if r, err = cl.Rollout(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
	}
	if r.State != api.RolloutSucceeded || r.Counts[api.UpgradeSucceeded] != n {
		t.Fatalf("rollout: got state %q counts %v, want succeeded with %d agents succeeded", r.State, r.Counts, n)
	}
	listed("2.0.0")
	if st := f.Stats(); st.Restarts != n || st.Exited != 0 || st.Running != n || st.Sessions != 2*n {
		t.Errorf("stats %+v: want %d restarts and running, 0 exited, %d sessions", st, n, 2*n)
	}
	for i := range n {
		st, ok, err := upgrade.Load(Home(cfg.Dir, i))
		if err != nil || !ok || st.Phase != upgrade.PhaseCommitted || !st.Simulated || st.To != "2.0.0" {
			t.Errorf("%s upgrade state: got %+v (ok %v, err %v), want a committed simulated upgrade to 2.0.0", Name(i), st, ok, err)
		}
	}
	if err := f.Stop(); err != nil {
		t.Fatalf("an agent stopped on its own: %v", err)
	}
}
