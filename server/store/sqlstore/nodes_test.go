package sqlstore

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

func testNode(id, name string) store.Node {
	return store.Node{ID: id, Name: name, Advertise: name + ":10943", HTTP: "127.0.0.1:10980", Version: "1.0.0",
		StartedAt: t0, HeartbeatEvery: time.Hour}
}

func nodeByID(t *testing.T, s store.Store, id string) (store.Node, bool) {
	t.Helper()
	all, err := s.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range all {
		if n.ID == id {
			return n, true
		}
	}
	return store.Node{}, false
}

func TestNodeLifecycle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a, err := s.RegisterNode(ctx, testNode("a1", "alpha"))
		if err != nil {
			t.Fatal(err)
		}
		if a.Draining || a.Heartbeat.IsZero() {
			t.Fatalf("registered: got %+v, want not draining with a heartbeat", a)
		}
		got, ok := nodeByID(t, s, "a1")
		if !ok || !got.Alive() || got.Name != "alpha" || got.Advertise != "alpha:10943" || got.Version != "1.0.0" ||
			!got.StartedAt.Equal(t0) || got.HeartbeatEvery != time.Hour || got.HeartbeatAge < 0 || got.HeartbeatAge > time.Minute {
			t.Fatalf("got %+v (found %v), want alpha alive as registered", got, ok)
		}
		if db.name == "postgres" {
			// Nodes share the database. (An SQLite database has one
			// coordinator: a node that registers replaces the others.)
			if _, err := s.RegisterNode(ctx, testNode("b1", "beta")); err != nil {
				t.Fatal(err)
			}
			if _, ok := nodeByID(t, s, "a1"); !ok {
				t.Fatal("alpha is gone once beta registered")
			}
			// A second process with the same name is refused while the
			// first is alive.
			if _, err := s.RegisterNode(ctx, testNode("a2", "alpha")); !errors.Is(err, store.ErrNodeAlive) {
				t.Fatalf("same name while alive: got %v, want ErrNodeAlive", err)
			}
		}
		if err := s.HeartbeatNode(ctx, "a1"); err != nil {
			t.Fatal(err)
		}
		if err := s.SetNodeDraining(ctx, "a1", true); err != nil {
			t.Fatal(err)
		}
		if err := s.SetNodeDraining(ctx, "nope", true); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("drain unknown node: got %v, want ErrNotFound", err)
		}
		if err := s.StopNode(ctx, "a1", t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if got, _ := nodeByID(t, s, "a1"); got.Alive() || !got.StoppedAt.Equal(t0.Add(time.Minute)) {
			t.Fatalf("after stop: got %+v, want dead and stopped", got)
		}
		if err := s.HeartbeatNode(ctx, "a1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("heartbeat after stop: got %v, want ErrNotFound", err)
		}
		// The next run of alpha replaces the stopped row and stays draining.
		a2, err := s.RegisterNode(ctx, testNode("a2", "alpha"))
		if err != nil {
			t.Fatal(err)
		}
		if !a2.Draining {
			t.Fatal("restarted node: got not draining, want the draining flag carried over")
		}
		if _, ok := nodeByID(t, s, "a1"); ok {
			t.Fatal("the stopped run of alpha is still listed")
		}
		all, err := s.Nodes(ctx)
		want := []string{"a2", "b1"}
		if db.name == "sqlite" {
			want = want[:1]
		}
		var ids []string
		for _, n := range all {
			ids = append(ids, n.ID)
		}
		if err != nil || !slices.Equal(ids, want) || !all[0].Draining {
			t.Fatalf("got %v (%+v), %v; want %v by name, a2 draining", ids, all, err, want)
		}
	})
}

func TestNodeDeadAfterMissedHeartbeats(t *testing.T) {
	tests := []struct {
		age   time.Duration
		alive bool
	}{
		{0, true},
		{store.DeadAfter * time.Second, true},
		{store.DeadAfter*time.Second + time.Nanosecond, false},
	}
	for _, tt := range tests {
		n := store.Node{HeartbeatEvery: time.Second, HeartbeatAge: tt.age}
		if got := n.Alive(); got != tt.alive {
			t.Errorf("age %s: got alive %v, want %v", tt.age, got, tt.alive)
		}
	}
	if (store.Node{HeartbeatEvery: time.Second, StoppedAt: t0}).Alive() {
		t.Error("stopped node: got alive, want dead")
	}
}

