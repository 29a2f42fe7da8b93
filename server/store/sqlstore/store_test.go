package sqlstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

// t0 has a nanosecond component so that tests catch any loss of precision.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

func hashOf(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func createToken(t testing.TB, s store.Store, secret, env string, expires time.Time) {
	t.Helper()
	err := s.CreateToken(context.Background(), store.Token{
		ID: "id-" + secret, Hash: hashOf(secret), Environment: env,
		CreatedAt: t0, ExpiresAt: expires,
	})
	if err != nil {
		t.Fatalf("CreateToken(%s): %v", secret, err)
	}
}

// enroll creates a token for the agent and registers it, for tests whose
// subject is not Register.
func enroll(t testing.TB, s store.Store, name, env, thumbprint string) store.Agent {
	t.Helper()
	createToken(t, s, "secret-"+name, env, t0.Add(time.Hour))
	res, err := s.Register(context.Background(), store.RegisterParams{
		TokenHash: hashOf("secret-" + name), Thumbprint: thumbprint, Name: name,
		Now: t0, NewID: "agent-" + name,
	})
	if err != nil {
		t.Fatalf("Register(%s): %v", name, err)
	}
	return res.Agent
}

func mustAgent(t *testing.T, s store.Store, id string) store.Agent {
	t.Helper()
	a, err := s.AgentByID(context.Background(), id)
	if err != nil {
		t.Fatalf("AgentByID(%s): %v", id, err)
	}
	return a
}

func mustRevoked(t *testing.T, s store.Store, thumbprint string, want bool) {
	t.Helper()
	got, err := s.IsRevoked(context.Background(), thumbprint)
	if err != nil {
		t.Fatalf("IsRevoked(%s): %v", thumbprint, err)
	}
	if got != want {
		t.Errorf("IsRevoked(%s): got %v, want %v", thumbprint, got, want)
	}
}

func tokenByHash(t *testing.T, s store.Store, hash string) store.Token {
	t.Helper()
	tokens, err := s.ListTokens(context.Background())
	if err != nil {
		t.Fatalf("ListTokens: %v", err)
	}
	for _, tok := range tokens {
		if tok.Hash == hash {
			return tok
		}
	}
	t.Fatalf("token %s not listed", hash)
	return store.Token{}
}

func TestMigrations(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, where := db.open(t)
		v, err := db.version(s)
		if err != nil {
			t.Fatal(err)
		}
		if v != SchemaVersion {
			t.Errorf("fresh database: got version %d, want %d", v, SchemaVersion)
		}
		first := db.applied(t, s)
		if len(first) != SchemaVersion {
			t.Errorf("got %d schema_migrations rows, want %d", len(first), SchemaVersion)
		}
		for v := 1; v <= SchemaVersion; v++ {
			if _, ok := first[v]; !ok {
				t.Errorf("fresh database: version %d not applied, want 1 to %d", v, SchemaVersion)
			}
		}
		if err := s.SetSetting(ctx, "kept", "yes"); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		s2, err := db.reopen(ctx, where)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer s2.Close()
		if second := db.applied(t, s2); !reflect.DeepEqual(second, first) {
			t.Errorf("reopen changed schema_migrations: got %v, want %v", second, first)
		}
		if got, err := s2.Setting(ctx, "kept"); err != nil || got != "yes" {
			t.Errorf("after reopen: got %q, %v, want %q, nil", got, err, "yes")
		}
	})
}

func TestRecordHealth10k(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		ids := db.seedAgents(t, s, 10_000)
		results := healthBatch(ids)
		start := time.Now()
		if err := s.RecordHealth(ctx, results); err != nil {
			t.Fatalf("RecordHealth: %v", err)
		}
		t.Logf("10,000 results in %v", time.Since(start))

		agents, err := s.ListAgents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, a := range agents {
			if a.Health == api.HealthHealthy && a.LastHealthAt.Equal(results[0].At) {
				n++
			}
		}
		if n != len(ids) {
			t.Errorf("got %d agents updated, want %d", n, len(ids))
		}
	})
}

