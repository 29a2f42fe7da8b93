package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/server/kind"
)

// TestImportNamesAgentsPinningAnotherKey: an agent that pinned another
// signing key than its coordinator's shows a warning saying so, and an
// import names it among those that will refuse what was imported.
func TestImportNamesAgentsPinningAnotherKey(t *testing.T) {
	ctx := context.Background()
	src := startServer(t, nil)
	src.upload(t, packBundle(t, "1.0.0", 0))
	var export bytes.Buffer
	if err := src.Export(ctx, &export); err != nil {
		t.Fatal(err)
	}

	dst := startServer(t, nil)
	home := registerAgent(t, dst, dst.AgentAddr(), "odd-1", nil)
	other, _ := certs.NewSigningKey()
	path := filepath.Join(home, "agent.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	st["signing_key"] = other.Public()
	if b, err = json.Marshal(st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	startAgent(t, home, nil)
	startAgent(t, registerAgent(t, dst, dst.AgentAddr(), "fine-1", nil), nil)
	dst.waitConnected(t, "odd-1")
	dst.waitConnected(t, "fine-1")
	// Until its first health check is stored the agent may show another
	// state; the warning is added to a healthy one.
	eventually(t, "odd-1 warned about the key it trusts", func() bool {
		v := dst.agentView(t, "odd-1")
		return v.Health == api.HealthWarning && strings.Contains(v.HealthDetail, "trusts another signing key ("+other.Public()+")")
	})

	res, err := dst.Import(ctx, &export, api.ImportOptions{SourceKey: src.Info().SigningKey})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Refusing, []string{"odd-1"}) || len(res.Items) != 1 || res.Items[0].Result != "imported" {
		t.Fatalf("import: got refusing %v items %+v, want [odd-1] and Calamari imported", res.Refusing, res.Items)
	}
	if res.SourceKey != src.Info().SigningKey || res.SigningKey != dst.Info().SigningKey {
		t.Fatalf("import: got keys %s -> %s, want %s -> %s", res.SourceKey, res.SigningKey, src.Info().SigningKey, dst.Info().SigningKey)
	}
}

// TestImportRefusesConflictsWhole: an export holding a version stored
// here with other content is refused before anything is stored.
func TestImportRefusesConflictsWhole(t *testing.T) {
	ctx := context.Background()
	src := startServer(t, nil)
	src.upload(t, packBundle(t, "1.0.0", 0))
	src.upload(t, packBundle(t, "1.1.0", 0))
	var export bytes.Buffer
	if err := src.Export(ctx, &export); err != nil {
		t.Fatal(err)
	}
	dst := startServer(t, nil)
	dst.upload(t, packBundle(t, "1.0.0", 100)) // other content, same version
	_, err := dst.Import(ctx, &export, api.ImportOptions{TrustAnySource: true})
	if !errors.Is(err, kind.ErrConflict) || !strings.Contains(err.Error(), "stored here already with other content: Calamari 1.0.0") {
		t.Fatalf("got %v, want a conflict naming Calamari 1.0.0", err)
	}
	if bs, _ := dst.CalamariBundles(ctx); len(bs) != 1 {
		t.Fatalf("got %d bundles stored, want only the one that was there", len(bs))
	}
	if _, err := dst.Import(ctx, bytes.NewReader(nil), api.ImportOptions{}); !errors.Is(err, kind.ErrBadRequest) {
		t.Fatalf("import without a source key: got %v, want a bad request", err)
	}
}
