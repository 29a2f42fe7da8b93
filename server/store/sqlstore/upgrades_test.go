package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

func TestAgentPackages(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		p := store.AgentPackage{Version: "1.2.0", OS: "linux", Arch: "amd64", SHA256: "ab", Size: 10, Signature: []byte{1, 255}, UploadedAt: t0}
		if err := s.AddAgentPackage(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := s.AddAgentPackage(ctx, p); !errors.Is(err, store.ErrExists) {
			t.Fatalf("same key again: got %v, want ErrExists", err)
		}
		other := p
		other.Arch = "arm64"
		if err := s.AddAgentPackage(ctx, other); err != nil {
			t.Fatalf("other arch: %v", err)
		}
		got, err := s.AgentPackage(ctx, "1.2.0", "linux", "amd64")
		if err != nil || !reflect.DeepEqual(got, p) {
			t.Fatalf("got %+v, %v; want %+v", got, err, p)
		}
		if _, err := s.AgentPackage(ctx, "1.2.0", "windows", "amd64"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown: got %v, want ErrNotFound", err)
		}
		if all, err := s.AgentPackages(ctx); err != nil || len(all) != 2 {
			t.Fatalf("list: got %d, %v", len(all), err)
		}
	})
}

func TestRollouts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		r := store.Rollout{ID: "r1", Environment: "Prod", Version: "2.0.0", Batch: 2, MaxFailures: 1, AllowDowngrade: true, GraceSeconds: 120,
			State: api.RolloutRunning, CreatedAt: t0, Node: "n1"}
		agents := []store.RolloutAgent{
			{RolloutID: "r1", AgentID: "b", AgentName: "web-2", FromVersion: "1.0.0", Position: 1, Batch: 1, State: api.UpgradeQueued, UpdatedAt: t0},
			{RolloutID: "r1", AgentID: "a", AgentName: "web-1", FromVersion: "2.0.0", Position: 0, Batch: 0, State: api.UpgradeSucceeded, Reason: "already at 2.0.0", UpdatedAt: t0},
		}
		if err := s.CreateRollout(ctx, r, agents); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRollout(ctx, r, nil); err == nil {
			t.Fatal("duplicate id: got nil error")
		}
		old := store.Rollout{ID: "r0", Version: "1.0.0", Batch: 10, State: api.RolloutSucceeded, CreatedAt: t0.Add(-time.Hour), FinishedAt: t0}
		if err := s.CreateRollout(ctx, old, []store.RolloutAgent{{AgentID: "b", AgentName: "web-2", State: api.UpgradeSucceeded, UpdatedAt: t0}}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Rollout(ctx, "r1")
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Fatalf("got %+v, %v; want %+v", got, err, r)
		}
		if _, err := s.Rollout(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown: got %v", err)
		}
		named := store.Rollout{ID: "r2", NamedAgents: true, Version: "2.0.0", Batch: 1, State: api.RolloutSucceeded,
			CreatedAt: t0.Add(-2 * time.Hour), FinishedAt: t0.Add(-time.Hour)}
		if err := s.CreateRollout(ctx, named, []store.RolloutAgent{{AgentID: "a", AgentName: "web-1", State: api.UpgradeSucceeded, UpdatedAt: t0}}); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Rollout(ctx, "r2"); err != nil || !reflect.DeepEqual(got, named) {
			t.Fatalf("by name: got %+v, %v; want %+v", got, err, named)
		}
		all, err := s.Rollouts(ctx, false, 0)
		if err != nil || len(all) != 3 || all[0].ID != "r1" {
			t.Fatalf("list: got %+v, %v; want newest first", all, err)
		}
		running, err := s.Rollouts(ctx, true, 0)
		if err != nil || len(running) != 1 || running[0].ID != "r1" {
			t.Fatalf("running: got %+v, %v", running, err)
		}
		ras, err := s.RolloutAgents(ctx, "r1")
		if err != nil || len(ras) != 2 || ras[0].AgentName != "web-1" || !reflect.DeepEqual(ras[1], agents[0]) {
			t.Fatalf("agents: got %+v, %v; want in position order", ras, err)
		}
		mine, err := s.RunningRolloutAgents(ctx, "b")
		if err != nil || len(mine) != 1 || mine[0].RolloutID != "r1" {
			t.Fatalf("running rows of b: got %+v, %v", mine, err)
		}

		at := t0.Add(time.Minute)
		for _, tc := range []struct {
			name    string
			from    []string
			to      string
			changed bool
		}{
			{"from the current state", []string{api.UpgradeQueued}, api.UpgradeWaitingForIdle, true},
			{"from another state", []string{api.UpgradeSending}, api.UpgradeFailed, false},
			{"from any", nil, api.UpgradeSending, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				changed, err := s.SetRolloutAgentState(ctx, "r1", "b", tc.from, tc.to, "why "+tc.to, at)
				if err != nil || changed != tc.changed {
					t.Fatalf("got %v, %v; want changed %v", changed, err, tc.changed)
				}
			})
		}
		row, err := s.RolloutAgent(ctx, "r1", "b")
		if err != nil || row.State != api.UpgradeSending || row.Reason != "why sending" || !row.UpdatedAt.Equal(at) {
			t.Fatalf("row: got %+v, %v", row, err)
		}
		if _, err := s.SetRolloutAgentState(ctx, "r1", "zz", nil, api.UpgradeFailed, "", at); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown agent: got %v, want ErrNotFound", err)
		}
		if err := s.FinishRollout(ctx, "r1", api.RolloutHalted, "halted after 2 failures", at); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Rollout(ctx, "r1"); got.State != api.RolloutHalted || !got.FinishedAt.Equal(at) {
			t.Fatalf("finished: got %+v", got)
		}
		if err := s.FinishRollout(ctx, "nope", api.RolloutHalted, "", at); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown rollout: got %v", err)
		}
	})
}