func BenchmarkRecordHealth10k(b *testing.B) {
	for _, db := range backends {
		b.Run(db.name, func(b *testing.B) {
			ctx := context.Background()
			s, _ := db.open(b)
			results := healthBatch(db.seedAgents(b, s, 10_000))
			for b.Loop() {
				if err := s.RecordHealth(ctx, results); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestClose(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		s, _ := db.open(t)
		if err := s.Close(); err != nil {
			t.Fatalf("first Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: got %v, want nil", err)
		}
		if _, err := s.ListAgents(context.Background()); err == nil {
			t.Error("ListAgents after Close: got nil error, want one")
		}
	})
}

func TestRegister(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		createToken(t, s, "good", "prod", t0.Add(time.Hour))
		res, err := s.Register(ctx, store.RegisterParams{
			TokenHash: hashOf("good"), Thumbprint: "tp-new", Name: "web-1",
			Now: t0, NewID: "id-1",
		})
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		want := store.Agent{
			ID: "id-1", Name: "web-1", Environment: "prod", Thumbprint: "tp-new",
			Health: api.HealthUnavailable, DiskFree: -1, RegisteredAt: t0,
		}
		if !reflect.DeepEqual(res.Agent, want) {
			t.Errorf("got agent %+v, want %+v", res.Agent, want)
		}
		if res.Replaced != nil {
			t.Errorf("got Replaced %v, want nil", res.Replaced)
		}
		if got := mustAgent(t, s, "id-1"); !reflect.DeepEqual(got, want) {
			t.Errorf("stored: got %+v, want %+v", got, want)
		}
		tok := tokenByHash(t, s, hashOf("good"))
		if !tok.UsedAt.Equal(t0) || tok.UsedBy != "tp-new" {
			t.Errorf("token: got UsedAt %v UsedBy %q, want %v %q", tok.UsedAt, tok.UsedBy, t0, "tp-new")
		}
	})
}

func TestRegisterEnvironment(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		tests := []struct {
			env, want string
		}{
			{"", "staging"},
			{"staging", "staging"},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%q", tt.env), func(t *testing.T) {
				s, _ := db.open(t)
				createToken(t, s, "good", "staging", t0.Add(time.Hour))
				res, err := s.Register(ctx, store.RegisterParams{
					TokenHash: hashOf("good"), Thumbprint: "tp", Name: "web-1",
					Environment: tt.env, Now: t0, NewID: "id-1",
				})
				if err != nil {
					t.Fatalf("Register: %v", err)
				}
				if res.Agent.Environment != tt.want {
					t.Errorf("got environment %q, want %q", res.Agent.Environment, tt.want)
				}
			})
		}
	})
}

func TestRegisterErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		expires := t0.Add(time.Hour)
		base := store.RegisterParams{
			TokenHash: hashOf("good"), Thumbprint: "tp-new", Name: "web-new",
			Environment: "prod", Now: t0, NewID: "id-new",
		}
		tests := []struct {
			name    string
			setup   func(t *testing.T, s store.Store)
			change  func(p *store.RegisterParams)
			wantErr error  // nil means any error
			wantMsg string // a substring of the error, if set
		}{
			{
				name:    "unknown token",
				change:  func(p *store.RegisterParams) { p.TokenHash = hashOf("bad") },
				wantErr: store.ErrTokenInvalid,
			},
			{
				name: "used by another certificate",
				setup: func(t *testing.T, s store.Store) {
					p := base
					p.Thumbprint, p.Name, p.NewID = "tp-other", "web-other", "id-other"
					if _, err := s.Register(ctx, p); err != nil {
						t.Fatal(err)
					}
				},
				wantErr: store.ErrTokenUsed,
			},
			{
				name: "used by this certificate whose agent was deleted",
				setup: func(t *testing.T, s store.Store) {
					if _, err := s.Register(ctx, base); err != nil {
						t.Fatal(err)
					}
					if err := s.DeleteAgent(ctx, base.NewID); err != nil {
						t.Fatal(err)
					}
				},
				change:  func(p *store.RegisterParams) { p.Force = true },
				wantErr: store.ErrTokenUsed,
			},
			{
				name:    "expired by a nanosecond",
				change:  func(p *store.RegisterParams) { p.Now = expires.Add(time.Nanosecond) },
				wantErr: store.ErrTokenExpired,
			},
			{
				name:    "other environment",
				change:  func(p *store.RegisterParams) { p.Environment = "staging" },
				wantErr: store.ErrTokenInvalid,
				wantMsg: `token is for environment "prod"`,
			},
			{
				name:    "name taken",
				setup:   func(t *testing.T, s store.Store) { enroll(t, s, "web-new", "prod", "tp-existing") },
				wantErr: store.ErrNameTaken,
			},
			{
				name:    "thumbprint taken",
				setup:   func(t *testing.T, s store.Store) { enroll(t, s, "web-existing", "prod", "tp-new") },
				wantErr: store.ErrThumbprintTaken,
			},
			{
				name:    "same name and thumbprint already registered",
				setup:   func(t *testing.T, s store.Store) { enroll(t, s, "web-new", "prod", "tp-new") },
				wantErr: store.ErrThumbprintTaken,
			},
			{
				name: "thumbprint is another agent's next thumbprint",
				setup: func(t *testing.T, s store.Store) {
					a := enroll(t, s, "web-existing", "prod", "tp-existing")
					if err := s.SetNextThumbprint(ctx, a.ID, "tp-new"); err != nil {
						t.Fatal(err)
					}
				},
				wantErr: store.ErrThumbprintTaken,
			},
			{
				name: "revoked thumbprint without force",
				setup: func(t *testing.T, s store.Store) {
					a := enroll(t, s, "web-old", "prod", "tp-new")
					if err := s.DeleteAgent(ctx, a.ID); err != nil {
						t.Fatal(err)
					}
				},
				wantErr: store.ErrRevoked,
				wantMsg: "revoked (deleted)",
			},
			{
				name: "revoked thumbprint with force",
				setup: func(t *testing.T, s store.Store) {
					a := enroll(t, s, "web-old", "prod", "tp-new")
					if err := s.DeleteAgent(ctx, a.ID); err != nil {
						t.Fatal(err)
					}
				},
				change:  func(p *store.RegisterParams) { p.Force = true },
				wantErr: store.ErrRevoked,
				wantMsg: "revoked (deleted)",
			},
			{
				name:    "force across environments, by name",
				setup:   func(t *testing.T, s store.Store) { enroll(t, s, "web-new", "dev", "tp-existing") },
				change:  func(p *store.RegisterParams) { p.Force = true },
				wantErr: store.ErrOtherEnvironment,
				wantMsg: `agent "web-new" is in environment "dev", not the token's "prod"`,
			},
			{
				name:    "force across environments, by thumbprint",
				setup:   func(t *testing.T, s store.Store) { enroll(t, s, "web-dev", "dev", "tp-new") },
				change:  func(p *store.RegisterParams) { p.Force = true },
				wantErr: store.ErrOtherEnvironment,
				wantMsg: `agent "web-dev" is in environment "dev"`,
			},
			{
				name: "force across environments, one of two in the way",
				setup: func(t *testing.T, s store.Store) {
					enroll(t, s, "web-new", "prod", "tp-existing")
					enroll(t, s, "web-dev", "dev", "tp-new")
				},
				change:  func(p *store.RegisterParams) { p.Force = true },
				wantErr: store.ErrOtherEnvironment,
				wantMsg: `agent "web-dev" is in environment "dev"`,
			},
			{
				name:    "name taken in another environment, without force",
				setup:   func(t *testing.T, s store.Store) { enroll(t, s, "web-new", "dev", "tp-existing") },
				wantErr: store.ErrOtherEnvironment,
			},
			{name: "empty name", change: func(p *store.RegisterParams) { p.Name = "" }},
			{name: "empty thumbprint", change: func(p *store.RegisterParams) { p.Thumbprint = "" }},
			{name: "empty ID", change: func(p *store.RegisterParams) { p.NewID = "" }},
			{
				name:   "time out of range",
				change: func(p *store.RegisterParams) { p.Now = time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC) },
			},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s, _ := db.open(t)
				createToken(t, s, "good", "prod", expires)
				if tt.setup != nil {
					tt.setup(t, s)
				}
				before, err := s.ListAgents(ctx)
				if err != nil {
					t.Fatal(err)
				}
				tokBefore := tokenByHash(t, s, hashOf("good"))

				p := base
				if tt.change != nil {
					tt.change(&p)
				}
				res, err := s.Register(ctx, p)
				if err == nil {
					t.Fatalf("got agent %+v, want an error", res.Agent)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("got error %v, want %v", err, tt.wantErr)
				}
				if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("got error %q, want it to contain %q", err, tt.wantMsg)
				}
				if prefix := fmt.Sprintf("register agent %q: ", p.Name); !strings.HasPrefix(err.Error(), prefix) {
					t.Errorf("got error %q, want prefix %q", err, prefix)
				}

				// A refused registration must change nothing.
				after, err := s.ListAgents(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(after, before) {
					t.Errorf("agents changed: got %+v, want %+v", after, before)
				}
				if tok := tokenByHash(t, s, hashOf("good")); !reflect.DeepEqual(tok, tokBefore) {
					t.Errorf("token changed: got %+v, want %+v", tok, tokBefore)
				}
			})
		}
	})
}

