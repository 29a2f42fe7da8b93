// Package e2e builds the real tendril-server and tendril-agent binaries and
// drives them the way an operator does: init, run, token create, register,
// agent run, agents list, kill -9 and restart, delete.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/internal/pgtest"
	"github.com/tendrildeploy/tendril/internal/servertest"
)

const testVersion = "9.8.7-e2e"

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tendril-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := func() int {
		defer os.RemoveAll(dir)
		for _, cmd := range []string{"tendril-server", "tendril-agent"} {
			build := exec.Command("go", "build", "-o", filepath.Join(dir, cmd),
				"-ldflags", "-X github.com/tendrildeploy/tendril/version.Version="+testVersion,
				"github.com/tendrildeploy/tendril/cmd/"+cmd)
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", cmd, err, out)
				return 1
			}
		}
		// Agent releases for the upgrade tests: two good versions and two
		// broken ones that pass the smoke test.
		for _, b := range []struct{ out, pkg, ldflags string }{
			{"agent-1.0.0", "./cmd/tendril-agent", "-X github.com/tendrildeploy/tendril/version.Version=1.0.0"},
			{"agent-2.0.0", "./cmd/tendril-agent", "-X github.com/tendrildeploy/tendril/version.Version=2.0.0"},
			{"agent-2.1.0-exits", "./e2e/testdata/badagent", "-X github.com/tendrildeploy/tendril/version.Version=2.1.0 -X main.mode=exit"},
			{"agent-2.2.0-hangs", "./e2e/testdata/badagent", "-X github.com/tendrildeploy/tendril/version.Version=2.2.0 -X main.mode=hang"},
		} {
			build := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), "-ldflags", b.ldflags, b.pkg)
			build.Dir = moduleRoot()
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.out, err, out)
				return 1
			}
		}
		// The Calamari bundle, for this platform only to keep the build short.
		mk := exec.Command("go", "run", "github.com/tendrildeploy/tendril/internal/mkbundle",
			"-version", testVersion, "-platforms", runtime.GOOS+"/"+runtime.GOARCH, "-out", filepath.Join(dir, "calamari.tar.gz"))
		if out, err := mk.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build calamari bundle: %v\n%s", err, out)
			return 1
		}
		code := m.Run()
		if err := pg.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop postgres:", err)
			code = 1
		}
		return code
	}()
	os.Exit(code)
}

// pg is the test binary's PostgreSQL cluster, started by the first test
// that needs one (high availability).
var pg pgtest.Shared

// moduleRoot is the repository root: the test runs in e2e/.
func moduleRoot() string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd)
}

// binPath is where bin is: a name is one of the binaries TestMain built,
// a path (an older release's binary, say) is itself.
func binPath(bin string) string {
	if filepath.IsAbs(bin) {
		return bin
	}
	return filepath.Join(binDir, bin)
}

// run runs a binary (see binPath) to completion and returns stdout; stderr
// is in the error.
func run(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath(bin), args...)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), err
}

func mustRun(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := run(t, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// cleanEnv keeps the operator's TENDRIL_* variables out of the test.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TENDRIL_") {
			env = append(env, kv)
		}
	}
	return env
}

// daemon is a long-running binary.
type daemon struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

func start(t *testing.T, bin string, args ...string) *daemon {
	t.Helper()
	return startPath(t, binPath(bin), args...)
}

// startPath starts a long-running binary given by its path.
func startPath(t *testing.T, path string, args ...string) *daemon {
	t.Helper()
	bin := filepath.Base(path)
	cmd := exec.Command(path, args...)
	cmd.Env = cleanEnv()
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, done: make(chan struct{}), log: &log}
	go func() { cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("%s log:\n%s", bin, log.String())
		}
	})
	return d
}

// exited reports whether the process has ended.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func (d *daemon) kill() {
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// interrupt stops the daemon as Ctrl-C would and reports its exit code.
func (d *daemon) interrupt(t *testing.T) int {
	t.Helper()
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatal("did not stop within 30s of SIGINT")
	}
	return d.cmd.ProcessState.ExitCode()
}

