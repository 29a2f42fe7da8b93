package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/internal/servertest"
)

// The compatibility suite: this tree's binaries against the oldest
// supported release's (compat/OLDEST), each a process of its own, in both
// directions, and the old coordinator's data folder and backups.

// startCoordinator runs the given tendril-server (see binPath) on data,
// agents connecting to listen, and waits for its API.
func startCoordinator(t *testing.T, server, data, listen string) *daemon {
	t.Helper()
	d := start(t, server, "run", "--data", data, "--listen", listen, "--http", servertest.FreeAddr(t), "--health-interval", "1s")
	waitFor(t, "the coordinator's API", func() bool { return d.exited() || listAgentsOf(t, server, data) != nil })
	if d.exited() {
		t.Fatalf("%s run --data %s exited at start", server, data)
	}
	return d
}

// fleetOf is a fleet whose coordinator is the given tendril-server (an
// older release's), agents connecting to listen: it is initialized and
// started, and agents are enrolled
// through it, web-* into Production and edge-* into Edge. The fleet's
// methods that run "tendril-server" are this tree's CLI: use the given
// binary's commands instead.
func fleetOf(t *testing.T, server, listen string) *fleet {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the compatibility tests upgrade agents through the Unix re-exec path")
	}
	f := &fleet{t: t, data: filepath.Join(t.TempDir(), "data")}
	mustRun(t, server, "init", "--data", f.data)
	f.server = startCoordinator(t, server, f.data, listen)
	f.enroll = func(in *install) {
		env := "Production"
		if strings.HasPrefix(in.name, "edge-") {
			env = "Edge"
		}
		join := strings.TrimSpace(mustRun(t, server, "token", "create", "--data", f.data, "--environment", env))
		if out, err := exec.Command(in.exe, "register", "--home", in.home, "--name", in.name, "--join", join).CombinedOutput(); err != nil {
			t.Fatalf("register %s: %v\n%s", in.name, err, out)
		}
	}
	f.start = func(exe string, args ...string) *daemon { return startPath(t, exe, args...) }
	return f
}

// agentOf returns the agent named name as the given tendril-server lists
// it (a zero row if it is not listed).
func agentOf(t *testing.T, server, data, name string) agentRow {
	t.Helper()
	for _, r := range listAgentsOf(t, server, data) {
		if r.Name == name {
			return r
		}
	}
	return agentRow{}
}

// versionOf is what exe says it is.
func versionOf(t *testing.T, exe string) string {
	t.Helper()
	var v struct{ Version string }
	json.Unmarshal(mustOutput(t, exe, "version", "--json"), &v)
	return v.Version
}

// rolledBack reports whether a rollout's output says the agent was
// rolled back.
func rolledBack(out string) bool {
	return strings.Contains(out, "rolled_back") || strings.Contains(out, "rolled back")
}