func TestRegisterExpiryBoundary(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		expires := t0.Add(time.Hour)
		tests := []struct {
			now     time.Time
			wantErr error
		}{
			{expires.Add(-time.Nanosecond), nil},
			{expires, nil},
			{expires.Add(time.Nanosecond), store.ErrTokenExpired},
		}
		for _, tt := range tests {
			t.Run(tt.now.Sub(expires).String(), func(t *testing.T) {
				s, _ := db.open(t)
				createToken(t, s, "good", "prod", expires)
				_, err := s.Register(ctx, store.RegisterParams{
					TokenHash: hashOf("good"), Thumbprint: "tp", Name: "web-1", Now: tt.now, NewID: "id-1",
				})
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("got error %v, want %v", err, tt.wantErr)
				}
			})
		}
	})
}

func TestRegisterIdempotentRetry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		createToken(t, s, "good", "prod", t0.Add(time.Hour))
		p := store.RegisterParams{TokenHash: hashOf("good"), Thumbprint: "tp", Name: "web-1", Now: t0, NewID: "id-1"}
		first, err := s.Register(ctx, p)
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		if err := s.RecordConnection(ctx, store.Connection{AgentID: "id-1", Version: "1.2.3", Features: []string{"a", "b"}, At: t0.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		want := mustAgent(t, s, "id-1")
		if !slices.Equal(want.Features, []string{"a", "b"}) {
			t.Fatalf("features: got %v, want [a b]", want.Features)
		}

		// The retry comes later, possibly after expiry, with a fresh ID.
		p.Now, p.NewID = t0.Add(2*time.Hour), "id-2"
		again, err := s.Register(ctx, p)
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		if !reflect.DeepEqual(again.Agent, want) {
			t.Errorf("retry: got agent %+v, want %+v", again.Agent, want)
		}
		if again.Replaced != nil {
			t.Errorf("retry: got Replaced %v, want nil", again.Replaced)
		}
		if again.Agent.ID != first.Agent.ID {
			t.Errorf("retry: got ID %s, want %s", again.Agent.ID, first.Agent.ID)
		}
		agents, err := s.ListAgents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(agents) != 1 {
			t.Errorf("got %d agents, want 1", len(agents))
		}
		if tok := tokenByHash(t, s, hashOf("good")); !tok.UsedAt.Equal(t0) {
			t.Errorf("retry changed UsedAt: got %v, want %v", tok.UsedAt, t0)
		}
	})
}