func TestNodeFoundDeadIsReplaced(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		n := testNode("a1", "alpha")
		n.HeartbeatEvery = time.Millisecond
		if _, err := s.RegisterNode(ctx, n); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, _ := nodeByID(t, s, "a1")
			if !got.Alive() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a node that stopped beating stayed alive")
			}
			time.Sleep(5 * time.Millisecond)
		}
		// Killed without a clean stop: its name may start again.
		if _, err := s.RegisterNode(ctx, testNode("a2", "alpha")); err != nil {
			t.Fatalf("restart after a crash: %v", err)
		}
		if n, err := s.PruneNodes(ctx, time.Hour); err != nil || n != 0 {
			t.Fatalf("prune fresh nodes: got %d, %v; want 0", n, err)
		}
		if n, err := s.PruneNodes(ctx, -time.Hour); err != nil || n != 1 {
			t.Fatalf("prune every node: got %d, %v; want 1", n, err)
		}
		if all, err := s.Nodes(ctx); err != nil || len(all) != 0 {
			t.Fatalf("after pruning: got %+v, %v; want none", all, err)
		}
	})
}

func TestAgentNode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		// b1 is not registered: agents name nodes without a foreign key.
		if _, err := s.RegisterNode(ctx, testNode("a1", "node-a1")); err != nil {
			t.Fatal(err)
		}
		web := enroll(t, s, "web-1", "prod", "tp-1")
		db1 := enroll(t, s, "db-1", "prod", "tp-2")
		for _, c := range []store.Connection{{AgentID: web.ID, Node: "a1", At: t0}, {AgentID: db1.ID, Node: "a1", At: t0}} {
			if err := s.RecordConnection(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		if got := mustAgent(t, s, web.ID); got.Node != "a1" {
			t.Fatalf("after hello: got node %q, want a1", got.Node)
		}
		if n, _ := nodeByID(t, s, "a1"); n.Agents != 2 {
			t.Fatalf("got %d agents on a1, want 2", n.Agents)
		}
		// web-1 moved to b1 before a1 noticed its session ended: a1's
		// late disconnection must not clear b1's.
		if err := s.RecordConnection(ctx, store.Connection{AgentID: web.ID, Node: "b1", At: t0.Add(time.Second)}); err != nil {
			t.Fatal(err)
		}
		if err := s.DisconnectAgent(ctx, web.ID, "a1", t0.Add(2*time.Second)); err != nil {
			t.Fatal(err)
		}
		if got := mustAgent(t, s, web.ID); got.Node != "b1" || !got.LastSeen.Equal(t0.Add(2*time.Second)) {
			t.Fatalf("stale disconnection: got node %q last seen %s, want b1 and the new time", got.Node, got.LastSeen)
		}
		if err := s.DisconnectAgent(ctx, web.ID, "b1", t0.Add(3*time.Second)); err != nil {
			t.Fatal(err)
		}
		if got := mustAgent(t, s, web.ID); got.Node != "" {
			t.Fatalf("after disconnection: got node %q, want none", got.Node)
		}
		if err := s.DisconnectAgent(ctx, "ghost", "b1", t0); err != nil {
			t.Fatalf("unknown agent: got %v, want it skipped", err)
		}
		// A node that stops serves no one any more.
		if err := s.StopNode(ctx, "a1", t0); err != nil {
			t.Fatal(err)
		}
		if got := mustAgent(t, s, db1.ID); got.Node != "" {
			t.Fatalf("after its node stopped: got node %q, want none", got.Node)
		}
	})
}

func TestClaimTask(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		if err := s.CreateTasks(ctx, []store.Task{newTask("a", "g", t0), newTask("done", "g", t0)}); err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateTask(ctx, "done", store.TaskUpdate{State: api.TaskSucceeded, FinishedAt: t0}); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			id, from, to string
			want         bool
			node         string
		}{
			{"a", "", "n1", true, "n1"},
			{"a", "", "n2", false, "n1"},   // n1 got there first
			{"a", "n3", "n2", false, "n1"}, // not n3's
			{"a", "n1", "n2", true, "n2"},  // taken over from n1
			{"a", "n2", "", true, ""},      // released
			{"done", "", "n1", false, ""},  // finished tasks stay where they are
			{"ghost", "", "n1", false, ""},
		}
		for i, st := range steps {
			got, err := s.ClaimTask(ctx, st.id, st.from, st.to)
			if err != nil || got != st.want {
				t.Fatalf("step %d: claim %s from %q to %q: got %v, %v; want %v", i, st.id, st.from, st.to, got, err, st.want)
			}
			if st.id == "ghost" {
				continue
			}
			if task, _ := s.Task(ctx, st.id); task.Node != st.node {
				t.Fatalf("step %d: got node %q, want %q", i, task.Node, st.node)
			}
		}
	})
}

