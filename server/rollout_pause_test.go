package server

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// agentRow returns one agent's row of a rollout view.
func agentRow(v api.RolloutView, name string) api.RolloutAgentView {
	for _, a := range v.Agents {
		if a.Agent == name {
			return a
		}
	}
	return api.RolloutAgentView{}
}

// heldByHalt reports whether the engine holds the agent's batch back
// because of a halt: it says so on the agent before it waits.
func heldByHalt(v api.RolloutView, name string) bool {
	a := agentRow(v, name)
	return a.State == api.UpgradeQueued && strings.Contains(a.Reason, "halted by an operator")
}

// makeBusy makes a fake agent report a running task, and the coordinator
// know it: its first health check (which may have seen it idle) is over
// before the check that sees it busy.
func makeBusy(t *testing.T, ts *testServer, f *fakeAgent) {
	t.Helper()
	eventually(t, f.name+"'s first health check recorded", func() bool { return ts.agentView(t, f.name).LastHealthAt != "" })
	f.set(func(f *fakeAgent) { f.running = 1 })
	as := ts.sessions.get(ts.agentView(t, f.name).ID)
	if as == nil {
		t.Fatalf("%s has no session", f.name)
	}
	ts.checkHealth(ts.ctx, []*agentSession{as})
	if !ts.rollouts.Busy(as.agentID) {
		t.Fatalf("%s: the coordinator does not see it busy after a health check", f.name)
	}
}

// TestRolloutHaltAndResume: halting lets the batch under way finish and
// starts no other; resuming goes on; the halt survives a restart.
func TestRolloutHaltAndResume(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	a := newFakeAgent(t, ts, "a", "Prod", "1.0.0")
	b := newFakeAgent(t, ts, "b", "Prod", "1.0.0")
	ts.waitConnected(t, "a")
	ts.waitConnected(t, "b")
	makeBusy(t, ts, a) // holds batch 1 until the halt is in place
	r, err := ts.rollouts.StartRollout(ctx, api.RolloutRequest{Environment: "Prod", Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a waiting for idle", func() bool { return agentRow(ts.rollout(t, r.ID), "a").State == api.UpgradeWaitingForIdle })

	v, err := ts.rollouts.HaltRollout(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Paused || v.PausedAt == nil || v.State != api.RolloutRunning {
		t.Fatalf("after halt: got paused=%v at %v state %s, want paused, with a time, still running", v.Paused, v.PausedAt, v.State)
	}
	again, err := ts.rollouts.HaltRollout(ctx, r.ID)
	if err != nil || !again.PausedAt.Equal(*v.PausedAt) {
		t.Fatalf("halting again: got %v, %v; want the same halt, unchanged", again.PausedAt, err)
	}
	// The batch under way finishes: a becomes idle and is upgraded.
	a.set(func(f *fakeAgent) { f.running = 0 })
	ts.checkAllHealth()
	eventually(t, "a upgraded while halted, b held back", func() bool {
		v := ts.rollout(t, r.ID)
		return agentRow(v, "a").State == api.UpgradeSucceeded && heldByHalt(v, "b")
	})
	if n := b.offerCount(); n != 0 {
		t.Fatalf("b was offered the upgrade %d times while the rollout was halted, want 0", n)
	}
	// A halted rollout with nothing in flight does not hold up a drain.
	if m, err := ts.Maintenance(ctx); err != nil || m.RunningRollouts != 0 {
		t.Fatalf("maintenance view while halted and idle: got %d running rollouts (%v), want 0", m.RunningRollouts, err)
	}

	// The halt is stored: a restarted coordinator keeps holding b back.
	ts.stop()
	ts2 := runServer(t, ts.dir, nil)
	if v := ts2.rollout(t, r.ID); !v.Paused || v.State != api.RolloutRunning {
		t.Fatalf("after restart: got paused=%v state %s, want still halted and running", v.Paused, v.State)
	}
	for _, f := range []*fakeAgent{a, b} {
		f.set(func(f *fakeAgent) { f.ts = ts2 })
		f.connect()
	}
	ts2.waitConnected(t, "b")
	eventually(t, "b still held back after the restart", func() bool { return heldByHalt(ts2.rollout(t, r.ID), "b") })
	if n := b.offerCount(); n != 0 {
		t.Fatalf("b was offered the upgrade %d times after the restart while halted, want 0", n)
	}

	// Resume: refused in maintenance mode, then done.
	if _, err := ts2.SetMaintenance(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := ts2.rollouts.ResumeRollout(ctx, r.ID); !errors.Is(err, kind.ErrConflict) || !strings.Contains(err.Error(), "maintenance mode") {
		t.Fatalf("resume in maintenance mode: got %v, want a conflict naming maintenance mode", err)
	}
	if _, err := ts2.SetMaintenance(ctx, false); err != nil {
		t.Fatal(err)
	}
	v, err = ts2.rollouts.ResumeRollout(ctx, r.ID)
	if err != nil || v.Paused || v.PausedAt != nil {
		t.Fatalf("resume: got paused=%v at %v, %v; want not paused", v.Paused, v.PausedAt, err)
	}
	welcomed := b.welcomeCount()
	v = ts2.waitRollout(t, r.ID)
	if v.State != api.RolloutSucceeded || v.Counts[api.UpgradeSucceeded] != 2 || v.Paused {
		t.Fatalf("after resume: got %s (%s) %v paused=%v, want succeeded for both", v.State, v.Reason, agentStates(v), v.Paused)
	}
	eventually(t, "b welcomed at the new version", func() bool { return b.welcomeCount() > welcomed })

	// A finished rollout can be neither halted nor resumed.
	for name, op := range map[string]func(context.Context, string) (api.RolloutView, error){"halt": ts2.rollouts.HaltRollout, "resume": ts2.rollouts.ResumeRollout} {
		if _, err := op(ctx, r.ID); !errors.Is(err, kind.ErrConflict) || !strings.Contains(err.Error(), "has already finished") {
			t.Errorf("%s a finished rollout: got %v, want a conflict saying it has already finished", name, err)
		}
	}
	if _, err := ts2.rollouts.HaltRollout(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("halt an unknown rollout: got %v, want not found", err)
	}
}

// TestRolloutHaltDuringMaintenanceCountsInFlight: a halted rollout with
// an agent still upgrading is running work that a drain waits for.
func TestRolloutHaltCountsInFlightAgents(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	a := newFakeAgent(t, ts, "a", "Prod", "1.0.0")
	ts.waitConnected(t, "a")
	makeBusy(t, ts, a)
	r, err := ts.rollouts.StartRollout(ctx, api.RolloutRequest{Environment: "Prod"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a waiting for idle", func() bool { return agentRow(ts.rollout(t, r.ID), "a").State == api.UpgradeWaitingForIdle })
	if _, err := ts.rollouts.HaltRollout(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	if m, err := ts.Maintenance(ctx); err != nil || m.RunningRollouts != 1 {
		t.Fatalf("halted with a in flight: got %d running rollouts (%v), want 1", m.RunningRollouts, err)
	}
}