func TestRegisterForce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		byName := enroll(t, s, "web-1", "prod", "tp-1")
		if err := s.SetNextThumbprint(ctx, byName.ID, "tp-1-next"); err != nil {
			t.Fatal(err)
		}
		byName = mustAgent(t, s, byName.ID)
		byThumb := enroll(t, s, "web-2", "prod", "tp-2")
		bystander := enroll(t, s, "web-3", "prod", "tp-3")

		createToken(t, s, "force", "prod", t0.Add(time.Hour))
		now := t0.Add(time.Minute)
		p := store.RegisterParams{
			TokenHash: hashOf("force"), Thumbprint: "tp-2", Name: "web-1",
			Force: true, Now: now, NewID: "id-new",
		}
		res, err := s.Register(ctx, p)
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		if want := []store.Agent{byName, byThumb}; !reflect.DeepEqual(res.Replaced, want) {
			t.Errorf("got Replaced %+v, want %+v", res.Replaced, want)
		}
		if res.Agent.ID != "id-new" || res.Agent.Name != "web-1" || res.Agent.Thumbprint != "tp-2" {
			t.Errorf("got agent %+v, want id-new web-1 tp-2", res.Agent)
		}

		agents, err := s.ListAgents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := []store.Agent{res.Agent, bystander}; !reflect.DeepEqual(agents, want) {
			t.Errorf("got agents %+v, want %+v", agents, want)
		}
		for _, tt := range []struct {
			thumbprint string
			want       bool
		}{
			{"tp-1", true},
			{"tp-1-next", true},
			{"tp-2", false}, // the new agent's
			{"tp-3", false},
		} {
			mustRevoked(t, s, tt.thumbprint, tt.want)
		}
		if a, err := s.AgentByThumbprint(ctx, "tp-2"); err != nil || a.ID != "id-new" {
			t.Errorf("AgentByThumbprint(tp-2): got %s, %v, want id-new, nil", a.ID, err)
		}
		if _, err := s.AgentByThumbprint(ctx, "tp-1-next"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("AgentByThumbprint(tp-1-next): got %v, want ErrNotFound", err)
		}
		if tok := tokenByHash(t, s, hashOf("force")); !tok.UsedAt.Equal(now) || tok.UsedBy != "tp-2" {
			t.Errorf("token: got UsedAt %v UsedBy %q, want %v tp-2", tok.UsedAt, tok.UsedBy, now)
		}
	})
}

func TestRegisterForceWithoutConflict(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		s, _ := db.open(t)
		createToken(t, s, "good", "prod", t0.Add(time.Hour))
		res, err := s.Register(context.Background(), store.RegisterParams{
			TokenHash: hashOf("good"), Thumbprint: "tp", Name: "web-1", Force: true, Now: t0, NewID: "id-1",
		})
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		if res.Replaced != nil {
			t.Errorf("got Replaced %v, want nil", res.Replaced)
		}
	})
}

// TestRegisterAfterDelete is the re-registration of a deleted agent: its
// old certificate stays revoked, and the same name with a new certificate
// is registered.
func TestRegisterAfterDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		old := enroll(t, s, "web-1", "prod", "tp-1")
		if err := s.DeleteAgent(ctx, old.ID); err != nil {
			t.Fatal(err)
		}
		mustRevoked(t, s, "tp-1", true)

		createToken(t, s, "again", "prod", t0.Add(time.Hour))
		res, err := s.Register(ctx, store.RegisterParams{
			TokenHash: hashOf("again"), Thumbprint: "tp-2", Name: "web-1", Force: true, Now: t0, NewID: "id-2",
		})
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		if res.Replaced != nil || res.Agent.Name != "web-1" || res.Agent.Thumbprint != "tp-2" {
			t.Errorf("got agent %+v, replaced %v; want web-1 with tp-2, nothing replaced", res.Agent, res.Replaced)
		}
		mustRevoked(t, s, "tp-1", true)
		mustRevoked(t, s, "tp-2", false)
	})
}

func TestRevocationReason(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		deleted := enroll(t, s, "web-1", "prod", "tp-deleted")
		if err := s.DeleteAgent(ctx, deleted.ID); err != nil {
			t.Fatal(err)
		}
		enroll(t, s, "web-2", "prod", "tp-replaced")
		createToken(t, s, "force", "prod", t0.Add(time.Hour))
		if _, err := s.Register(ctx, store.RegisterParams{
			TokenHash: hashOf("force"), Thumbprint: "tp-new", Name: "web-2", Force: true, Now: t0, NewID: "id-new",
		}); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			thumbprint, want string
			wantErr          error
		}{
			{"tp-deleted", store.RevokedDeleted, nil},
			{"tp-replaced", store.RevokedReplaced, nil},
			{"tp-new", "", store.ErrNotFound},
			{"tp-never-seen", "", store.ErrNotFound},
		} {
			got, err := s.RevocationReason(ctx, tt.thumbprint)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("RevocationReason(%s): got %q, %v; want %q, %v", tt.thumbprint, got, err, tt.want, tt.wantErr)
			}
		}
	})
}

