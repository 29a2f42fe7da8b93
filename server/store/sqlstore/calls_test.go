package sqlstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/server/store"
)

func testCall(id, node string, created time.Time) store.NodeCall {
	return store.NodeCall{ID: id, Node: node, From: "asker", AgentID: "agent-1", Action: "health-check",
		Args: []byte(`{"version":"1.0.0"}`), CreatedAt: created}
}

// TestNodeCalls: a call is created for one node, taken once by it,
// answered, read back and deleted; a call not taken yet can be
// withdrawn, one taken cannot.
func TestNodeCalls(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		if err := s.CreateNodeCall(ctx, testCall("c1", "n1", t0)); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateNodeCall(ctx, testCall("c1", "n1", t0)); !errors.Is(err, store.ErrExists) {
			t.Fatalf("same ID again: got %v, want ErrExists", err)
		}
		for _, bad := range []store.NodeCall{
			{ID: "x", Node: "n1", From: "a", AgentID: "a", Action: "a"},               // no time
			{ID: "", Node: "n1", From: "a", AgentID: "a", Action: "a", CreatedAt: t0}, // no ID
			{ID: "y", Node: "", From: "a", AgentID: "a", Action: "a", CreatedAt: t0},  // no node
			{ID: "z", Node: "n1", From: "a", AgentID: "a", Action: "", CreatedAt: t0}, // no action
		} {
			if err := s.CreateNodeCall(ctx, bad); err == nil {
				t.Errorf("create %+v: got nil error, want a refusal", bad)
			}
		}
		if err := s.CreateNodeCall(ctx, testCall("c2", "n2", t0)); err != nil {
			t.Fatal(err)
		}
		got, err := s.NodeCall(ctx, "c1")
		if err != nil || got.Node != "n1" || got.From != "asker" || got.AgentID != "agent-1" || got.Action != "health-check" ||
			string(got.Args) != `{"version":"1.0.0"}` || !got.CreatedAt.Equal(t0) || !got.AcceptedAt.IsZero() || got.Answered() {
			t.Fatalf("read: got %+v, %v; want c1 as created, not taken", got, err)
		}

		// Answering a call not taken is refused: only its node answers,
		// once it took it.
		if err := s.AnswerNodeCall(ctx, store.NodeCall{ID: "c1", Result: []byte(`{}`), AnsweredAt: t0}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("answer before acceptance: got %v, want ErrNotFound", err)
		}
		taken, err := s.AcceptNodeCalls(ctx, "n1", t0.Add(time.Second))
		if err != nil || len(taken) != 1 || taken[0].ID != "c1" || !taken[0].AcceptedAt.Equal(t0.Add(time.Second)) {
			t.Fatalf("accept for n1: got %+v, %v; want c1 only", taken, err)
		}
		if again, err := s.AcceptNodeCalls(ctx, "n1", t0.Add(2*time.Second)); err != nil || len(again) != 0 {
			t.Fatalf("accept again: got %+v, %v; want nothing", again, err)
		}
		if ok, err := s.WithdrawNodeCall(ctx, "c1"); err != nil || ok {
			t.Fatalf("withdraw a taken call: got %v, %v; want false", ok, err)
		}
		if err := s.AnswerNodeCall(ctx, store.NodeCall{ID: "c1", ErrorKind: "not-connected", Error: "agent gone", AnsweredAt: t0.Add(3 * time.Second)}); err != nil {
			t.Fatal(err)
		}
		got, err = s.NodeCall(ctx, "c1")
		if err != nil || !got.Answered() || got.ErrorKind != "not-connected" || got.Error != "agent gone" || got.Result != nil {
			t.Fatalf("answered: got %+v, %v", got, err)
		}

		if ok, err := s.WithdrawNodeCall(ctx, "c2"); err != nil || !ok {
			t.Fatalf("withdraw a waiting call: got %v, %v; want true", ok, err)
		}
		if _, err := s.NodeCall(ctx, "c2"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("withdrawn: got %v, want ErrNotFound", err)
		}
		if err := s.DeleteNodeCall(ctx, "c1"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteNodeCall(ctx, "c1"); err != nil {
			t.Fatalf("delete again: %v", err)
		}
		if err := s.AnswerNodeCall(ctx, store.NodeCall{ID: "c1", Result: []byte(`{}`), AnsweredAt: t0}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("answer a deleted call: got %v, want ErrNotFound", err)
		}

		// Pruned by age.
		for i, at := range []time.Time{t0, t0.Add(time.Hour), t0.Add(2 * time.Hour)} {
			if err := s.CreateNodeCall(ctx, testCall(fmt.Sprint("old-", i), "n3", at)); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := s.PruneNodeCalls(ctx, t0.Add(90*time.Minute)); err != nil || n != 2 {
			t.Fatalf("prune: got %d, %v; want 2", n, err)
		}
		if left, err := s.AcceptNodeCalls(ctx, "n3", t0); err != nil || len(left) != 1 || left[0].ID != "old-2" {
			t.Fatalf("after prune: got %+v, %v; want old-2 only", left, err)
		}
	})
}

