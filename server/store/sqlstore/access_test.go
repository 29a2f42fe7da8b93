package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

func TestUsers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		alice := store.User{ID: "u1", Name: "Alice", PasswordHash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA", CreatedAt: t0, Role: api.RoleAdmin}
		bob := store.User{ID: "u2", Name: "bob", PasswordHash: "h2", CreatedAt: t0.Add(time.Second), Role: api.RoleViewer}
		for _, u := range []store.User{bob, alice} {
			if err := s.CreateUser(ctx, u); err != nil {
				t.Fatalf("CreateUser(%s): %v", u.Name, err)
			}
		}
		for _, dup := range []store.User{
			{ID: "u3", Name: "alice", PasswordHash: "x", CreatedAt: t0, Role: api.RoleOperator},
			{ID: "u4", Name: "ALICE", PasswordHash: "x", CreatedAt: t0, Role: api.RoleOperator},
			{ID: "u1", Name: "carol", PasswordHash: "x", CreatedAt: t0, Role: api.RoleOperator},
		} {
			if err := s.CreateUser(ctx, dup); !errors.Is(err, store.ErrExists) {
				t.Errorf("CreateUser(%s, id %s): got %v, want ErrExists", dup.Name, dup.ID, err)
			}
		}
		if err := s.CreateUser(ctx, store.User{ID: "u5", Name: "dave", PasswordHash: "x"}); err == nil {
			t.Error("CreateUser without a creation time: got nil error, want one")
		}

		lookups := []struct {
			name    string
			get     func() (store.User, error)
			want    store.User
			wantErr error
		}{
			{"by name", func() (store.User, error) { return s.UserByName(ctx, "Alice") }, alice, nil},
			{"by name in another case", func() (store.User, error) { return s.UserByName(ctx, "aLiCe") }, alice, nil},
			{"by unknown name", func() (store.User, error) { return s.UserByName(ctx, "mallory") }, store.User{}, store.ErrNotFound},
			{"by invalid UTF-8 name", func() (store.User, error) { return s.UserByName(ctx, "al\xffice") }, store.User{}, store.ErrNotFound},
			{"by id", func() (store.User, error) { return s.UserByID(ctx, "u2") }, bob, nil},
			{"by unknown id", func() (store.User, error) { return s.UserByID(ctx, "u9") }, store.User{}, store.ErrNotFound},
		}
		for _, tt := range lookups {
			got, err := tt.get()
			if !errors.Is(err, tt.wantErr) || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s: got %+v, %v; want %+v, %v", tt.name, got, err, tt.want, tt.wantErr)
			}
		}

		all, err := s.ListUsers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := []store.User{alice, bob}; !reflect.DeepEqual(all, want) {
			t.Fatalf("ListUsers: got %+v, want %+v (by name, whatever the case)", all, want)
		}

		got, err := s.DeleteUser(ctx, "ALICE")
		if err != nil || got.ID != "u1" {
			t.Fatalf("DeleteUser(ALICE): got %+v, %v; want Alice", got, err)
		}
		if _, err := s.DeleteUser(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("DeleteUser again: got %v, want ErrNotFound", err)
		}
		if _, err := s.UserByID(ctx, "u1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("UserByID after delete: got %v, want ErrNotFound", err)
		}
		// The name is free again.
		if err := s.CreateUser(ctx, store.User{ID: "u6", Name: "alice", PasswordHash: "x", CreatedAt: t0, Role: api.RoleOperator}); err != nil {
			t.Fatalf("CreateUser(alice) after the delete: %v", err)
		}
	})
}

func TestListAndRevokeAPIKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		admin := store.APIKey{ID: "k1", Name: "admin", Hash: hashOf("key1"), CreatedAt: t0, Role: api.RoleAdmin, Admin: true}
		ci := store.APIKey{ID: "k2", Name: "ci", Hash: hashOf("key2"), CreatedAt: t0.Add(time.Minute), Role: api.RoleOperator}
		for _, k := range []store.APIKey{admin, ci} {
			if err := s.CreateAPIKey(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := s.APIKeyByHash(ctx, hashOf("key1")); err != nil || !got.Admin {
			t.Fatalf("APIKeyByHash(admin): got %+v, %v; want the admin key", got, err)
		}
		keys, err := s.ListAPIKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := []store.APIKey{ci, admin}; !reflect.DeepEqual(keys, want) {
			t.Fatalf("ListAPIKeys: got %+v, want %+v (newest first)", keys, want)
		}

		at := t0.Add(time.Hour)
		tests := []struct {
			name    string
			id      string
			wantErr error
		}{
			{"unknown key", "k9", store.ErrNotFound},
			{"the only admin key", "k1", store.ErrLastAdminKey},
			{"a plain key", "k2", nil},
			{"a revoked key again", "k2", nil},
		}
		for _, tt := range tests {
			got, err := s.RevokeAPIKey(ctx, tt.id, at)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("%s: got %v, want %v", tt.name, err, tt.wantErr)
			}
			if err == nil && (got.ID != tt.id || !got.RevokedAt.Equal(at)) {
				t.Fatalf("%s: got %+v, want %s revoked at %s", tt.name, got, tt.id, at)
			}
		}
		if _, err := s.APIKeyByHash(ctx, hashOf("key2")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("APIKeyByHash(revoked): got %v, want ErrNotFound", err)
		}
		if _, err := s.APIKeyByHash(ctx, hashOf("key1")); err != nil {
			t.Fatalf("the last admin key after a refused revocation: got %v, want it still valid", err)
		}
		// With a second admin key, the first can go; then the second is
		// the last.
		second := store.APIKey{ID: "k3", Name: "admin-2", Hash: hashOf("key3"), CreatedAt: t0, Role: api.RoleAdmin, Admin: true}
		if err := s.CreateAPIKey(ctx, second); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RevokeAPIKey(ctx, "k1", at); err != nil {
			t.Fatalf("revoke an admin key with another left: %v", err)
		}
		if _, err := s.RevokeAPIKey(ctx, "k3", at); !errors.Is(err, store.ErrLastAdminKey) {
			t.Fatalf("revoke the remaining admin key: got %v, want ErrLastAdminKey", err)
		}
		keys, _ = s.ListAPIKeys(ctx)
		revoked := map[string]bool{}
		for _, k := range keys {
			revoked[k.ID] = !k.RevokedAt.IsZero()
		}
		if want := map[string]bool{"k1": true, "k2": true, "k3": false}; !reflect.DeepEqual(revoked, want) {
			t.Fatalf("revoked keys: got %v, want %v", revoked, want)
		}
	})
}

// Of two admin keys revoked at once, one revocation must fail: otherwise
// no admin key would be left.
func TestRevokeLastAdminKeysRace(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		create := func(id string) {
			if err := s.CreateAPIKey(ctx, store.APIKey{ID: id, Name: id, Hash: hashOf(id), CreatedAt: t0, Role: api.RoleAdmin, Admin: true}); err != nil {
				t.Fatal(err)
			}
		}
		// Each round races the key left valid by the last round against
		// a new one.
		left := "first"
		create(left)
		for round := range 5 {
			ids := []string{left, fmt.Sprint("new-", round)}
			create(ids[1])
			errs := make([]error, len(ids))
			var wg sync.WaitGroup
			for i, id := range ids {
				wg.Go(func() { _, errs[i] = s.RevokeAPIKey(ctx, id, t0) })
			}
			wg.Wait()
			failed := 0
			for _, err := range errs {
				switch {
				case err == nil:
				case errors.Is(err, store.ErrLastAdminKey):
					failed++
				default:
					t.Fatalf("round %d: got %v, want nil or ErrLastAdminKey", round, err)
				}
			}
			if failed != 1 {
				t.Fatalf("round %d: got %d refusals (%v), want exactly 1", round, failed, errs)
			}
			for i, err := range errs {
				if err != nil {
					left = ids[i]
				}
			}
		}
	})
}

func TestDeleteToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		createToken(t, s, "keep", "prod", t0.Add(time.Hour))
		createToken(t, s, "drop", "prod", t0.Add(time.Hour))
		if err := s.DeleteToken(ctx, "id-drop"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteToken(ctx, "id-drop"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("delete twice: got %v, want ErrNotFound", err)
		}
		// A deleted token enrolls nobody.
		_, err := s.Register(ctx, store.RegisterParams{TokenHash: hashOf("drop"), Thumbprint: "tp-1", Name: "web-1", Now: t0, NewID: "a1"})
		if !errors.Is(err, store.ErrTokenInvalid) {
			t.Fatalf("register with a deleted token: got %v, want ErrTokenInvalid", err)
		}
		tokens, err := s.ListTokens(ctx)
		if err != nil || len(tokens) != 1 || tokens[0].ID != "id-keep" {
			t.Fatalf("tokens after delete: got %+v, %v; want only id-keep", tokens, err)
		}
	})
}

