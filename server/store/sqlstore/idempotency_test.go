package sqlstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/server/store"
)

func TestIdempotencyKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		k := store.IdempotencyKey{Scope: `API key "ci" POST /api/tasks`, Key: "k1", RequestSHA256: "aa", Ref: "ref-1", Node: "n1", CreatedAt: t0}

		got, reserved, err := s.ReserveIdempotencyKey(ctx, k)
		if err != nil || !reserved || got.Ref != "ref-1" {
			t.Fatalf("first reserve: got %+v, %v, %v; want reserved ref-1", got, reserved, err)
		}
		// The same key again, from another node with another ref: the
		// first record comes back, running.
		again := k
		again.Ref, again.Node, again.RequestSHA256 = "ref-2", "n2", "bb"
		got, reserved, err = s.ReserveIdempotencyKey(ctx, again)
		if err != nil || reserved || got.Ref != "ref-1" || got.Node != "n1" || got.RequestSHA256 != "aa" || got.Status != 0 || got.Body != nil || !got.CreatedAt.Equal(t0) {
			t.Fatalf("second reserve: got %+v, %v, %v; want the first record, running", got, reserved, err)
		}
		// Another scope is another key.
		other := k
		other.Scope = `API key "ops" POST /api/tasks`
		if _, reserved, err := s.ReserveIdempotencyKey(ctx, other); err != nil || !reserved {
			t.Fatalf("same key, other scope: got %v, %v; want reserved", reserved, err)
		}

		// Released only by the node that holds it.
		if err := s.ReleaseIdempotencyKey(ctx, k.Scope, k.Key, "n2"); err != nil {
			t.Fatal(err)
		}
		if _, reserved, _ := s.ReserveIdempotencyKey(ctx, again); reserved {
			t.Fatal("released by a node that does not hold it: want the record kept")
		}

		if err := s.CompleteIdempotencyKey(ctx, k.Scope, k.Key, 201, []byte(`[{"id":"t"}]`), t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		got, _, err = s.ReserveIdempotencyKey(ctx, again)
		if err != nil || got.Status != 201 || string(got.Body) != `[{"id":"t"}]` || !got.CompletedAt.Equal(t0.Add(time.Second)) {
			t.Fatalf("after complete: got %+v, %v; want 201 with the body", got, err)
		}
		// A completed record is not released.
		if err := s.ReleaseIdempotencyKey(ctx, k.Scope, k.Key, ""); err != nil {
			t.Fatal(err)
		}
		if _, reserved, _ := s.ReserveIdempotencyKey(ctx, again); reserved {
			t.Fatal("a completed record was released")
		}
		// A secret answer is completed without a body.
		if err := s.CompleteIdempotencyKey(ctx, other.Scope, other.Key, 201, nil, t0); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := s.ReserveIdempotencyKey(ctx, other); got.Status != 201 || got.Body != nil {
			t.Fatalf("secret answer: got %+v, want 201 and no body", got)
		}
		if err := s.CompleteIdempotencyKey(ctx, "nobody", "k", 201, nil, t0); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("complete an unknown key: got %v, want ErrNotFound", err)
		}

		newer := store.IdempotencyKey{Scope: "s", Key: "new", RequestSHA256: "cc", Ref: "r", CreatedAt: t0.Add(time.Hour)}
		if _, _, err := s.ReserveIdempotencyKey(ctx, newer); err != nil {
			t.Fatal(err)
		}
		n, err := s.PurgeIdempotencyKeys(ctx, t0.Add(time.Minute))
		if err != nil || n != 2 {
			t.Fatalf("purge: got %d, %v; want the 2 older records", n, err)
		}
		if _, reserved, _ := s.ReserveIdempotencyKey(ctx, k); !reserved {
			t.Fatal("a purged key is still recorded")
		}
	})
}
