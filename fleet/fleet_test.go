package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/server"
	"github.com/tendrildeploy/tendril/server/admin"
)

// startCoordinator runs a real coordinator on loopback, as the server
// tests do, and returns an admin client for it.
func startCoordinator(t *testing.T) (*server.Server, *admin.Client) {
	t.Helper()
	dir := t.TempDir()
	res, err := server.Init(context.Background(), dir)
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
	cl, err := admin.New("http://"+srv.HTTPAddr(), res.AdminKey, nil)
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
	cl, _ := admin.New("http://127.0.0.1:1", "k", nil)
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