// TestCreateTasksClaimed checks that a task stored with a Node is claimed
// by it, as if claimed right after, and one without is claimed by none.
func TestCreateTasksClaimed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		mine, free := newTask("mine", "g", t0), newTask("free", "g", t0)
		mine.Node = "n1"
		if err := s.CreateTasks(ctx, []store.Task{mine, free}); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			id, from, to string
			want         bool
			node         string
		}{
			{"mine", "", "n2", false, "n1"}, // n1's from the start
			{"mine", "n1", "n1", true, "n1"},
			{"free", "n1", "n2", false, ""},
			{"free", "", "n2", true, "n2"},
		}
		for i, st := range steps {
			if task, _ := s.Task(ctx, st.id); i == 0 && task.Node != "n1" {
				t.Fatalf("created: got node %q, want n1", task.Node)
			}
			got, err := s.ClaimTask(ctx, st.id, st.from, st.to)
			if err != nil || got != st.want {
				t.Fatalf("step %d: claim %s from %q to %q: got %v, %v; want %v", i, st.id, st.from, st.to, got, err, st.want)
			}
			if task, _ := s.Task(ctx, st.id); task.Node != st.node {
				t.Fatalf("step %d: got node %q, want %q", i, task.Node, st.node)
			}
		}
	})
}

func TestClaimRolloutAndAgent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		r := store.Rollout{ID: "r1", Version: "2.0.0", Batch: 1, State: api.RolloutRunning, CreatedAt: t0}
		ra := store.RolloutAgent{RolloutID: "r1", AgentID: "ag", AgentName: "web-1", Batch: 1, State: api.UpgradeWaitingForIdle, UpdatedAt: t0}
		if err := s.CreateRollout(ctx, r, []store.RolloutAgent{ra}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RegisterNode(ctx, testNode("n1", "one")); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateTasks(ctx, []store.Task{newTask("t1", "g", t0)}); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.ClaimTask(ctx, "t1", "", "n1"); err != nil || !ok {
			t.Fatalf("claim task: got %v, %v; want true", ok, err)
		}
		if ok, err := s.ClaimRollout(ctx, "r1", "", "n1"); err != nil || !ok {
			t.Fatalf("claim: got %v, %v; want true", ok, err)
		}
		if n, _ := nodeByID(t, s, "n1"); n.Tasks != 1 || n.Rollouts != 1 {
			t.Fatalf("got %d tasks and %d rollouts driven by n1, want 1 and 1", n.Tasks, n.Rollouts)
		}
		if ok, _ := s.ClaimRollout(ctx, "r1", "", "n2"); ok {
			t.Fatal("second claim from none: got true, want false")
		}
		if got, _ := s.Rollout(ctx, "r1"); got.Node != "n1" {
			t.Fatalf("got rollout node %q, want n1", got.Node)
		}
		at := t0.Add(time.Minute)
		if ok, err := s.SetRolloutAgentNode(ctx, "r1", "ag", []string{api.UpgradeWaitingForIdle}, "", api.UpgradeSending, "n2", "sending", at); err != nil || !ok {
			t.Fatalf("start sending: got %v, %v; want true", ok, err)
		}
		if ok, _ := s.SetRolloutAgentNode(ctx, "r1", "ag", []string{api.UpgradeWaitingForIdle}, "", api.UpgradeSending, "n1", "sending", at); ok {
			t.Fatal("second node starting to send: got true, want false")
		}
		got, err := s.RolloutAgent(ctx, "r1", "ag")
		if err != nil || got.State != api.UpgradeSending || got.Node != "n2" || got.Reason != "sending" || !got.UpdatedAt.Equal(at) {
			t.Fatalf("got %+v, %v; want sending by n2", got, err)
		}
		if ok, _ := s.SetRolloutAgentNode(ctx, "r1", "ag", []string{api.UpgradeSending}, "n1", api.UpgradeWaitingForIdle, "", "x", at); ok {
			t.Fatal("reset by a node that is not the sender: got true, want false")
		}
		if ok, err := s.SetRolloutAgentNode(ctx, "r1", "ag", []string{api.UpgradeSending}, "n2", api.UpgradeWaitingForIdle, "", "again", at); err != nil || !ok {
			t.Fatalf("reset by the sender: got %v, %v; want true", ok, err)
		}
		if err := s.FinishRollout(ctx, "r1", api.RolloutSucceeded, "done", at); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.ClaimRollout(ctx, "r1", "n1", "n2"); ok {
			t.Fatal("claim of a finished rollout: got true, want false")
		}
	})
}