// TestCreateRolloutRefusesAgentsInARunningRollout: the check is part of
// the insert, so it holds across coordinators sharing a database; the
// PostgreSQL run also races two stores over the same agent.
func TestCreateRolloutRefusesAgentsInARunningRollout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, where := db.open(t)
		row := func(id, name string) store.RolloutAgent {
			return store.RolloutAgent{AgentID: id, AgentName: name, FromVersion: "1.0.0", Batch: 1, State: api.UpgradeQueued, UpdatedAt: t0}
		}
		running := func(id string) store.Rollout {
			return store.Rollout{ID: id, Version: "2.0.0", Batch: 1, State: api.RolloutRunning, CreatedAt: t0}
		}
		if err := s.CreateRollout(ctx, running("r1"), []store.RolloutAgent{row("a", "web-1"), row("b", "web-2")}); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			name    string
			r       store.Rollout
			agents  []store.RolloutAgent
			wantErr error
		}{
			{"overlapping running rollout", running("r2"), []store.RolloutAgent{row("c", "web-3"), row("b", "web-2")}, store.ErrInRollout},
			{"disjoint running rollout", running("r3"), []store.RolloutAgent{row("c", "web-3")}, nil},
			{"finished rollout on the same agents", store.Rollout{ID: "r4", Version: "2.0.0", Batch: 1, State: api.RolloutSucceeded, CreatedAt: t0, FinishedAt: t0},
				[]store.RolloutAgent{row("a", "web-1")}, nil},
		}
		for _, st := range steps {
			err := s.CreateRollout(ctx, st.r, st.agents)
			if !errors.Is(err, st.wantErr) {
				t.Fatalf("%s: got %v, want %v", st.name, err, st.wantErr)
			}
			if st.wantErr != nil {
				if !strings.Contains(err.Error(), "web-2") || strings.Contains(err.Error(), "web-3") {
					t.Errorf("%s: got %q, want it to name web-2 only", st.name, err)
				}
				if _, err := s.Rollout(ctx, st.r.ID); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("%s: refused rollout stored anyway (%v)", st.name, err)
				}
			}
		}
		// Once r1 ends, its agents are free.
		if err := s.FinishRollout(ctx, "r1", api.RolloutSucceeded, "", t0); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRollout(ctx, running("r5"), []store.RolloutAgent{row("b", "web-2")}); err != nil {
			t.Fatalf("after r1 finished: got %v, want nil", err)
		}
		if db.name != "postgres" {
			return
		}
		// Two coordinators start a rollout on the same agent at once:
		// exactly one wins.
		other, err := db.reopen(ctx, where)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		errs := make(chan error, 2)
		for i, st := range []store.Store{s, other} {
			go func() {
				errs <- st.CreateRollout(ctx, running(fmt.Sprintf("race%d", i)), []store.RolloutAgent{row("d", "web-4")})
			}()
		}
		var won, refused int
		for range 2 {
			switch err := <-errs; {
			case err == nil:
				won++
			case errors.Is(err, store.ErrInRollout):
				refused++
			default:
				t.Fatalf("race: %v", err)
			}
		}
		if won != 1 || refused != 1 {
			t.Fatalf("race: got %d won and %d refused, want 1 and 1", won, refused)
		}
	})
}
