package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/internal/servertest"
)

// readDiagnostics reads an archive a command wrote.
func readDiagnostics(t *testing.T, path string) diag.Archive {
	t.Helper()
	a, err := diag.ReadFile(path, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestDiagnosticsJourney: the diagnostics commands against real
// processes. A running agent, another process, writes its goroutine dump
// when the command sends it SIGUSR1 and keeps running; the coordinator
// collects the agent's archive over its session; the agent's archive is
// still collected once it cannot start, and a home that does not exist
// gets none.
func TestDiagnosticsJourney(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	out := t.TempDir()
	mustRun(t, "tendril-server", "init", "--data", data)
	start(t, "tendril-server", "run", "--data", data, "--listen", servertest.FreeAddr(t), "--http", servertest.FreeAddr(t), "--health-interval", "1s")
	waitFor(t, "coordinator API", func() bool { return listAgents(t, data) != nil })
	join := strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", data, "--environment", "Production"))
	home := filepath.Join(t.TempDir(), "agent")
	mustRun(t, "tendril-agent", "register", "--home", home, "--join", join, "--name", "web-1")
	agent := start(t, "tendril-agent", "run", "--home", home, "--log-file", filepath.Join(home, "Logs", "agent.log"))
	waitFor(t, "web-1 healthy", func() bool { return healthy(listAgents(t, data), "web-1") })

	local := filepath.Join(out, "local.tar.gz")
	stdout := mustRun(t, "tendril-agent", "diagnostics", "--home", home, "--out", local)
	a := readDiagnostics(t, local)
	if g := string(a.Files[diag.GoroutinesName]); !strings.Contains(g, "main.main") {
		t.Fatalf("goroutine dump of the running agent: got %.300q (%s), want its goroutines", g, stdout)
	}
	for _, name := range []string{"config/agent.json", "certificates.json", "logs/agent.log", "calamari.json", "disk.json"} {
		if _, ok := a.Files[name]; !ok {
			t.Errorf("local archive: no %s; missing %+v", name, a.Manifest.Missing)
		}
	}
	if agent.exited() {
		t.Fatal("the agent exited after it was asked for its goroutine dump")
	}

	remote := filepath.Join(out, "remote.tar.gz")
	mustRun(t, "tendril-server", "agents", "diagnostics", "web-1", "--data", data, "--out", remote)
	r := readDiagnostics(t, remote)
	files, err := r.Flatten(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	if g := string(files["agent/diagnostics.tar.gz/"+diag.GoroutinesName]); !strings.Contains(g, "handleDiagnostics") {
		t.Errorf("the agent's side through the coordinator: got a dump of %d bytes, notes %q, want the agent's own", len(g), r.Manifest.Notes)
	}
	coordinator := filepath.Join(out, "coordinator.tar.gz")
	mustRun(t, "tendril-server", "diagnostics", "--data", data, "--out", coordinator)
	if c := readDiagnostics(t, coordinator); !strings.Contains(string(c.Files["agents.json"]), `"web-1"`) || len(c.Files[diag.GoroutinesName]) == 0 {
		t.Errorf("coordinator archive: got agents %s and a %d-byte dump, want web-1 and the coordinator's goroutines", c.Files["agents.json"], len(c.Files[diag.GoroutinesName]))
	}

	// The agent stops and its registration is damaged: it cannot start,
	// and its archive is still written, saying why.
	agent.kill()
	os.WriteFile(filepath.Join(home, "agent.json"), []byte(`{"servers": [`), 0o600)
	if _, err := run(t, "tendril-agent", "run", "--home", home); err == nil {
		t.Fatal("run with a corrupt agent.json: got no error, want the agent unable to start")
	}
	broken := filepath.Join(out, "broken.tar.gz")
	stdout = mustRun(t, "tendril-agent", "diagnostics", "--home", home, "--out", broken)
	if !strings.Contains(stdout, "agent.json is not valid JSON") || !strings.Contains(stdout, "Not collected: config/agent.json") {
		t.Errorf("diagnostics of an agent that cannot start printed %q, want why it cannot and what was not collected", stdout)
	}
	if b := readDiagnostics(t, broken); len(b.Files["logs/agent.log"]) == 0 {
		t.Errorf("archive of an agent that cannot start: no log; missing %+v", b.Manifest.Missing)
	}
	waitFor(t, "web-1 disconnected", func() bool {
		rows := listAgents(t, data)
		return len(rows) == 1 && !rows[0].Connected
	})
	stdout = mustRun(t, "tendril-server", "agents", "diagnostics", "web-1", "--data", data, "--out", filepath.Join(out, "offline.tar.gz"))
	if !strings.Contains(stdout, "Note: agent web-1 is not connected") {
		t.Errorf("agents diagnostics of an agent away printed %q, want a note that it is not connected", stdout)
	}

	nowhere := filepath.Join(out, "nowhere.tar.gz")
	if _, err := run(t, "tendril-agent", "diagnostics", "--home", filepath.Join(out, "no-such-home"), "--out", nowhere); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("diagnostics of a home that does not exist: got %v, want an error saying so", err)
	}
	if _, err := os.Stat(nowhere); !os.IsNotExist(err) {
		t.Fatalf("%s: got %v, want no archive", nowhere, err)
	}
}