// TestAcceptNodeCallsRace: nodes taking the same node's calls at once
// (a notification and a heartbeat's sweep) each get a call at most once.
func TestAcceptNodeCallsRace(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		const calls, takers = 20, 4
		for i := range calls {
			if err := s.CreateNodeCall(ctx, testCall(fmt.Sprint("c", i), "n1", t0.Add(time.Duration(i)))); err != nil {
				t.Fatal(err)
			}
		}
		var mu sync.Mutex
		var got []string
		var wg sync.WaitGroup
		for range takers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				taken, err := s.AcceptNodeCalls(ctx, "n1", t0)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, c := range taken {
					got = append(got, c.ID)
				}
			}()
		}
		wg.Wait()
		slices.Sort(got)
		if len(got) != calls || len(slices.Compact(slices.Clone(got))) != calls {
			t.Fatalf("got %d calls taken (%v), want each of %d once", len(got), got, calls)
		}
	})
}

// TestDeleteBlobs: a blob is deleted by key, and old ones by prefix,
// leaving the others.
func TestDeleteBlobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		put := func(key string, at time.Time) {
			t.Helper()
			content := []byte("content of " + key)
			sum := sha256.Sum256(content)
			if err := s.PutBlob(ctx, store.Blob{Key: key, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(content)), StoredAt: at}, bytes.NewReader(content)); err != nil {
				t.Fatal(err)
			}
		}
		put("call/a", t0)
		put("call/b", t0.Add(time.Hour))
		put("CALL/c", t0)     // another case: not the prefix
		put("callx/d", t0)    // the prefix's letters, not the prefix
		put("calamari/1", t0) // another kind
		put("call/%_e", t0)   // LIKE's wildcards in the key
		if err := s.DeleteBlob(ctx, "call/a"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteBlob(ctx, "call/a"); err != nil {
			t.Fatalf("delete again: %v", err)
		}
		if _, err := s.BlobInfo(ctx, "call/a"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("deleted blob: got %v, want ErrNotFound", err)
		}
		put("call/a", t0) // the key is free again
		if n, err := s.DeleteBlobs(ctx, "call/", t0.Add(time.Minute)); err != nil || n != 2 {
			t.Fatalf("delete old call/ blobs: got %d, %v; want 2 (call/a, call/%%_e)", n, err)
		}
		for key, want := range map[string]bool{"call/a": false, "call/%_e": false, "call/b": true, "CALL/c": true, "callx/d": true, "calamari/1": true} {
			_, err := s.BlobInfo(ctx, key)
			if got := err == nil; got != want {
				t.Errorf("%s: kept %v (%v), want %v", key, got, err, want)
			}
		}
		var out bytes.Buffer
		if _, err := s.ReadBlob(ctx, "call/b", &out); err != nil || out.String() != "content of call/b" {
			t.Errorf("a kept blob: got %q, %v", out.String(), err)
		}
		if pg, ok := s.(*Postgres); ok {
			// The large objects went with their rows.
			var objects, blobs int
			if err := pg.r.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM pg_largeobject_metadata), (SELECT count(*) FROM blobs)`).Scan(&objects, &blobs); err != nil {
				t.Fatal(err)
			}
			if objects != blobs {
				t.Errorf("got %d large objects for %d blobs, want one each", objects, blobs)
			}
		}
	})
}
