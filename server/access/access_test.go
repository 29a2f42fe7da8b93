package access

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

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
		k, err := s.CreateAPIKey(ctx, name, admin)
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
			"Create another admin key first (tendril-server apikey create NAME --admin)",
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
