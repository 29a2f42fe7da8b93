package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/server/diagnostics"
)

func readArchive(t *testing.T, path string) diag.Archive {
	t.Helper()
	a, err := diag.ReadFile(path, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestDiagnosticsCommands: "agents diagnostics NAME" writes the agent's
// archive as the coordinator collects it, "diagnostics" the running
// coordinator's own; neither holds the admin key; a folder that holds no
// coordinator and an unknown agent are refused without an archive.
func TestDiagnosticsCommands(t *testing.T) {
	dir, _ := startCoordinatorCmd(t)
	startRealAgent(t, dir, "web-1", "Production")
	waitFor(t, "web-1 connected", func() bool {
		code, out, _ := cli(t, context.Background(), nil, "agents", "list", "--data", dir)
		return code == 0 && strings.Contains(out, "web-1") && strings.Contains(out, "yes")
	})
	out := t.TempDir()
	key, err := os.ReadFile(filepath.Join(dir, api.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	noAdminKey := func(t *testing.T, a diag.Archive) {
		t.Helper()
		files, err := a.Flatten(1 << 30)
		if err != nil {
			t.Fatal(err)
		}
		for name, b := range files {
			if bytes.Contains(b, bytes.TrimSpace(key)) || bytes.Contains(b, []byte("PRIVATE KEY")) {
				t.Errorf("%s holds the admin key or a private key", name)
			}
		}
	}

	agentOut := filepath.Join(out, "web-1.tar.gz")
	code, stdout, stderr := cli(t, context.Background(), nil, "agents", "diagnostics", "web-1", "--data", dir, "--out", agentOut)
	if code != 0 || !strings.HasPrefix(stdout, "Wrote "+agentOut+": ") {
		t.Fatalf("agents diagnostics: %d %q %q", code, stdout, stderr)
	}
	a := readArchive(t, agentOut)
	if _, ok := a.Files[diagnostics.AgentArchiveName]; !ok || a.Manifest.Kind != diag.KindAgentFromCoordinator {
		t.Errorf("agent archive: got kind %q, missing %+v; want the agent's own archive inside", a.Manifest.Kind, a.Manifest.Missing)
	}
	noAdminKey(t, a)

	coordOut := filepath.Join(out, "coordinator.tar.gz")
	code, stdout, stderr = cli(t, context.Background(), nil, "diagnostics", "--data", dir, "--out", coordOut)
	if code != 0 || !strings.HasPrefix(stdout, "Wrote "+coordOut+": ") {
		t.Fatalf("diagnostics: %d %q %q", code, stdout, stderr)
	}
	c := readArchive(t, coordOut)
	for _, name := range []string{"versions.json", "config/run.json", "config/server.json", "certificates.json", "nodes.json", "agents.json", diag.GoroutinesName} {
		if _, ok := c.Files[name]; !ok {
			t.Errorf("coordinator archive: no %s; missing %+v, notes %q", name, c.Manifest.Missing, c.Manifest.Notes)
		}
	}
	if !strings.Contains(string(c.Files["agents.json"]), `"web-1"`) || !strings.Contains(string(c.Files[diag.GoroutinesName]), "goroutine ") {
		t.Errorf("coordinator archive: got agents %s and a %d-byte dump, want web-1 and the running coordinator's goroutines", c.Files["agents.json"], len(c.Files[diag.GoroutinesName]))
	}
	noAdminKey(t, c)

	refusals := []struct {
		name string
		args []string
		msg  string
	}{
		{"no data folder", []string{"diagnostics", "--data", filepath.Join(out, "nowhere")}, "does not exist"},
		{"unknown agent", []string{"agents", "diagnostics", "nobody", "--data", dir}, `no agent named "nobody"`},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(out, tt.name+".tar.gz")
			code, _, stderr := cli(t, context.Background(), nil, append(tt.args, "--out", file)...)
			if code != 1 || !strings.Contains(stderr, tt.msg) {
				t.Fatalf("got %d %q, want 1 saying %q", code, stderr, tt.msg)
			}
			if _, err := os.Stat(file); !os.IsNotExist(err) {
				t.Fatalf("%s: got %v, want no archive", file, err)
			}
		})
	}
	if entries, _ := os.ReadDir(out); len(entries) != 2 {
		t.Errorf("the output folder holds %d files, want the 2 archives and no temporary file", len(entries))
	}
}
