package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/internal/servertest"
)

// TestDeletedAgentRegistersAgain is an operator's way back after
// "agents delete": the agent, started again, prints why the coordinator
// refuses it; register --force on its home makes a new certificate, and
// the running agent takes it and connects, without a restart.
func TestDeletedAgentRegistersAgain(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	agentAddr, httpAddr := servertest.FreeAddr(t), servertest.FreeAddr(t)
	mustRun(t, "tendril-server", "init", "--data", data)
	srv := start(t, "tendril-server", "run", "--data", data, "--listen", agentAddr, "--http", httpAddr, "--health-interval", "1s")
	waitFor(t, "coordinator API", func() bool { return listAgents(t, data) != nil })

	home := filepath.Join(t.TempDir(), "agent")
	join := strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", data, "--environment", "Production"))
	mustRun(t, "tendril-agent", "register", "--home", home, "--join", join, "--name", "web-1")
	old := strings.TrimSpace(mustRun(t, "tendril-agent", "thumbprint", "--home", home))
	first := start(t, "tendril-agent", "run", "--home", home)
	waitFor(t, "web-1 healthy", func() bool { return healthy(listAgents(t, data), "web-1") })

	mustRun(t, "tendril-server", "agents", "delete", "web-1", "--data", data)
	// The agent learns it in its session; started again, it is refused
	// at its first request, with the reason.
	if code := first.interrupt(t); code != 0 {
		t.Fatalf("agent exit code after SIGINT: got %d, want 0", code)
	}
	log := filepath.Join(t.TempDir(), "agent.log")
	start(t, "tendril-agent", "run", "--home", home, "--log-file", log)
	waitForLog(t, log, "this agent was deleted on the coordinator: register again with --force")

	join = strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", data, "--environment", "Production"))
	out := mustRun(t, "tendril-agent", "register", "--home", home, "--join", join, "--name", "web-1", "--force")
	if !strings.Contains(out, "registered as web-1 in environment Production") {
		t.Fatalf("register --force printed %q, want the registration", out)
	}
	renewed := strings.TrimSpace(mustRun(t, "tendril-agent", "thumbprint", "--home", home))
	if renewed == old {
		t.Fatalf("thumbprint after register --force: got the deleted %s, want a new one", old)
	}
	waitForLog(t, log, "the home was registered again")
	var rows []agentRow
	waitFor(t, "web-1 healthy with its new certificate", func() bool {
		rows = listAgents(t, data)
		return healthy(rows, "web-1") && rows[0].Thumbprint == renewed
	})

	// The coordinator said it too, in its log, once for the refusals of
	// the deleted certificate (read once it has stopped).
	srv.kill()
	if got := strings.Count(srv.log.String(), "refused a revoked agent certificate"); got != 1 {
		t.Fatalf("coordinator log: got %d lines about the revoked certificate, want 1:\n%s", got, srv.log.String())
	}
}

// TestAgentRefusesUnsafeHome: a home another user can write is refused at
// start, in one line that names the path and the command that fixes it,
// and the agent starts once that command ran.
func TestAgentRefusesUnsafeHome(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	agentAddr, httpAddr := servertest.FreeAddr(t), servertest.FreeAddr(t)
	mustRun(t, "tendril-server", "init", "--data", data)
	start(t, "tendril-server", "run", "--data", data, "--listen", agentAddr, "--http", httpAddr, "--health-interval", "1s")
	waitFor(t, "coordinator API", func() bool { return listAgents(t, data) != nil })
	home := filepath.Join(t.TempDir(), "agent")
	join := strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", data, "--environment", "Production"))
	mustRun(t, "tendril-agent", "register", "--home", home, "--join", join, "--name", "web-1")
	if fi, err := os.Stat(home); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("home made by register: %v (%v), want mode 0700", fi.Mode(), err)
	}

	if err := os.Chmod(home, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "tendril-agent", "run", "--home", home)
	want := "agent home " + home + " is writable by its group and others (mode 0777): run chmod 700 " + home
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("run on a 0777 home: got %v, want a refusal saying %q", err, want)
	}
	if strings.Count(strings.TrimSpace(err.Error()), "\n") > 0 {
		t.Errorf("want a one-line reason, got:\n%v", err)
	}

	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	start(t, "tendril-agent", "run", "--home", home)
	waitFor(t, "web-1 healthy once the home is fixed", func() bool { return healthy(listAgents(t, data), "web-1") })
}