// TestCompatOldAgentNewCoordinator: an agent of the oldest supported
// release, enrolled with its own register flags, is served by this
// coordinator: health, Calamari listed current as soon as a task installed
// it, a task whose log streams while it runs, its own certificate
// rotation, a broken release rolled back by its own watchdog, and the
// upgrade to this tree's agent through a rollout.
func TestCompatOldAgentNewCoordinator(t *testing.T) {
	oldestRelease(t)                // puts its agent in binDir, where the fleet finds it
	f := newFleet(t, oldestVersion) // register --home --name --join, as the old agent has them
	f.start(f.exe, "run", "--home", f.home)
	waitFor(t, "the oldest agent connected and healthy", func() bool { return healthy(listAgents(t, f.data), "web-1") })
	// Within the protocol range: an upgrade is recommended, not required.
	if r := agentOf(t, "tendril-server", f.data, "web-1"); r.Version != oldestVersion || r.Upgrade != "recommended" || r.UpgradeTo != "2.2.0" {
		t.Fatalf("agents list: got version %q, upgrade %q to %q; want %s, recommended to 2.2.0", r.Version, r.Upgrade, r.UpgradeTo, oldestVersion)
	}
	// What it cannot do, in words, for the console to say.
	if r := agentOf(t, "tendril-server", f.data, "web-1"); len(r.Lacks) != 6 {
		t.Fatalf("agents list: the oldest agent lacks %q, want the six features it predates", r.Lacks)
	}

	// Health checks an hour apart: only the push a task makes can list
	// Calamari current. Once no check came for three seconds (the
	// listing's precision is a second), the hour is in force.
	mustRun(t, "tendril-server", "policy", "set", "--health-interval", "1h", "--data", f.data)
	waitFor(t, "the health checks an hour apart", func() bool {
		at, err := time.Parse(time.RFC3339, agentOf(t, "tendril-server", f.data, "web-1").LastHealthAt)
		return err == nil && time.Since(at) > 3*time.Second
	})
	mustRun(t, "tendril-server", "calamari", "push", filepath.Join(binDir, "calamari.tar.gz"), "--data", f.data)
	if r := agentOf(t, "tendril-server", f.data, "web-1"); r.CalamariCurrent {
		t.Fatalf("Calamari listed current on web-1 before anything installed it: %+v", r)
	}
	gate := filepath.Join(t.TempDir(), "gate")
	type result struct {
		out  string
		code int
	}
	taskDone := make(chan result, 1)
	go func() {
		stdout, stderr, code := runCode(t, "tendril-server", "task", "run", "--agent", "web-1", "--data", f.data, "--",
			"run-script", "--inline", "echo first line; while [ ! -e "+gate+" ]; do sleep 0.1; done; echo second line")
		taskDone <- result{stdout + stderr, code}
	}()
	// The log streams: the first line is on the coordinator while the
	// task still runs.
	waitFor(t, "the task's first line on the coordinator while it runs", func() bool {
		var tasks []struct{ ID, State string }
		out, err := run(t, "tendril-server", "task", "list", "--data", f.data, "--json")
		if err != nil || json.Unmarshal([]byte(out), &tasks) != nil || len(tasks) != 1 || tasks[0].State != "running" {
			return false
		}
		show, err := run(t, "tendril-server", "task", "show", tasks[0].ID, "--data", f.data)
		return err == nil && strings.Contains(show, "first line")
	})
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res := <-taskDone
	if res.code != 0 || !strings.Contains(res.out, "first line") || !strings.Contains(res.out, "second line") {
		t.Fatalf("task run: exit %d, want 0 with both lines:\n%s", res.code, res.out)
	}
	if !strings.Contains(res.out, "installing "+testVersion) {
		t.Fatalf("task run: the task did not install Calamari %s itself, so it cannot tell whether the push lists it current:\n%s", testVersion, res.out)
	}
	// Right after, with no health check since.
	if r := agentOf(t, "tendril-server", f.data, "web-1"); !r.CalamariCurrent || r.CalamariVersion != testVersion {
		t.Fatalf("right after the task installed Calamari: listed %q, current %v; want %s, current", r.CalamariVersion, r.CalamariCurrent, testVersion)
	}
	mustRun(t, "tendril-server", "policy", "set", "--health-interval", "1s", "--data", f.data)

	// The old agent rotates its certificate: the coordinator lists the new
	// thumbprint, the agent stays connected and runs tasks.
	oldThumb := agentOf(t, "tendril-server", f.data, "web-1").Thumbprint
	newThumb := strings.TrimSpace(string(mustOutput(t, f.exe, "certificate", "rotate", "--home", f.home)))
	if len(newThumb) != 64 || newThumb == oldThumb {
		t.Fatalf("certificate rotate printed %q, want a new 64-digit thumbprint (was %s)", newThumb, oldThumb)
	}
	waitFor(t, "the coordinator to list the old agent's new thumbprint", func() bool {
		r := agentOf(t, "tendril-server", f.data, "web-1")
		return r.Thumbprint == newThumb && r.Connected
	})
	if stdout, stderr, code := runCode(t, "tendril-server", "task", "run", "--agent", "web-1", "--data", f.data, "--",
		"run-script", "--inline", "echo after rotation"); code != 0 || !strings.Contains(stdout, "after rotation") {
		t.Fatalf("task after the rotation: exit %d\n%s\n%s", code, stdout, stderr)
	}
	// Variables need a newer agent: refused up front, saying how to get
	// one, and nothing runs. Without them, the old agent runs tasks.
	if stdout, stderr, code := runCode(t, "tendril-server", "task", "run", "--agent", "web-1", "--sensitive-var", "PW=x1", "--data", f.data, "--",
		"run-script", "--inline", "echo must not run"); code != 1 || !strings.Contains(stderr, "the agent on web-1 is too old for task variables; nothing was started (upgrade with: tendril-server upgrade --agent web-1)") {
		t.Fatalf("a task with variables on the oldest agent: exit %d, want 1 and the reason\n%s\n%s", code, stdout, stderr)
	}

	// A release that exits at once: the old agent's own watchdog puts it
	// back.
	if code, out := f.upgrade("2.1.0"); code == 0 || !rolledBack(out) {
		t.Fatalf("upgrade to a release that exits: exit %d, want a halted rollout with web-1 rolled back\n%s", code, out)
	}
	waitFor(t, "web-1 back at "+oldestVersion, func() bool { return f.connectedAt(oldestVersion) })
	if got := f.installedVersion(); got != oldestVersion {
		t.Fatalf("binary on disk after the rollback: got %s, want %s", got, oldestVersion)
	}
	// This tree's agent (stamped 2.0.0).
	if code, out := f.upgrade("2.0.0"); code != 0 {
		t.Fatalf("upgrade to 2.0.0: exit %d\n%s", code, out)
	}
	waitFor(t, "web-1 at 2.0.0", func() bool { return f.connectedAt("2.0.0") })
	if got := f.installedVersion(); got != "2.0.0" {
		t.Fatalf("binary on disk after the upgrade: got %s, want 2.0.0", got)
	}
}

