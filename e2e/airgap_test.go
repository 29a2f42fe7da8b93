package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/servertest"
)

// coordinator initializes a data folder and runs a coordinator on
// loopback, returning the folder.
func coordinator(t *testing.T) string {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	mustRun(t, "tendril-server", "init", "--data", data)
	start(t, "tendril-server", "run", "--data", data, "--listen", servertest.FreeAddr(t), "--http", servertest.FreeAddr(t), "--health-interval", "1s")
	waitFor(t, "coordinator API", func() bool { return listAgents(t, data) != nil })
	return data
}

// TestAirGappedImport: agent packages and Calamari move from one
// coordinator to another as a file (everything on loopback), the second
// rolls an agent enrolled with it forward with them, and damaged files
// and downgrades are refused.
func TestAirGappedImport(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the upgrade exercises the Unix re-exec path")
	}
	online, offline := coordinator(t), coordinator(t)
	mustRun(t, "tendril-server", "calamari", "push", filepath.Join(binDir, "calamari.tar.gz"), "--data", online)
	pushAgent := func(data, version, file string) {
		mustRun(t, "tendril-server", "agent-package", "push", "--version", version, "--os", runtime.GOOS, "--arch", runtime.GOARCH,
			filepath.Join(binDir, file), "--data", data)
	}
	pushAgent(online, "2.0.0", "agent-2.0.0")
	export := filepath.Join(t.TempDir(), "tendril-export.tar.gz")
	if out := mustRun(t, "tendril-server", "export", "--out", export, "--data", online); !strings.Contains(out, "exported to "+export) ||
		!strings.Contains(out, "--source-key "+serverInfo(t, online).SigningKey) {
		t.Fatalf("export printed %q", out)
	}
	raw, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}

	// Damaged files are refused, and nothing is stored.
	bad := func(name string, b []byte) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := append([]byte(nil), raw...)
	for i := range 16 {
		flipped[len(flipped)/2+i] ^= 0xff
	}
	for _, tt := range []struct{ name, file string }{
		{"truncated", bad("half.tar.gz", raw[:len(raw)/2])},
		{"bytes changed", bad("flipped.tar.gz", flipped)},
	} {
		_, stderr, code := runCode(t, "tendril-server", "import", tt.file, "--trust-any-source", "--data", offline)
		if code == 0 || !strings.Contains(stderr, "export file is damaged") {
			t.Fatalf("import of a %s file: exit %d, want a refusal saying it is damaged\n%s", tt.name, code, stderr)
		}
	}
	if out := mustRun(t, "tendril-server", "calamari", "list", "--data", offline); strings.Contains(out, testVersion) {
		t.Fatalf("a refused import stored Calamari:\n%s", out)
	}
	// Without the source's key, or a word that any source will do, the
	// file is refused before it is sent.
	if _, stderr, code := runCode(t, "tendril-server", "import", export, "--data", offline); code != 2 || !strings.Contains(stderr, "give --source-key KEY") {
		t.Fatalf("import without --source-key: exit %d\n%s", code, stderr)
	}
	// A key other than the exporting coordinator's is refused.
	offlineKey := serverInfo(t, offline).SigningKey
	if _, stderr, code := runCode(t, "tendril-server", "import", export, "--source-key", offlineKey, "--data", offline); code == 0 ||
		!strings.Contains(stderr, "signed by another coordinator than expected") {
		t.Fatalf("import expecting another key: exit %d\n%s", code, stderr)
	}

	onlineKey := serverInfo(t, online).SigningKey
	out := mustRun(t, "tendril-server", "import", export, "--source-key", onlineKey, "--data", offline)
	for _, want := range []string{"Calamari " + testVersion, "agent 2.0.0 " + runtime.GOOS + "/" + runtime.GOARCH, "imported", "stored signed with this coordinator's key " + offlineKey, "checked with the key " + onlineKey} {
		if !strings.Contains(out, want) {
			t.Fatalf("import output lacks %q:\n%s", want, out)
		}
	}

	// An agent enrolled with the offline coordinator is rolled forward
	// with what was imported: it verifies the package with the key it
	// pinned there.
	join := strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", offline, "--environment", "Production"))
	home, exe := filepath.Join(t.TempDir(), "home"), filepath.Join(t.TempDir(), "bin", "tendril-agent")
	copyFile(t, filepath.Join(binDir, "agent-1.0.0"), exe)
	if out, err := exec.Command(exe, "register", "--home", home, "--name", "web-1", "--join", join).CombinedOutput(); err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	t.Cleanup(func() { killHomeAgent(home) })
	startPath(t, exe, "run", "--home", home)
	waitFor(t, "web-1 at 1.0.0", func() bool { return agentVersion(t, offline, "web-1") == "1.0.0" })
	if _, stderr, code := runCode(t, "tendril-server", "upgrade", "--environment", "Production", "--version", "2.0.0", "--grace", "5s", "--wait", "--data", offline); code != 0 {
		t.Fatalf("upgrade from the imported package: exit %d\n%s", code, stderr)
	}
	waitFor(t, "web-1 at 2.0.0", func() bool { return agentVersion(t, offline, "web-1") == "2.0.0" })

	// A package older than what the fleet runs is refused, unless asked
	// for, and then only after a backup snapshot. Pushed as the version
	// built into it: the coordinator refuses any other.
	pushAgent(online, "1.0.0", "agent-1.0.0")
	mustRun(t, "tendril-server", "export", "--out", export, "--data", online)
	_, stderr, code := runCode(t, "tendril-server", "import", export, "--source-key", onlineKey, "--data", offline)
	if code == 0 || !strings.Contains(stderr, "agent 1.0.0 for "+runtime.GOOS+"/"+runtime.GOARCH+" (agents run 2.0.0)") || !strings.Contains(stderr, "--allow-downgrade") {
		t.Fatalf("import of an older package: exit %d, want a refusal naming it and --allow-downgrade\n%s", code, stderr)
	}
	out = mustRun(t, "tendril-server", "import", export, "--source-key", onlineKey, "--allow-downgrade", "--data", offline)
	if !strings.Contains(out, "copy of the database taken before the downgrade: pre-import-") || !strings.Contains(out, "agent 1.0.0") {
		t.Fatalf("import --allow-downgrade:\n%s", out)
	}
}

// agentVersion is the version the coordinator lists for a connected
// agent, "" if it is not connected.
func agentVersion(t *testing.T, data, name string) string {
	for _, r := range listAgents(t, data) {
		if r.Name == name && r.Connected {
			return r.Version
		}
	}
	return ""
}

// serverInfo is what tendril-server info --json says of the coordinator.
func serverInfo(t *testing.T, data string) api.ServerInfo {
	t.Helper()
	var in api.ServerInfo
	if err := json.Unmarshal([]byte(mustRun(t, "tendril-server", "info", "--json", "--data", data)), &in); err != nil {
		t.Fatalf("info --json: %v", err)
	}
	return in
}
