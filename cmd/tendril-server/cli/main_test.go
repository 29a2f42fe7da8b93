package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/datadir"
)

// syncBuffer is a bytes.Buffer that a running command and the test can
// share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cli runs one command line with a clean environment plus vars.
func cli(t *testing.T, ctx context.Context, vars map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	code = Run(ctx, args, Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return vars[k] }})
	return code, out.String(), errOut.String()
}

func TestUsageErrors(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"agents"},
		{"agents", "bogus"},
		{"agents", "list", "--bogus"},
		{"agents", "list"}, // no coordinator named
		{"agents", "delete"},
		{"token", "create", "--data", "x"}, // no --environment
		{"init"},                           // no --data
		{"run", "--data", "x", "--tls-min", "1.4"},
		{"run", "--data", "x", "--http-cert", "c.pem"},
		{"run", "--data", "x", "--log-level", "loud"},
		{"version", "extra"},
		{"calamari"},
		{"calamari", "bogus"},
		{"task"},
		{"task", "run", "--agent", "x"}, // no Calamari arguments
	} {
		code, stdout, stderr := cli(t, ctx, nil, args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		last := lines[len(lines)-1]
		if code != 2 || !strings.HasPrefix(last, "tendril-server: ") || strings.Contains(stdout, "tendril-server:") {
			t.Errorf("%q: code %d, stdout %q, stderr %q; want 2 and one tendril-server: line", args, code, stdout, stderr)
		}
	}
}

// TestUnknownCommandBeforeFlags: a mistyped command is reported as such,
// with what it may have meant, even when flags follow it.
func TestUnknownCommandBeforeFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"agnts", "list", "--data", "x"}, `unknown command "agnts" for "tendril-server"; did you mean "agents"?`},
		{[]string{"agents", "lst", "--json"}, `unknown command "lst" for "tendril-server agents"; did you mean "list"?`},
		{[]string{"calamari", "pus", "file", "--json"}, `unknown command "pus" for "tendril-server calamari"; did you mean "push"?`},
		{[]string{"zzz", "--json"}, `unknown command "zzz" for "tendril-server" (see`},
	}
	for _, tt := range tests {
		code, _, stderr := cli(t, context.Background(), nil, tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: got %d %q, want 2 and %q", tt.args, code, stderr, tt.want)
		}
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := cli(t, context.Background(), nil, "version", "--json")
	var v map[string]string
	if code != 0 || json.Unmarshal([]byte(stdout), &v) != nil || v["version"] == "" || len(v) != 1 {
		t.Fatalf("version --json: %d %q", code, stdout)
	}
}