func TestAgentLookups(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a := enroll(t, s, "web-1", "prod", "tp-1")
		if err := s.SetNextThumbprint(ctx, a.ID, "tp-1-next"); err != nil {
			t.Fatal(err)
		}
		a = mustAgent(t, s, a.ID)
		enroll(t, s, "web-2", "prod", "tp-2")

		tests := []struct {
			name    string
			lookup  func() (store.Agent, error)
			wantErr error
		}{
			{"by thumbprint", func() (store.Agent, error) { return s.AgentByThumbprint(ctx, "tp-1") }, nil},
			{"by next thumbprint", func() (store.Agent, error) { return s.AgentByThumbprint(ctx, "tp-1-next") }, nil},
			{"by ID", func() (store.Agent, error) { return s.AgentByID(ctx, a.ID) }, nil},
			{"by name", func() (store.Agent, error) { return s.AgentByName(ctx, "web-1") }, nil},
			{"unknown thumbprint", func() (store.Agent, error) { return s.AgentByThumbprint(ctx, "tp-x") }, store.ErrNotFound},
			{"empty thumbprint", func() (store.Agent, error) { return s.AgentByThumbprint(ctx, "") }, store.ErrNotFound},
			{"unknown ID", func() (store.Agent, error) { return s.AgentByID(ctx, "nope") }, store.ErrNotFound},
			{"unknown name", func() (store.Agent, error) { return s.AgentByName(ctx, "nope") }, store.ErrNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := tt.lookup()
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got error %v, want %v", err, tt.wantErr)
				}
				if tt.wantErr == nil && !reflect.DeepEqual(got, a) {
					t.Errorf("got %+v, want %+v", got, a)
				}
			})
		}
	})
}

func TestListAgents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		s, _ := db.open(t)
		got, err := s.ListAgents(context.Background())
		if err != nil || len(got) != 0 {
			t.Fatalf("empty store: got %v, %v, want none, nil", got, err)
		}
		enroll(t, s, "b", "prod", "tp-1")
		enroll(t, s, "a", "staging", "tp-2")
		enroll(t, s, "c", "dev", "tp-3")
		enroll(t, s, "a2", "prod", "tp-4")
		agents, err := s.ListAgents(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, a := range agents {
			names = append(names, a.Environment+"/"+a.Name)
		}
		if want := []string{"dev/c", "prod/a2", "prod/b", "staging/a"}; !reflect.DeepEqual(names, want) {
			t.Errorf("got %v, want %v", names, want)
		}
	})
}

// Ordering is bytewise, as SQLite's default collation is, whatever
// locale a PostgreSQL database was created with: upper case before lower,
// and no skipping of punctuation.
func TestListAgentsByteOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		s, _ := db.open(t)
		for i, name := range []string{"b", "a-2", "B", "a1", "a"} {
			enroll(t, s, name, "Prod", fmt.Sprint("tp-", i))
		}
		enroll(t, s, "z", "dev", "tp-z")
		agents, err := s.ListAgents(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, a := range agents {
			names = append(names, a.Environment+"/"+a.Name)
		}
		if want := []string{"Prod/B", "Prod/a", "Prod/a-2", "Prod/a1", "Prod/b", "dev/z"}; !reflect.DeepEqual(names, want) {
			t.Errorf("got %v, want %v", names, want)
		}
	})
}

func TestDeleteAgent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a := enroll(t, s, "web-1", "prod", "tp-1")
		if err := s.SetNextThumbprint(ctx, a.ID, "tp-1-next"); err != nil {
			t.Fatal(err)
		}
		other := enroll(t, s, "web-2", "prod", "tp-2")

		if err := s.DeleteAgent(ctx, a.ID); err != nil {
			t.Fatalf("DeleteAgent: %v", err)
		}
		if _, err := s.AgentByID(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("AgentByID after delete: got %v, want ErrNotFound", err)
		}
		mustRevoked(t, s, "tp-1", true)
		mustRevoked(t, s, "tp-1-next", true)
		mustRevoked(t, s, "tp-2", false)
		if got := mustAgent(t, s, other.ID); !reflect.DeepEqual(got, other) {
			t.Errorf("other agent: got %+v, want %+v", got, other)
		}

		err := s.DeleteAgent(ctx, a.ID)
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second delete: got %v, want ErrNotFound", err)
		}
		if err != nil && !strings.Contains(err.Error(), a.ID) {
			t.Errorf("error %q does not name the agent", err)
		}
	})
}

func TestIsRevoked(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		s, _ := db.open(t)
		mustRevoked(t, s, "tp-never-seen", false)
		mustRevoked(t, s, "", false)
	})
}

func TestRecordConnection(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a := enroll(t, s, "web-1", "prod", "tp-1")
		c := store.Connection{
			AgentID: a.ID, Version: "2.0.1", OS: "windows", Arch: "amd64", Protocol: 3,
			TLSVersion: "1.3", CalamariVersions: []string{"28.1.0", "29.0.2"}, At: t0.Add(time.Minute),
		}
		if err := s.RecordConnection(ctx, c); err != nil {
			t.Fatalf("RecordConnection: %v", err)
		}
		want := a
		want.Version, want.OS, want.Arch, want.Protocol, want.TLSVersion = "2.0.1", "windows", "amd64", 3, "1.3"
		want.CalamariVersions, want.LastSeen = c.CalamariVersions, c.At
		if got := mustAgent(t, s, a.ID); !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}

		c.AgentID = "nope"
		if err := s.RecordConnection(ctx, c); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown agent: got %v, want ErrNotFound", err)
		}
	})
}