// TestNotify checks that a notification reaches every listener: with
// PostgreSQL, another store on the same database, as another node would.
func TestNotify(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		s, where := db.open(t)
		other := s
		if db.name == "postgres" {
			o, err := db.reopen(context.Background(), where)
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			other = o
		}
		ctx, cancel := context.WithCancel(context.Background())
		got := make(chan string, 16)
		var wg sync.WaitGroup
		wg.Go(func() { other.Listen(ctx, func(p string) { got <- p }, nil) })
		defer wg.Wait()
		defer cancel()
		if p := <-got; p != "" {
			t.Fatalf("first call: got %q, want the empty resync", p)
		}
		if err := s.Notify(context.Background(), "task web-1"); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-got:
			if p != "task web-1" {
				t.Fatalf("got %q, want %q", p, "task web-1")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no notification within 30s")
		}
	})
}

// TestClaimTaskRace has several coordinators, each with its own
// connection pool, claim the same tasks at once: each task goes to
// exactly one of them.
func TestClaimTaskRace(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, where := db.open(t)
		const tasks, nodes = 50, 4
		var all []store.Task
		for i := range tasks {
			all = append(all, newTask(fmt.Sprint(i), "g", t0))
		}
		if err := s.CreateTasks(ctx, all); err != nil {
			t.Fatal(err)
		}
		stores := []store.Store{s}
		for range nodes - 1 {
			if db.name == "sqlite" {
				stores = append(stores, s) // one file, one writer
				continue
			}
			o, err := db.reopen(ctx, where)
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			stores = append(stores, o)
		}
		var won [tasks]atomic.Int32
		var wg sync.WaitGroup
		for n, st := range stores {
			wg.Go(func() {
				for i := range tasks {
					ok, err := st.ClaimTask(ctx, fmt.Sprint(i), "", fmt.Sprintf("n%d", n))
					if err != nil {
						t.Error(err)
						return
					}
					if ok {
						won[i].Add(1)
					}
				}
			})
		}
		wg.Wait()
		for i := range won {
			if got := won[i].Load(); got != 1 {
				t.Errorf("task %d: claimed %d times, want exactly once", i, got)
			}
		}
	})
}

func TestBlobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		content := make([]byte, 3<<20+17) // more than one chunk
		crand.Read(content)
		sum := sha256.Sum256(content)
		b := store.Blob{Key: "calamari/1.0.0", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(content)), StoredAt: t0}
		if _, err := s.BlobInfo(ctx, b.Key); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("before: got %v, want ErrNotFound", err)
		}
		bad := []struct {
			name string
			blob store.Blob
			data []byte
		}{
			{"short", b, content[:len(content)-1]},
			{"long", b, append(slices.Clone(content), 0)},
			{"other bytes", b, append([]byte{content[0] ^ 1}, content[1:]...)},
		}
		for _, tt := range bad {
			if err := s.PutBlob(ctx, tt.blob, bytes.NewReader(tt.data)); err == nil {
				t.Errorf("%s: got nil error, want a refusal", tt.name)
			}
			if _, err := s.BlobInfo(ctx, b.Key); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("%s: got %v, want nothing stored", tt.name, err)
			}
		}
		if err := s.PutBlob(ctx, b, bytes.NewReader(content)); err != nil {
			t.Fatal(err)
		}
		// Stored already: the second is not even read.
		if err := s.PutBlob(ctx, b, iotest.ErrReader(errors.New("read"))); err != nil {
			t.Fatalf("second put: %v", err)
		}
		if got, err := s.BlobInfo(ctx, b.Key); err != nil || got != b {
			t.Fatalf("info: got %+v, %v; want %+v", got, err, b)
		}
		var out bytes.Buffer
		got, err := s.ReadBlob(ctx, b.Key, &out)
		if err != nil || got != b || !bytes.Equal(out.Bytes(), content) {
			t.Fatalf("read: got %+v, %d bytes (equal %v), %v", got, out.Len(), bytes.Equal(out.Bytes(), content), err)
		}
		if _, err := s.ReadBlob(ctx, "nope", &out); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("read unknown: got %v, want ErrNotFound", err)
		}
	})
}

// TestNodeCapabilities: what a node can do for the others is kept as it
// registered, so that nodes of versions from before a capability are never
// picked for it: dialing listening agents, taking other nodes' calls.
func TestNodeCapabilities(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		for i, want := range []struct{ dials, answers bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
			n := testNode(fmt.Sprintf("n-%d", i), fmt.Sprintf("node-%d", i))
			n.Dials, n.Answers = want.dials, want.answers
			if _, err := s.RegisterNode(ctx, n); err != nil {
				t.Fatal(err)
			}
			got, ok := nodeByID(t, s, n.ID)
			if !ok || got.Dials != want.dials || got.Answers != want.answers {
				t.Fatalf("got dials %v answers %v (found %v), want %+v", got.Dials, got.Answers, ok, want)
			}
		}
	})
}