// TestCommandsAgainstRunningCoordinator goes through the whole command
// line: init, run, the admin commands through --data and through
// --url/--api-key, and a clean stop.
func TestCommandsAgainstRunningCoordinator(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	bg := context.Background()

	code, stdout, stderr := cli(t, bg, nil, "init", "--data", dir)
	if code != 0 || !strings.Contains(stdout, "Admin API key: tdk_") || !strings.Contains(stdout, filepath.Join(dir, "admin.key")) {
		t.Fatalf("init: %d %q %q", code, stdout, stderr)
	}
	thumb, err := datadir.ReadThumbprint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, thumb) {
		t.Fatalf("init did not print the thumbprint: %q", stdout)
	}
	if code, _, stderr := cli(t, bg, nil, "init", "--data", dir); code != 1 || !strings.Contains(stderr, "already initialized") {
		t.Fatalf("second init: %d %q", code, stderr)
	}
	// --data defaults to $TENDRIL_DATA.
	if code, stdout, _ := cli(t, bg, map[string]string{envData: dir}, "thumbprint"); code != 0 || stdout != thumb+"\n" {
		t.Fatalf("thumbprint: %d %q", code, stdout)
	}
	if code, _, stderr := cli(t, bg, nil, "agents", "list", "--data", dir); code != 1 || !strings.Contains(stderr, "no coordinator is running") {
		t.Fatalf("list before run: %d %q", code, stderr)
	}

	runCtx, stop := context.WithCancel(bg)
	runDone := make(chan int, 1)
	var runErr syncBuffer
	go func() {
		runDone <- Run(runCtx, []string{"run", "--data", dir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "debug"},
			Env{Stdout: &bytes.Buffer{}, Stderr: &runErr, Getenv: func(string) string { return "" }})
	}()
	defer func() {
		stop()
		if code := <-runDone; code != 0 {
			t.Errorf("run exited %d: %s", code, runErr.String())
		}
		if _, err := os.Stat(filepath.Join(dir, api.RunFile)); !os.IsNotExist(err) {
			t.Errorf("run.json left behind: %v", err)
		}
	}()
	var ri api.RunInfo
	deadline := time.Now().Add(10 * time.Second)
	for ri, err = api.ReadRunInfo(dir); err != nil; ri, err = api.ReadRunInfo(dir) {
		if time.Now().After(deadline) {
			t.Fatalf("coordinator did not start: %v\n%s", err, runErr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	code, stdout, stderr = cli(t, bg, nil, "agents", "list", "--data", dir, "--json")
	if code != 0 || strings.TrimSpace(stdout) != "[]" {
		t.Fatalf("agents list --json: %d %q %q", code, stdout, stderr)
	}
	code, stdout, stderr = cli(t, bg, nil, "token", "create", "--data", dir, "--environment", "Local", "--ttl", "2h")
	if code != 0 || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("token create: %d %q %q", code, stdout, stderr)
	}
	j, err := protocol.ParseJoin(stdout)
	if err != nil || j.Thumbprint != thumb || j.Servers[0] != ri.AgentAddr {
		t.Fatalf("join %q: %+v %v", stdout, j, err)
	}
	code, stdout, _ = cli(t, bg, nil, "token", "create", "--data", dir, "--environment", "Local", "--server", "tendril.example:10943", "--json")
	var tok api.TokenResult
	if code != 0 || json.Unmarshal([]byte(stdout), &tok) != nil || !strings.HasPrefix(tok.Join, "tendril://tendril.example:10943/?") || !strings.Contains(stdout, "&token=") {
		t.Fatalf("token create --json: %d %q", code, stdout)
	}

	key, err := os.ReadFile(filepath.Join(dir, api.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	remote := map[string]string{envURL: "http://" + ri.HTTP, envAPIKey: strings.TrimSpace(string(key))}
	if code, stdout, stderr := cli(t, bg, remote, "agents", "list"); code != 0 || !strings.HasPrefix(stdout, "No agents yet.") {
		t.Fatalf("agents list via env: %d %q %q", code, stdout, stderr)
	}
	// A wrong key on the command line beats the right one in the
	// environment, and the API's reason reaches the user.
	code, _, stderr = cli(t, bg, remote, "agents", "list", "--api-key", "tdk_wrong")
	if code != 1 || stderr != "tendril-server: list agents: the API key is not valid (HTTP 401)\n" {
		t.Fatalf("wrong key: %d %q", code, stderr)
	}
	code, _, stderr = cli(t, bg, nil, "agents", "delete", "ghost", "--data", dir)
	if code != 1 || stderr != "tendril-server: delete agent \"ghost\": no agent named \"ghost\" (HTTP 404)\n" {
		t.Fatalf("delete unknown: %d %q", code, stderr)
	}
	code, stdout, stderr = cli(t, bg, nil, "certificate", "rotate", "--data", dir, "--json")
	var rot api.RotationResult
	if code != 0 || json.Unmarshal([]byte(stdout), &rot) != nil || rot.Previous != thumb || rot.Thumbprint == thumb {
		t.Fatalf("rotate: %d %q %q", code, stdout, stderr)
	}
	if code, stdout, _ := cli(t, bg, nil, "thumbprint", "--data", dir); code != 0 || stdout != rot.Thumbprint+"\n" {
		t.Fatalf("thumbprint after rotation: %d %q", code, stdout)
	}
}

// TestHelpDocumentsExitCodes: the root help lists the exit codes that
// Run returns, and those codes are what the commands give.
func TestHelpDocumentsExitCodes(t *testing.T) {
	code, stdout, _ := cli(t, context.Background(), nil, "--help")
	if code != 0 {
		t.Fatalf("--help: got %d, want 0", code)
	}
	for _, want := range []string{"Exit codes:", "\n  0    success", "\n  1    failure", "\n  2    usage error", "\n  130  interrupted", "\n  N    task run: the task's own exit code"} {
		if !strings.Contains(stdout, want) {
			t.Fatalf("--help: want %q in:\n%s", want, stdout)
		}
	}
	// 2 for usage, 1 for a failure, 130 for an interrupt: the codes the
	// help promises (task run's own are tested with task run).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		vars map[string]string
		args []string
		want int
	}{
		{"usage", context.Background(), nil, []string{"rollout", "show"}, 2},
		{"failure", context.Background(), map[string]string{envURL: "http://127.0.0.1:1", envAPIKey: "k"}, []string{"rollout", "list"}, 1},
		{"interrupted", ctx, map[string]string{envURL: "http://127.0.0.1:1", envAPIKey: "k"}, []string{"rollout", "list"}, 130},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, _, stderr := cli(t, tt.ctx, tt.vars, tt.args...); code != tt.want {
				t.Fatalf("got %d (%s), want %d", code, stderr, tt.want)
			}
		})
	}
}

// TestListingsHaveJSON: every command that shows data (list, show,
// status, version) takes --json.
func TestListingsHaveJSON(t *testing.T) {
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		switch c.Name() {
		case "list", "show", "status", "version":
			n++
			if c.Flags().Lookup("json") == nil {
				t.Errorf("%s has no --json", c.CommandPath())
			}
		}
	}
	walk(newRootCmd(Env{Stdout: io.Discard, Stderr: io.Discard, Getenv: func(string) string { return "" }}))
	if n < 8 {
		t.Fatalf("found %d listing commands, want the 8 and more there are", n)
	}
}