func TestRecordHealth(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a := enroll(t, s, "web-1", "prod", "tp-1")
		b := enroll(t, s, "web-2", "prod", "tp-2")
		if err := s.RecordConnection(ctx, store.Connection{AgentID: b.ID, Version: "1.0.0", At: t0}); err != nil {
			t.Fatal(err)
		}
		b = mustAgent(t, s, b.ID)

		at := t0.Add(time.Minute)
		results := []store.HealthResult{
			{AgentID: a.ID, Health: api.HealthWarning, Detail: "TLS 1.0 is deprecated", RTT: 1500 * time.Microsecond,
				Version: "2.0.0", CalamariVersions: []string{"29.0.0"}, DiskFree: 1 << 40, At: at},
			{AgentID: "deleted-meanwhile", Health: api.HealthHealthy, At: at},
			{AgentID: b.ID, Health: api.HealthUnhealthy, Detail: "timed out", DiskFree: -1, At: at},
		}
		if err := s.RecordHealth(ctx, results); err != nil {
			t.Fatalf("RecordHealth: %v", err)
		}

		wantA := a
		wantA.Health, wantA.HealthDetail, wantA.HealthRTT = api.HealthWarning, "TLS 1.0 is deprecated", 1500*time.Microsecond
		wantA.Version, wantA.CalamariVersions, wantA.DiskFree, wantA.LastHealthAt = "2.0.0", []string{"29.0.0"}, 1<<40, at
		wantA.LastSeen = at // an answered check is a sighting
		if got := mustAgent(t, s, a.ID); !reflect.DeepEqual(got, wantA) {
			t.Errorf("a: got %+v, want %+v", got, wantA)
		}
		wantB := b // the empty Version keeps the known one; a failed check is no sighting
		wantB.Health, wantB.HealthDetail, wantB.DiskFree, wantB.LastHealthAt = api.HealthUnhealthy, "timed out", -1, at
		if got := mustAgent(t, s, b.ID); !reflect.DeepEqual(got, wantB) {
			t.Errorf("b: got %+v, want %+v", got, wantB)
		}

		if err := s.RecordHealth(ctx, nil); err != nil {
			t.Errorf("empty batch: got %v, want nil", err)
		}
	})
}

func TestRecordHealthRejectsBadBatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		tests := []struct {
			name string
			bad  store.HealthResult
		}{
			{"unknown health", store.HealthResult{Health: "sort of ok", At: t0}},
			{"time out of range", store.HealthResult{Health: api.HealthHealthy, At: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s, _ := db.open(t)
				a := enroll(t, s, "web-1", "prod", "tp-1")
				tt.bad.AgentID = a.ID
				good := store.HealthResult{AgentID: a.ID, Health: api.HealthHealthy, At: t0}
				if err := s.RecordHealth(ctx, []store.HealthResult{good, tt.bad}); err == nil {
					t.Fatal("got nil error, want one")
				}
				if got := mustAgent(t, s, a.ID); !reflect.DeepEqual(got, a) {
					t.Errorf("a failed batch changed the agent: got %+v, want %+v", got, a)
				}
			})
		}
	})
}

func healthBatch(ids []string) []store.HealthResult {
	results := make([]store.HealthResult, len(ids))
	for i, id := range ids {
		results[i] = store.HealthResult{
			AgentID: id, Health: api.HealthHealthy, RTT: time.Millisecond, Version: "2.0.0",
			CalamariVersions: []string{"29.0.0"}, DiskFree: 10 << 30, At: t0.Add(time.Minute),
		}
	}
	return results
}

func TestTouchAgents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a := enroll(t, s, "web-1", "prod", "tp-1")
		b := enroll(t, s, "web-2", "prod", "tp-2")
		c := enroll(t, s, "web-3", "prod", "tp-3")
		at := t0.Add(time.Hour)
		if err := s.TouchAgents(ctx, []string{a.ID, "gone", b.ID}, at); err != nil {
			t.Fatalf("TouchAgents: %v", err)
		}
		for _, tt := range []struct {
			id   string
			want time.Time
		}{
			{a.ID, at},
			{b.ID, at},
			{c.ID, time.Time{}},
		} {
			if got := mustAgent(t, s, tt.id).LastSeen; !got.Equal(tt.want) {
				t.Errorf("%s: got LastSeen %v, want %v", tt.id, got, tt.want)
			}
		}
		if err := s.TouchAgents(ctx, nil, at); err != nil {
			t.Errorf("no IDs: got %v, want nil", err)
		}
	})
}