// Keys made before the migration that added admin keys could do
// everything; after it they still can.
func TestMigrationKeepsOldKeysAdmin(t *testing.T) {
	ctx := context.Background()
	t.Run("sqlite", func(t *testing.T) {
		migs, err := loadMigrations()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "tendril.db")
		old, err := openSQLite(ctx, path, Options{}, migs[:4])
		if err != nil {
			t.Fatal(err)
		}
		_, err = old.w.ExecContext(ctx, `INSERT INTO api_keys (id, name, hash, created_at) VALUES ('k1', 'admin', ?, ?)`, hashOf("key1"), t0.UnixNano())
		old.Close()
		if err != nil {
			t.Fatal(err)
		}
		s, err := OpenSQLite(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if k, err := s.APIKeyByHash(ctx, hashOf("key1")); err != nil || !k.Admin {
			t.Fatalf("old key after the migration: got %+v, %v; want an admin key", k, err)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		migs, err := loadPostgresMigrations()
		if err != nil {
			t.Fatal(err)
		}
		url := pg.Cluster(t).NewDatabase(t)
		old, err := openPostgres(ctx, url, migs[:4])
		if err != nil {
			t.Fatal(err)
		}
		_, err = old.w.ExecContext(ctx, `INSERT INTO api_keys (id, name, hash, created_at) VALUES ('k1', 'admin', ?, ?)`, hashOf("key1"), t0.UnixNano())
		old.Close()
		if err != nil {
			t.Fatal(err)
		}
		s, err := OpenPostgres(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if k, err := s.APIKeyByHash(ctx, hashOf("key1")); err != nil || !k.Admin {
			t.Fatalf("old key after the migration: got %+v, %v; want an admin key", k, err)
		}
	})
}

// TestRolesRoundTrip: a deployer's environments and every role are read
// back as written, and a credential without a known role is refused
// rather than stored as something it would later be read as.
func TestRolesRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db backend) {
		ctx := context.Background()
		s, _ := db.open(t)
		for i, r := range api.Roles {
			var envs []string
			if r == api.RoleDeployer {
				envs = []string{"Dev", "Test"}
			}
			k := store.APIKey{ID: fmt.Sprint("k", i), Name: string(r), Hash: hashOf(string(r)), CreatedAt: t0, Role: r, Environments: envs, Admin: r == api.RoleAdmin}
			if err := s.CreateAPIKey(ctx, k); err != nil {
				t.Fatalf("CreateAPIKey(%s): %v", r, err)
			}
			if got, err := s.APIKeyByHash(ctx, k.Hash); err != nil || !reflect.DeepEqual(got, k) {
				t.Errorf("API key of role %s: got %+v, %v; want %+v", r, got, err, k)
			}
			u := store.User{ID: fmt.Sprint("u", i), Name: string(r), PasswordHash: "x", CreatedAt: t0, Role: r, Environments: envs}
			if err := s.CreateUser(ctx, u); err != nil {
				t.Fatalf("CreateUser(%s): %v", r, err)
			}
			if got, err := s.UserByID(ctx, u.ID); err != nil || !reflect.DeepEqual(got, u) {
				t.Errorf("user of role %s: got %+v, %v; want %+v", r, got, err, u)
			}
		}
		for _, role := range []api.Role{"", "root"} {
			if err := s.CreateAPIKey(ctx, store.APIKey{ID: "bad", Name: "bad", Hash: hashOf("bad"), CreatedAt: t0, Role: role}); err == nil {
				t.Errorf("CreateAPIKey with role %q: got nil error, want a refusal", role)
			}
			if err := s.CreateUser(ctx, store.User{ID: "bad", Name: "bad", PasswordHash: "x", CreatedAt: t0, Role: role}); err == nil {
				t.Errorf("CreateUser with role %q: got nil error, want a refusal", role)
			}
		}
		// The admin column follows the role, whatever the caller said.
		if err := s.CreateAPIKey(ctx, store.APIKey{ID: "liar", Name: "liar", Hash: hashOf("liar"), CreatedAt: t0, Role: api.RoleViewer, Admin: true}); err != nil {
			t.Fatal(err)
		}
		if got, err := s.APIKeyByHash(ctx, hashOf("liar")); err != nil || got.Admin {
			t.Errorf("viewer key stored with Admin set: got %+v, %v; want it not an admin key", got, err)
		}
	})
}

// TestRolesMigration: keys and users made before roles keep what they
// could do: an admin key stays admin, another key becomes an operator,
// and a console user, who could manage users and API keys, an admin.
func TestRolesMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tendril.db")
	migs, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	var before []migration
	for _, m := range migs {
		// By its name, not its number: a merge may renumber it.
		if strings.TrimLeft(m.name, "0123456789") != "_roles.sql" {
			before = append(before, m)
			continue
		}
		break
	}
	if len(before) == len(migs) {
		t.Fatal("no roles migration found")
	}
	old, err := openSQLite(ctx, path, Options{}, before)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO api_keys (id, name, hash, created_at, admin) VALUES ('k1', 'admin', 'h1', 1, 1)`,
		`INSERT INTO api_keys (id, name, hash, created_at, admin) VALUES ('k2', 'ci', 'h2', 2, 0)`,
		`INSERT INTO users (id, name, password_hash, created_at) VALUES ('u1', 'alice', 'x', 1)`,
	} {
		if _, err := old.w.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	old.Close()
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	keys, err := s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]api.Role{}
	for _, k := range keys {
		got[k.Name] = k.Role
		if k.Environments != nil {
			t.Errorf("key %s: got environments %v, want none", k.Name, k.Environments)
		}
	}
	u, err := s.UserByName(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	got["user alice"] = u.Role
	if want := map[string]api.Role{"admin": api.RoleAdmin, "ci": api.RoleOperator, "user alice": api.RoleAdmin}; !reflect.DeepEqual(got, want) {
		t.Errorf("roles after the migration: got %v, want %v", got, want)
	}
}
