package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/protocol"
)

// nextVersion stamps the binaries one protocol ahead: above every version
// the other tests give.
const nextVersion = "3.0.0"

// buildNextProtocol builds this tree's tendril-server and tendril-agent as
// the next protocol will be: speaking only protocol.ProtocolVersion+1, the
// current one dropped (protocol/version.go replaced through go build
// -overlay). The agent is also put in binDir as agent-<nextVersion>.
func buildNextProtocol(t *testing.T) (server, agent string) {
	t.Helper()
	dir := filepath.Join(binDir, "next-protocol")
	server, agent = filepath.Join(dir, "tendril-server"), filepath.Join(dir, "tendril-agent")
	if isFile(server) && isFile(agent) {
		return server, agent
	}
	orig := filepath.Join(moduleRoot(), "protocol", "version.go")
	src, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	next := []byte(strconv.Itoa(protocol.ProtocolVersion + 1))
	for _, name := range []string{"ProtocolVersion", "MinProtocol"} {
		re := regexp.MustCompile(`(?m)^(\s*` + name + `\s*=\s*)\d+\s*$`)
		if !re.Match(src) {
			t.Fatalf("%s does not declare %s = N: the next-protocol build cannot replace it", orig, name)
		}
		src = re.ReplaceAll(src, append([]byte("${1}"), next...))
	}
	tmp := t.TempDir()
	patched := filepath.Join(tmp, "version.go")
	overlay := filepath.Join(tmp, "overlay.json")
	b, _ := json.Marshal(map[string]map[string]string{"Replace": {orig: patched}})
	if err := os.WriteFile(patched, src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(overlay, b, 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-overlay", overlay, "-o", dir+string(filepath.Separator),
		"-ldflags", "-X github.com/tendrildeploy/tendril/version.Version="+nextVersion,
		"./cmd/tendril-server", "./cmd/tendril-agent")
	build.Dir = moduleRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the next protocol's binaries: %v\n%s", err, out)
	}
	copyFile(t, agent, filepath.Join(binDir, "agent-"+nextVersion))
	return server, agent
}

// waitForLog waits until the agent's log file holds want.
func waitForLog(t *testing.T, path, want string) string {
	t.Helper()
	var log []byte
	waitFor(t, fmt.Sprintf("%q in the agent's log", want), func() bool {
		log, _ = os.ReadFile(path)
		return strings.Contains(string(log), want)
	})
	return string(log)
}

// TestCompatProtocolRange: peers outside each other's protocol range, the
// real binaries, one of them built one protocol ahead. An agent newer than
// the coordinator is refused at the handshake and both sides say why; an
// agent older than the coordinator's minimum gets an upgrade-only session:
// listed "required", refused tasks with the command that upgrades it, and
// upgraded.
func TestCompatProtocolRange(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the compatibility tests upgrade agents through the Unix re-exec path")
	}
	nextServer, _ := buildNextProtocol(t)
	cur, next := protocol.ProtocolVersion, protocol.ProtocolVersion+1

	t.Run("agent newer than the coordinator", func(t *testing.T) {
		f := fleetOf(t, "tendril-server", servertest.FreeAddr(t))
		in := f.addAgent("web-1", nextVersion)
		log := filepath.Join(t.TempDir(), "agent.log")
		f.start(in.exe, "run", "--home", in.home, "--log-file", log)
		waitForLog(t, log, "the coordinator does not speak this agent's protocol; upgrade the coordinator")
		waitForLog(t, log, fmt.Sprintf("speaks protocol %d-%d, coordinator", next, next))
		// The listing says why, not only "not connected".
		var r agentRow
		waitFor(t, "the refusal in the listing", func() bool {
			r = agentOf(t, "tendril-server", f.data, "web-1")
			return strings.Contains(r.HealthDetail, "refused: agent "+nextVersion+fmt.Sprintf(" speaks protocol %d-%d", next, next))
		})
		if r.Connected || !strings.HasSuffix(r.HealthDetail, "upgrade the coordinator") {
			t.Fatalf("an agent of protocol %d under a coordinator of %d: got %+v, want not connected and the remedy", next, cur, r)
		}
		// The coordinator's side, read once it has stopped.
		f.server.kill()
		for _, want := range []string{
			"agent session refused: the agent is newer than this coordinator",
			fmt.Sprintf("agent speaks [%d, %d], coordinator [%d, %d]", next, next, protocol.MinProtocol, cur),
		} {
			if got := f.server.log.String(); !strings.Contains(got, want) {
				t.Fatalf("the coordinator's log does not say %q:\n%s", want, got)
			}
		}
	})

	t.Run("agent older than the coordinator's minimum", func(t *testing.T) {
		f := fleetOf(t, nextServer, servertest.FreeAddr(t))
		in := f.addAgent("web-1", "1.0.0") // this tree's agent
		mustRun(t, nextServer, "agent-package", "push", "--version", nextVersion, "--os", runtime.GOOS, "--arch", runtime.GOARCH,
			filepath.Join(binDir, "agent-"+nextVersion), "--data", f.data)
		log := filepath.Join(t.TempDir(), "agent.log")
		f.start(in.exe, "run", "--home", in.home, "--log-file", log)
		waitForLog(t, log, `"upgrade_only":true`)
		waitForLog(t, log, "this agent is too old for the coordinator: it runs no tasks until a rollout upgrades it")
		var r agentRow
		waitFor(t, "web-1 connected and checked", func() bool {
			r = agentOf(t, nextServer, f.data, "web-1")
			return r.Connected && r.Health != "" && r.Health != "unavailable"
		})
		if r.Protocol != cur || r.Upgrade != "required" || r.UpgradeTo != nextVersion || !strings.Contains(r.HealthDetail, "upgrade required") {
			t.Fatalf("agent of protocol %d under a coordinator of %d: got %+v, want an upgrade to %s required", cur, next, r, nextVersion)
		}
		_, err := run(t, nextServer, "task", "run", "--agent", "web-1", "--data", f.data, "--", "run-script", "--inline", "true")
		if err == nil || !strings.Contains(err.Error(), "must be upgraded before it can run tasks") ||
			!strings.Contains(err.Error(), "tendril-server upgrade --environment Production") {
			t.Fatalf("task on an upgrade-only agent: got %v, want a refusal naming the upgrade", err)
		}
		if out, err := run(t, nextServer, "upgrade", "--environment", "Production", "--version", nextVersion, "--grace", "5s", "--wait", "--data", f.data); err != nil {
			t.Fatalf("the required upgrade: %v\n%s", err, out)
		}
		waitFor(t, "web-1 at "+nextVersion+", a full session", func() bool {
			r = agentOf(t, nextServer, f.data, "web-1")
			return r.Connected && r.Version == nextVersion && r.Protocol == next && r.Upgrade == "none"
		})
	})
}