// TestCompatNewAgentOldCoordinator: this tree's agents under a coordinator
// of the oldest supported release: they enroll, are healthy, run a task,
// and are offered only the packages that coordinator stores: none to an
// agent newer than all of them (a rollout would be a downgrade, and is
// refused), a broken one rolled back, a good one installed.
func TestCompatNewAgentOldCoordinator(t *testing.T) {
	old := oldestRelease(t)
	f := fleetOf(t, old.server, servertest.FreeAddr(t))
	head := filepath.Join(binDir, "agent-"+testVersion)
	if !isFile(head) {
		copyFile(t, filepath.Join(binDir, "tendril-agent"), head)
	}
	web := f.addAgent("web-1", "1.0.0") // this tree's agent, stamped 1.0.0
	f.home, f.exe = web.home, web.exe
	edge := f.addAgent("edge-1", testVersion)
	for _, v := range []string{"2.0.0", "2.1.0-exits"} {
		version, _, _ := strings.Cut(v, "-")
		mustRun(t, old.server, "agent-package", "push", "--version", version, "--os", runtime.GOOS, "--arch", runtime.GOARCH,
			filepath.Join(binDir, "agent-"+v), "--data", f.data)
	}
	for _, in := range f.agents {
		f.start(in.exe, "run", "--home", in.home)
	}
	waitFor(t, "both agents connected to the old coordinator and healthy", func() bool {
		rows := listAgentsOf(t, old.server, f.data)
		return healthy(rows, "web-1") && healthy(rows, "edge-1")
	})
	if r := agentOf(t, old.server, f.data, "edge-1"); r.Version != testVersion || r.Upgrade != "none" {
		t.Fatalf("edge-1, newer than every package: got version %q, upgrade %q to %q; want %s, none", r.Version, r.Upgrade, r.UpgradeTo, testVersion)
	}
	if r := agentOf(t, old.server, f.data, "web-1"); r.Version != "1.0.0" || r.Upgrade != "recommended" || r.UpgradeTo != "2.1.0" {
		t.Fatalf("web-1: got version %q, upgrade %q to %q; want 1.0.0, recommended to 2.1.0", r.Version, r.Upgrade, r.UpgradeTo)
	}

	mustRun(t, old.server, "calamari", "push", filepath.Join(binDir, "calamari.tar.gz"), "--data", f.data)
	out, err := run(t, old.server, "task", "run", "--agent", "edge-1", "--data", f.data, "--",
		"run-script", "--inline", `echo "hello from $TENDRIL_TICKET"`)
	if err != nil || !strings.Contains(out, "hello from ") {
		t.Fatalf("task run on this tree's agent: %v\n%s", err, out)
	}
	waitFor(t, "Calamari listed current on edge-1", func() bool {
		r := agentOf(t, old.server, f.data, "edge-1")
		return r.CalamariCurrent && r.CalamariVersion == testVersion
	})

	// Only what the old coordinator stores, and never a downgrade.
	if _, err := run(t, old.server, "upgrade", "--environment", "Edge", "--version", "2.0.0", "--data", f.data); err == nil ||
		!strings.Contains(err.Error(), "edge-1 (at "+testVersion+") to 2.0.0 would be a downgrade") {
		t.Fatalf("rollout of 2.0.0 to edge-1 at %s: got %v, want a refusal naming the downgrade", testVersion, err)
	}
	if _, err := run(t, old.server, "upgrade", "--environment", "Production", "--version", "3.0.0", "--data", f.data); err == nil ||
		!strings.Contains(err.Error(), "no agent package of version 3.0.0 is stored") {
		t.Fatalf("rollout of a version the coordinator lacks: got %v, want a refusal saying it is not stored", err)
	}
	upgrade := func(version string) (string, error) {
		return run(t, old.server, "upgrade", "--environment", "Production", "--version", version, "--grace", "5s", "--wait", "--data", f.data)
	}
	if out, err := upgrade("2.1.0"); err == nil || !rolledBack(out+err.Error()) {
		t.Fatalf("upgrade to a release that exits: %v, want a halted rollout with web-1 rolled back\n%s", err, out)
	}
	connectedAt := func(name, v string) bool {
		r := agentOf(t, old.server, f.data, name)
		return r.Connected && r.Version == v
	}
	waitFor(t, "web-1 back at 1.0.0", func() bool { return connectedAt("web-1", "1.0.0") })
	if got := versionOf(t, web.exe); got != "1.0.0" {
		t.Fatalf("web-1's binary after the rollback: got %s, want 1.0.0", got)
	}
	if out, err := upgrade("2.0.0"); err != nil {
		t.Fatalf("upgrade to 2.0.0: %v\n%s", err, out)
	}
	waitFor(t, "web-1 at 2.0.0", func() bool { return connectedAt("web-1", "2.0.0") })
	if got := versionOf(t, web.exe); got != "2.0.0" {
		t.Fatalf("web-1's binary after the upgrade: got %s, want 2.0.0", got)
	}
	if !connectedAt("edge-1", testVersion) || versionOf(t, edge.exe) != testVersion {
		t.Fatalf("edge-1, outside every rollout: want it connected at %s, untouched", testVersion)
	}
}

