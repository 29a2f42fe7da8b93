package access

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

// TestRevokeLastAdminKey: the last valid admin key is refused with a
// conflict that says why and how to get past it, and nothing changes;
// once another admin key exists it may go, and revoking the others is
// never refused.
func TestRevokeLastAdminKey(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "tendril.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(st, zaptest.NewLogger(t))
	create := func(name string, admin bool) string {
		t.Helper()
		role := api.RoleOperator
		if admin {
			role = api.RoleAdmin
		}
		k, err := s.CreateAPIKey(ctx, name, role, nil)
		if err != nil {
			t.Fatal(err)
		}
		return k.ID
	}
	first := create("first-admin", true)
	ci := create("ci", false)
	var second string

	tests := []struct {
		name    string
		before  func()
		id      string
		wantErr []string // parts of the refusal; nil for a revocation
	}{
		{"a standard key", nil, ci, nil},
		{"the only admin key", nil, first, []string{
			`API key "first-admin" (` + first + `) is the last valid admin key`,
			"neither the API nor the admin commands could manage API keys and users",
			"Create another admin key first (tendril-server apikey create NAME --role admin)",
		}},
		{"an admin key once there is another", func() { second = create("second-admin", true) }, first, nil},
		{"the second, now the only one", nil, "", []string{`API key "second-admin"`, "last valid admin key"}},
	}
	for _, tt := range tests {
		if tt.before != nil {
			tt.before()
		}
		id := tt.id
		if id == "" {
			id = second
		}
		v, err := s.RevokeAPIKey(ctx, id)
		if tt.wantErr == nil {
			if err != nil || !v.Revoked {
				t.Fatalf("%s: got %+v, %v; want it revoked", tt.name, v, err)
			}
			continue
		}
		if !errors.Is(err, kind.ErrConflict) {
			t.Fatalf("%s: got %v, want a conflict", tt.name, err)
		}
		for _, want := range tt.wantErr {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s: got %q, want it to say %q", tt.name, err, want)
			}
		}
		keys, err := s.APIKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if k.ID == id && k.Revoked {
				t.Fatalf("%s: got the key revoked after the refusal, want it still valid", tt.name)
			}
		}
	}
}

// TestCreateWithRole: keys and users get the role asked for, a deployer
// with its environments (duplicates whatever their case dropped); a
// deployer without environments, environments for another role and an
// unknown role are refused with what to do, and nothing is created.
func TestCreateWithRole(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "tendril.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(st, zaptest.NewLogger(t))
	tests := []struct {
		name     string
		role     api.Role
		envs     []string
		wantRole api.Role
		wantEnvs []string
		wantErr  string
	}{
		{"no role", "", nil, api.RoleOperator, []string{}, ""},
		{"admin", api.RoleAdmin, nil, api.RoleAdmin, []string{}, ""},
		{"viewer in capitals", "VIEWER", nil, api.RoleViewer, []string{}, ""},
		{"deployer", api.RoleDeployer, []string{"Dev", "Test", "dev"}, api.RoleDeployer, []string{"Dev", "Test"}, ""},
		{"deployer without environments", api.RoleDeployer, nil, "", nil, "a deployer needs at least one environment"},
		{"viewer with an environment", api.RoleViewer, []string{"Dev"}, "", nil, "environments limit a deployer only; the role viewer acts on every environment"},
		{"unknown role", "root", nil, "", nil, `role "root": want admin, operator, deployer or viewer`},
		{"bad environment name", api.RoleDeployer, []string{"a b"}, "", nil, `environment name "a b"`},
	}
	for i, tt := range tests {
		k, kerr := s.CreateAPIKey(ctx, fmt.Sprint("key-", i), tt.role, tt.envs)
		u, uerr := s.CreateUser(ctx, fmt.Sprint("user-", i), "correct horse", tt.role, tt.envs)
		if tt.wantErr != "" {
			for what, err := range map[string]error{"key": kerr, "user": uerr} {
				if !errors.Is(err, kind.ErrBadRequest) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("%s: %s: got %v, want a bad request saying %q", tt.name, what, err, tt.wantErr)
				}
			}
			continue
		}
		if kerr != nil || uerr != nil {
			t.Fatalf("%s: got %v, %v; want both created", tt.name, kerr, uerr)
		}
		if k.Role != tt.wantRole || !slices.Equal(k.Environments, tt.wantEnvs) || k.Admin != (tt.wantRole == api.RoleAdmin) {
			t.Errorf("%s: key got %s %v admin=%v, want %s %v", tt.name, k.Role, k.Environments, k.Admin, tt.wantRole, tt.wantEnvs)
		}
		if u.Role != tt.wantRole || !slices.Equal(u.Environments, tt.wantEnvs) {
			t.Errorf("%s: user got %s %v, want %s %v", tt.name, u.Role, u.Environments, tt.wantRole, tt.wantEnvs)
		}
	}
	keys, _ := s.APIKeys(ctx)
	users, _ := s.Users(ctx)
	if len(keys) != 4 || len(users) != 4 {
		t.Errorf("got %d keys and %d users, want 4 of each: refusals create nothing", len(keys), len(users))
	}
}