type agentRow struct {
	Name            string   `json:"name"`
	Environment     string   `json:"environment"`
	Version         string   `json:"version"`
	Connected       bool     `json:"connected"`
	Health          string   `json:"health"`
	HealthDetail    string   `json:"health_detail"`
	LastHealthAt    string   `json:"last_health_at"`
	Protocol        int      `json:"protocol"`
	TLSVersion      string   `json:"tls_version"`
	Thumbprint      string   `json:"thumbprint"`
	CalamariVersion string   `json:"calamari_version"`
	CalamariCurrent bool     `json:"calamari_current"`
	Upgrade         string   `json:"upgrade"`
	UpgradeTo       string   `json:"upgrade_to"`
	LastSeen        string   `json:"last_seen"`
	ID              string   `json:"id"`
	Mode            string   `json:"mode"`
	Address         string   `json:"address"`
	DialError       string   `json:"dial_error"`
	Lacks           []string `json:"lacks"`
}

func listAgents(t *testing.T, data string) []agentRow {
	t.Helper()
	return listAgentsOf(t, "tendril-server", data)
}

// listAgentsOf is listAgents through the given tendril-server (see
// binPath): an older release's for its own coordinator.
func listAgentsOf(t *testing.T, server, data string) []agentRow {
	t.Helper()
	out, err := run(t, server, "agents", "list", "--data", data, "--json")
	if err != nil {
		return nil // the coordinator may be restarting
	}
	var rows []agentRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("agents list --json is not a JSON array: %v\n%s", err, out)
	}
	return rows
}

// waitFor waits for cond, long enough for real processes on a loaded
// machine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	servertest.WaitFor(t, 60*time.Second, what, cond)
}

func healthy(rows []agentRow, name string) bool {
	for _, r := range rows {
		if r.Name == name && r.Connected && r.Health == "healthy" {
			return true
		}
	}
	return false
}

func TestOperatorJourney(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	agentAddr, httpAddr := servertest.FreeAddr(t), servertest.FreeAddr(t)

	initOut := mustRun(t, "tendril-server", "init", "--data", data)
	thumb := strings.TrimSpace(mustRun(t, "tendril-server", "thumbprint", "--data", data))
	if len(thumb) != 64 || !strings.Contains(initOut, thumb) {
		t.Fatalf("thumbprint %q: want 64 hex digits, also printed by init:\n%s", thumb, initOut)
	}
	if _, err := run(t, "tendril-server", "init", "--data", data); err == nil {
		t.Fatal("second init succeeded, want a refusal")
	}

	serverArgs := []string{"run", "--data", data, "--listen", agentAddr, "--http", httpAddr, "--health-interval", "1s"}
	srv := start(t, "tendril-server", serverArgs...)
	waitFor(t, "coordinator API", func() bool { return listAgents(t, data) != nil })

	join := strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", data, "--environment", "Production"))
	if !strings.HasPrefix(join, "tendril://") {
		t.Fatalf("token create printed %q, want a join string", join)
	}
	home := filepath.Join(t.TempDir(), "agent")
	mustRun(t, "tendril-agent", "register", "--home", home, "--join", join, "--name", "web-1")
	// The token was used: a second agent cannot reuse it.
	if _, err := run(t, "tendril-agent", "register", "--home", filepath.Join(t.TempDir(), "b"), "--join", join, "--name", "web-2"); err == nil || !strings.Contains(err.Error(), "already been used") {
		t.Fatalf("reused token: got %v, want a refusal that says it was used", err)
	}

	if v := mustRun(t, "tendril-agent", "version", "--json"); !strings.Contains(v, `"version": "`+testVersion+`"`) && !strings.Contains(v, `"version":"`+testVersion+`"`) {
		t.Fatalf("agent version --json: got %s, want %s", v, testVersion)
	}
	agentThumb := strings.TrimSpace(mustRun(t, "tendril-agent", "thumbprint", "--home", home))

	start(t, "tendril-agent", "run", "--home", home)
	var rows []agentRow
	waitFor(t, "web-1 healthy", func() bool { rows = listAgents(t, data); return healthy(rows, "web-1") })
	r := rows[0]
	if r.Environment != "Production" || r.Version != testVersion || r.TLSVersion != "1.3" || r.Thumbprint != agentThumb || r.Upgrade != "none" || r.ID == "" {
		t.Fatalf("agents list: got %+v", r)
	}
	if _, err := time.Parse(time.RFC3339, r.LastSeen); err != nil {
		t.Fatalf("last_seen %q: %v", r.LastSeen, err)
	}

	// kill -9 the coordinator and start it again: the agent comes back on
	// its own.
	srv.kill()
	srv = start(t, "tendril-server", serverArgs...)
	waitFor(t, "web-1 healthy after a coordinator crash", func() bool { return healthy(listAgents(t, data), "web-1") })

	// The agent rotates its certificate while running: the coordinator
	// lists the new thumbprint and the agent never leaves.
	newAgentThumb := strings.TrimSpace(mustRun(t, "tendril-agent", "certificate", "rotate", "--home", home))
	if len(newAgentThumb) != 64 || newAgentThumb == agentThumb {
		t.Fatalf("certificate rotate printed %q, want a new 64-digit thumbprint", newAgentThumb)
	}
	waitFor(t, "the coordinator to list the agent's new thumbprint", func() bool {
		rows := listAgents(t, data)
		return len(rows) == 1 && rows[0].Thumbprint == newAgentThumb && rows[0].Connected
	})

	// The coordinator rotates its certificate: the agent learns the new
	// one over its session and connects to it after a coordinator restart.
	rotOut := mustRun(t, "tendril-server", "certificate", "rotate", "--data", data, "--json")
	var rot struct {
		Thumbprint string `json:"thumbprint"`
		Notified   int    `json:"notified"`
	}
	if err := json.Unmarshal([]byte(rotOut), &rot); err != nil || rot.Thumbprint == thumb || rot.Notified != 1 {
		t.Fatalf("certificate rotate --json: got %s (%v), want a new thumbprint and 1 agent notified", rotOut, err)
	}
	if got := strings.TrimSpace(mustRun(t, "tendril-server", "thumbprint", "--data", data)); got != rot.Thumbprint {
		t.Fatalf("thumbprint after rotation: got %s, want %s", got, rot.Thumbprint)
	}
	srv.kill()
	srv = start(t, "tendril-server", serverArgs...)
	waitFor(t, "web-1 healthy with the rotated coordinator certificate", func() bool { return healthy(listAgents(t, data), "web-1") })

	// Delete: dropped at once and refused from then on.
	mustRun(t, "tendril-server", "agents", "delete", "web-1", "--data", data)
	if rows := listAgents(t, data); len(rows) != 0 {
		t.Fatalf("after delete: got %+v, want no agents", rows)
	}
	if code := srv.interrupt(t); code != 0 {
		t.Fatalf("coordinator exit code after SIGINT: got %d, want 0", code)
	}
}