// TestCompatOldDataFolderAndBackups: this coordinator opens the data
// folder of the oldest supported release's, migrating it forward (with a
// copy of the database as it was), and restores that release's backup;
// the agent, Calamari, packages and tasks are still there and the agent
// reconnects to either. The old coordinator refuses, with reasons, both
// the migrated folder and a backup this coordinator made.
func TestCompatOldDataFolderAndBackups(t *testing.T) {
	old := oldestRelease(t)
	listen := servertest.FreeAddr(t)
	f := fleetOf(t, old.server, listen)
	web := f.addAgent("web-1", oldestVersion)
	f.start(web.exe, "run", "--home", web.home)
	waitFor(t, "web-1 healthy on the old coordinator", func() bool { return healthy(listAgentsOf(t, old.server, f.data), "web-1") })
	mustRun(t, old.server, "calamari", "push", filepath.Join(binDir, "calamari.tar.gz"), "--data", f.data)
	mustRun(t, old.server, "agent-package", "push", "--version", "2.0.0", "--os", runtime.GOOS, "--arch", runtime.GOARCH,
		filepath.Join(binDir, "agent-2.0.0"), "--data", f.data)
	if out, err := run(t, old.server, "task", "run", "--agent", "web-1", "--data", f.data, "--", "run-script", "--inline", "echo old task"); err != nil {
		t.Fatalf("task on the old coordinator: %v\n%s", err, out)
	}
	pass := filepath.Join(t.TempDir(), "passphrase")
	if err := os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	oldBackup := filepath.Join(t.TempDir(), "old.tar.gz")
	mustRun(t, old.server, "backup", "--data", f.data, "--out", oldBackup, "--passphrase-file", pass)
	if code := f.server.interrupt(t); code != 0 {
		t.Fatalf("old coordinator exit code after SIGINT: got %d, want 0", code)
	}

	// The old backup restores with this tree's coordinator.
	restored := filepath.Join(t.TempDir(), "restored")
	if out := mustRun(t, "tendril-server", "restore", "--in", oldBackup, "--data", restored, "--passphrase-file", pass); !strings.Contains(out, "Restored") {
		t.Fatalf("restore of the old backup printed %q", out)
	}

	// The old folder, run in place by this tree's coordinator: migrated,
	// the agent reconnects, nothing is lost.
	srv := startCoordinator(t, "tendril-server", f.data, listen)
	copies, _ := filepath.Glob(filepath.Join(f.data, "backups", "tendril-schema*.db"))
	if len(copies) != 1 {
		t.Fatalf("copies of the database before its migration: got %v, want one", copies)
	}
	checkKept := func(data string) {
		t.Helper()
		waitFor(t, "web-1 healthy on this tree's coordinator", func() bool { return healthy(listAgents(t, data), "web-1") })
		if r := agentOf(t, "tendril-server", data, "web-1"); r.Version != oldestVersion || !r.CalamariCurrent || r.CalamariVersion != testVersion {
			t.Fatalf("web-1 on the migrated coordinator: got %+v, want %s with Calamari %s current", r, oldestVersion, testVersion)
		}
		var tasks []struct{ State string }
		if err := json.Unmarshal([]byte(mustRun(t, "tendril-server", "task", "list", "--data", data, "--json")), &tasks); err != nil ||
			len(tasks) != 1 || tasks[0].State != "succeeded" {
			t.Fatalf("task list after the migration: got %+v (%v), want the old task, succeeded", tasks, err)
		}
		if out := mustRun(t, "tendril-server", "agent-package", "list", "--data", data); !strings.Contains(out, "2.0.0") {
			t.Fatalf("agent-package list after the migration lacks 2.0.0:\n%s", out)
		}
	}
	checkKept(f.data)
	if code := srv.interrupt(t); code != 0 {
		t.Fatalf("coordinator exit code after SIGINT: got %d, want 0", code)
	}

	// Started again on the migrated folder, the old coordinator refuses,
	// says why and names the copy that puts it back.
	if out, err := run(t, old.server, "run", "--data", f.data, "--listen", servertest.FreeAddr(t), "--http", servertest.FreeAddr(t)); err == nil ||
		!strings.Contains(err.Error(), "newer than this coordinator") || !strings.Contains(err.Error(), copies[0]) {
		t.Fatalf("old coordinator on the migrated folder: got %v\n%s\nwant a refusal naming the copy %s", err, out, copies[0])
	}

	// The restored folder: same keys, so the agent reconnects to it.
	startCoordinator(t, "tendril-server", restored, listen)
	checkKept(restored)

	// A backup this coordinator made: the old one refuses it and says
	// which version restores it; the folder is left alone.
	newBackup := filepath.Join(t.TempDir(), "new.tar.gz")
	mustRun(t, "tendril-server", "backup", "--data", restored, "--out", newBackup, "--passphrase-file", pass)
	into := filepath.Join(t.TempDir(), "into")
	_, err := run(t, old.server, "restore", "--in", newBackup, "--data", into, "--passphrase-file", pass)
	if err == nil || !strings.Contains(err.Error(), "backup is from a newer coordinator (schema ") ||
		!strings.Contains(err.Error(), "restore it with version "+testVersion+" or newer") {
		t.Fatalf("old coordinator restoring a new backup: got %v, want a refusal naming the version that restores it", err)
	}
	if entries, _ := os.ReadDir(into); len(entries) != 0 {
		t.Fatalf("the refused restore left %d entries in %s", len(entries), into)
	}
}