func TestSetNextThumbprint(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		tests := []struct {
			name     string
			id, next string
			wantErr  error
			wantNext string
		}{
			{name: "new certificate", id: "agent-web-1", next: "tp-1-next", wantNext: "tp-1-next"},
			{name: "replaces a pending one", id: "agent-web-1", next: "tp-1-other", wantNext: "tp-1-other"},
			{name: "empty cancels", id: "agent-web-1", next: "", wantNext: ""},
			{name: "own thumbprint is a no-op", id: "agent-web-1", next: "tp-1", wantNext: "tp-1-pending"},
			{name: "another agent's thumbprint", id: "agent-web-1", next: "tp-2", wantErr: store.ErrThumbprintTaken, wantNext: "tp-1-pending"},
			{name: "another agent's next thumbprint", id: "agent-web-1", next: "tp-2-next", wantErr: store.ErrThumbprintTaken, wantNext: "tp-1-pending"},
			{name: "revoked", id: "agent-web-1", next: "tp-revoked", wantErr: store.ErrThumbprintTaken, wantNext: "tp-1-pending"},
			{name: "unknown agent", id: "nope", next: "tp-x", wantErr: store.ErrNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s, _ := db.open(t)
				a := enroll(t, s, "web-1", "prod", "tp-1")
				b := enroll(t, s, "web-2", "prod", "tp-2")
				gone := enroll(t, s, "web-gone", "prod", "tp-revoked")
				for _, step := range []error{
					s.SetNextThumbprint(ctx, a.ID, "tp-1-pending"),
					s.SetNextThumbprint(ctx, b.ID, "tp-2-next"),
					s.DeleteAgent(ctx, gone.ID),
				} {
					if step != nil {
						t.Fatal(step)
					}
				}

				err := s.SetNextThumbprint(ctx, tt.id, tt.next)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got error %v, want %v", err, tt.wantErr)
				}
				if tt.wantErr == store.ErrNotFound {
					return
				}
				if got := mustAgent(t, s, a.ID).NextThumbprint; got != tt.wantNext {
					t.Errorf("got NextThumbprint %q, want %q", got, tt.wantNext)
				}
				if got := mustAgent(t, s, b.ID).NextThumbprint; got != "tp-2-next" {
					t.Errorf("other agent: got NextThumbprint %q, want tp-2-next", got)
				}
			})
		}
	})
}

func TestPromoteThumbprint(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a := enroll(t, s, "web-1", "prod", "tp-1")

		if err := s.PromoteThumbprint(ctx, a.ID); err != nil {
			t.Fatalf("without next thumbprint: %v", err)
		}
		if got := mustAgent(t, s, a.ID); !reflect.DeepEqual(got, a) {
			t.Errorf("no-op promote changed the agent: got %+v, want %+v", got, a)
		}
		mustRevoked(t, s, "tp-1", false)

		if err := s.SetNextThumbprint(ctx, a.ID, "tp-1-next"); err != nil {
			t.Fatal(err)
		}
		if err := s.PromoteThumbprint(ctx, a.ID); err != nil {
			t.Fatalf("PromoteThumbprint: %v", err)
		}
		got := mustAgent(t, s, a.ID)
		if got.Thumbprint != "tp-1-next" || got.NextThumbprint != "" {
			t.Errorf("got Thumbprint %q NextThumbprint %q, want tp-1-next and empty", got.Thumbprint, got.NextThumbprint)
		}
		mustRevoked(t, s, "tp-1", true)
		mustRevoked(t, s, "tp-1-next", false)
		if _, err := s.AgentByThumbprint(ctx, "tp-1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("old thumbprint lookup: got %v, want ErrNotFound", err)
		}

		if err := s.PromoteThumbprint(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown agent: got %v, want ErrNotFound", err)
		}
	})
}

func TestSetServerThumbprintAck(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a := enroll(t, s, "web-1", "prod", "tp-1")
		if err := s.SetServerThumbprintAck(ctx, a.ID, "server-tp"); err != nil {
			t.Fatalf("SetServerThumbprintAck: %v", err)
		}
		if got := mustAgent(t, s, a.ID).ServerThumbprintAck; got != "server-tp" {
			t.Errorf("got %q, want server-tp", got)
		}
		if err := s.SetServerThumbprintAck(ctx, "nope", "server-tp"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown agent: got %v, want ErrNotFound", err)
		}
	})
}

func TestTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		if got, err := s.ListTokens(ctx); err != nil || len(got) != 0 {
			t.Fatalf("empty store: got %v, %v, want none, nil", got, err)
		}
		older := store.Token{ID: "t1", Hash: hashOf("1"), Environment: "prod", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
		newer := store.Token{ID: "t2", Hash: hashOf("2"), Environment: "dev", CreatedAt: t0.Add(time.Second),
			ExpiresAt: t0.Add(2 * time.Hour), UsedAt: t0.Add(time.Minute), UsedBy: "tp"}
		for _, tok := range []store.Token{older, newer} {
			if err := s.CreateToken(ctx, tok); err != nil {
				t.Fatalf("CreateToken(%s): %v", tok.ID, err)
			}
		}
		got, err := s.ListTokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := []store.Token{newer, older}; !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}

		bad := []struct {
			name string
			tok  store.Token
		}{
			{"duplicate hash", store.Token{ID: "t3", Hash: hashOf("1"), CreatedAt: t0, ExpiresAt: t0}},
			{"duplicate ID", store.Token{ID: "t1", Hash: hashOf("3"), CreatedAt: t0, ExpiresAt: t0}},
			{"no expiry", store.Token{ID: "t4", Hash: hashOf("4"), CreatedAt: t0}},
			{"no creation time", store.Token{ID: "t5", Hash: hashOf("5"), ExpiresAt: t0}},
			{"expiry out of range", store.Token{ID: "t6", Hash: hashOf("6"), CreatedAt: t0,
				ExpiresAt: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)}},
		}
		for _, tt := range bad {
			t.Run(tt.name, func(t *testing.T) {
				err := s.CreateToken(ctx, tt.tok)
				if err == nil {
					t.Fatal("got nil error, want one")
				}
				if !strings.HasPrefix(err.Error(), "create token "+tt.tok.ID+": ") {
					t.Errorf("got error %q, want it to name the token", err)
				}
			})
		}
	})
}

func TestAPIKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		valid := store.APIKey{ID: "k1", Name: "ci", Hash: hashOf("key1"), CreatedAt: t0, Role: api.RoleOperator}
		revoked := store.APIKey{ID: "k2", Name: "old", Hash: hashOf("key2"), CreatedAt: t0, RevokedAt: t0.Add(time.Hour), Role: api.RoleOperator}
		for _, k := range []store.APIKey{valid, revoked} {
			if err := s.CreateAPIKey(ctx, k); err != nil {
				t.Fatalf("CreateAPIKey(%s): %v", k.ID, err)
			}
		}
		if err := s.CreateAPIKey(ctx, store.APIKey{ID: "k3", Name: "dup", Hash: hashOf("key1"), CreatedAt: t0, Role: api.RoleOperator}); err == nil {
			t.Error("duplicate hash: got nil error, want one")
		}

		tests := []struct {
			hash    string
			want    store.APIKey
			wantErr error
		}{
			{hashOf("key1"), valid, nil},
			{hashOf("key2"), store.APIKey{}, store.ErrNotFound},
			{hashOf("unknown"), store.APIKey{}, store.ErrNotFound},
		}
		for _, tt := range tests {
			got, err := s.APIKeyByHash(ctx, tt.hash)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("APIKeyByHash(%.8s): got error %v, want %v", tt.hash, err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("APIKeyByHash(%.8s): got %+v, want %+v", tt.hash, got, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), tt.hash) {
				t.Errorf("error %q leaks the key hash", err)
			}
		}
	})
}

func TestSettings(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		if _, err := s.Setting(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unset: got %v, want ErrNotFound", err)
		}
		for _, v := range []string{"one", "two", ""} {
			if err := s.SetSetting(ctx, "k", v); err != nil {
				t.Fatalf("SetSetting(%q): %v", v, err)
			}
			got, err := s.Setting(ctx, "k")
			if err != nil || got != v {
				t.Errorf("got %q, %v, want %q, nil", got, err, v)
			}
		}
	})
}

func TestConcurrentWriters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		const n = 50
		for i := range n {
			createToken(t, s, fmt.Sprint("secret-", i), "prod", t0.Add(time.Hour))
		}
		ids := db.seedAgents(t, s, n)

		var wg sync.WaitGroup
		errs := make(chan error, 4*n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				switch i % 3 {
				case 0:
					_, err := s.Register(ctx, store.RegisterParams{
						TokenHash: hashOf(fmt.Sprint("secret-", i)), Thumbprint: fmt.Sprint("tp-", i),
						Name: fmt.Sprint("web-", i), Now: t0, NewID: fmt.Sprint("id-", i),
					})
					errs <- err
				case 1:
					errs <- s.RecordConnection(ctx, store.Connection{
						AgentID: ids[i], Version: "2.0.0", TLSVersion: "1.3", At: t0.Add(time.Duration(i)),
					})
				case 2:
					errs <- s.RecordHealth(ctx, healthBatch(ids))
				}
				_, err := s.ListAgents(ctx)
				errs <- err
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("concurrent call: %v", err)
			}
		}

		agents, err := s.ListAgents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := n + (n+2)/3; len(agents) != want {
			t.Errorf("got %d agents, want %d", len(agents), want)
		}
	})
}

func TestSetCalamariVersions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a := enroll(t, s, "web-1", "prod", "tp-1")
		for _, want := range [][]string{{"2.0.0", "1.0.0"}, {"2.0.0"}} {
			if err := s.SetCalamariVersions(ctx, a.ID, want); err != nil {
				t.Fatal(err)
			}
			if got := mustAgent(t, s, a.ID).CalamariVersions; !reflect.DeepEqual(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		}
		if err := s.SetCalamariVersions(ctx, "nope", []string{"1.0.0"}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown agent: got %v, want ErrNotFound", err)
		}
	})
}

// TestRecordHealthWork checks that an agent's work report is stored with
// its health, and that a result without one (an older agent, a failed
// check) keeps the report stored before rather than erasing it.
func TestRecordHealthWork(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		a := enroll(t, s, "web-1", "prod", "tp-1")
		if got := mustAgent(t, s, a.ID).Work; got != nil {
			t.Fatalf("before any report: got %+v, want nil", got)
		}
		cleanup := t0.Add(30 * time.Second)
		report := &api.AgentWork{Tasks: 12, Running: 1, Bytes: 5 << 20, Keep: 10, MinFreeBytes: 1 << 30,
			LastCleanup: &cleanup, LastRemoved: 2, RemovedTotal: 7, BelowFloor: true, ReportedAt: t0.Add(time.Minute)}
		steps := []struct {
			name string
			work *api.AgentWork
			want *api.AgentWork
		}{
			{"reported", report, report},
			{"no report keeps the last", nil, report},
		}
		for i, st := range steps {
			at := t0.Add(time.Duration(i+1) * time.Minute)
			if err := s.RecordHealth(ctx, []store.HealthResult{{AgentID: a.ID, Health: api.HealthHealthy, Work: st.work, At: at}}); err != nil {
				t.Fatalf("%s: RecordHealth: %v", st.name, err)
			}
			if got := mustAgent(t, s, a.ID).Work; !reflect.DeepEqual(got, st.want) {
				t.Fatalf("%s: got %+v, want %+v", st.name, got, st.want)
			}
		}
	})
}