func TestCommandsRejectBadInput(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	mustRun(t, "tendril-server", "init", "--data", data)
	home := t.TempDir()
	tests := []struct {
		name string
		bin  string
		args []string
		want string
	}{
		{"malformed join string", "tendril-agent", []string{"register", "--home", home, "--join", "tendril://nowhere"}, "join string"},
		{"join and explicit flags together", "tendril-agent", []string{"register", "--home", home, "--join", "x", "--token", "y"}, "--join"},
		{"bad thumbprint", "tendril-agent", []string{"register", "--home", home, "--server", "127.0.0.1:1", "--server-thumbprint", "abc", "--token", "t"}, "thumbprint"},
		{"run unregistered", "tendril-agent", []string{"run", "--home", home}, "tendril-agent register"},
		{"proxy URL that does not parse", "tendril-agent", []string{"register", "--home", home, "--server", "127.0.0.1:1", "--server-thumbprint", strings.Repeat("a", 64), "--token", "t", "--proxy", "socks5://user:pw@proxy:1080"}, "--proxy: proxy socks5://xxxxx@proxy:1080: not a proxy URL"},
		{"bad tls minimum", "tendril-server", []string{"run", "--data", data, "--tls-min", "0.9"}, "1.0, 1.1, 1.2, 1.3"},
		{"coordinator not running", "tendril-server", []string{"agents", "list", "--data", data}, "no coordinator is running"},
		{"uninitialized data", "tendril-server", []string{"thumbprint", "--data", t.TempDir()}, "init"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := run(t, tt.bin, tt.args...)
			if err == nil {
				t.Fatal("exit 0, want a failure")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a reason mentioning %q", err, tt.want)
			}
			if strings.Count(strings.TrimSpace(err.Error()), "\n") > 0 {
				t.Errorf("want a one-line reason, got:\n%v", err)
			}
		})
	}
}
