package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/backup"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// logBuffer is a zap logger that keeps everything it is given, at every
// level, for a search of what must never be logged.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) Sync() error { return nil }

func (b *logBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

func (b *logBuffer) logger() *zap.Logger {
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewDevelopmentEncoderConfig()), b, zap.DebugLevel))
}

// filesHolding lists the files under dir whose bytes contain s.
func filesHolding(t *testing.T, dir string, s []byte) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, s) {
			out = append(out, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// readyAgent registers and runs an agent, and returns once both sides
// say it is connected and Calamari 1.0.0 is uploaded: ready for tasks.
func (ts *testServer) readyAgent(t *testing.T, name string, mod func(*agent.Config)) *runningAgent {
	t.Helper()
	ra := startAgent(t, registerAgent(t, ts, ts.AgentAddr(), name, nil), mod)
	ts.waitConnected(t, name)
	eventually(t, name+" says it is connected", func() bool { return ra.Status().Connected })
	if _, err := ts.store.Bundle(context.Background(), "1.0.0"); errors.Is(err, store.ErrNotFound) {
		ts.upload(t, packBundle(t, "1.0.0", 0))
	}
	return ra
}

// serviceLine is what `calamari set-output` and `calamari artifact` print,
// written out in shell for the test bundle's Calamari, a shell script.
func serviceLine(kind, arg string, value string) string {
	enc := base64.StdEncoding.EncodeToString([]byte(value))
	if arg != "" {
		return fmt.Sprintf("echo '##tendril[%s %s %s]'", kind, arg, enc)
	}
	return fmt.Sprintf("echo '##tendril[%s %s]'", kind, enc)
}

// TestSensitiveVariableNowhereAtRest runs a task with a sensitive variable
// that its script prints in every way it can, and then looks for the value
// everywhere it could have been kept: the database, a backup, the agent's
// home, both logs and every API answer about the task.
func TestSensitiveVariableNowhereAtRest(t *testing.T) {
	var serverLog, agentLog logBuffer
	ts := startServer(t, func(c *Config) { c.Logger = serverLog.logger() })
	home := ts.readyAgent(t, "web-1", func(c *agent.Config) { c.Logger = agentLog.logger() }).home
	if v := ts.agentView(t, "web-1"); len(v.Lacks) != 0 || !slices.Contains(v.Features, "task_variables") {
		t.Fatalf("this tree's agent: got features %v, lacks %v; want task_variables and nothing lacking", v.Features, v.Lacks)
	}

	secret := "pa55-Wd9-" + strings.Repeat("q", 7)
	script := strings.Join([]string{
		`echo "region=$REGION"`,
		`echo "password=$DB_PASSWORD"`,
		`printf 'split=%s' "${DB_PASSWORD%???????}"; printf '%s\n' "${DB_PASSWORD#?????????}"`,
		serviceLine("set-output", "COPY", "pre-"+secret),
		serviceLine("set-output", "VERSION", "2.4.1"),
		`printf 'last=%s' "$DB_PASSWORD"`,
	}, "\n")
	task := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", script},
		Variables: []api.Variable{{Name: "REGION", Value: "eu-west"}, {Name: "DB_PASSWORD", Value: secret, Sensitive: true}}})
	// While it is stored but not final, the value is sealed.
	if st, err := ts.store.Task(context.Background(), task.ID); err != nil || len(st.Sensitive) != 1 || bytes.Contains(st.Sensitive[0].Sealed, []byte(secret)) {
		t.Fatalf("stored task: got %+v, %v; want one sealed variable", st.Sensitive, err)
	}
	done := ts.waitFinished(t, task.ID)
	if done.State != api.TaskSucceeded {
		t.Fatalf("got %s (%s), want succeeded", done.State, done.Error)
	}

	lines := ts.taskLines(t, task.ID)
	for _, want := range []string{"region=eu-west", "password=********", "split=********", "last=********", `output VERSION = "2.4.1"`} {
		if _, ok := lineWith(lines, "", want); !ok {
			t.Errorf("log lacks %q", want)
		}
	}
	wantVars := []api.Variable{{Name: "REGION", Value: "eu-west"}, {Name: "DB_PASSWORD", Sensitive: true}}
	if fmt.Sprint(done.Variables) != fmt.Sprint(wantVars) {
		t.Errorf("got variables %+v, want %+v", done.Variables, wantVars)
	}
	if done.Outputs["VERSION"] != "2.4.1" || done.Outputs["COPY"] != "pre-********" {
		t.Errorf("got outputs %v, want VERSION 2.4.1 and COPY masked", done.Outputs)
	}
	if st, _ := ts.store.Task(context.Background(), task.ID); len(st.Sensitive) != 1 || st.Sensitive[0].Sealed != nil {
		t.Errorf("final task: got sensitive %+v, want the name only", st.Sensitive)
	}

	var answers [][]byte
	for _, path := range []string{"/api/tasks/" + task.ID, "/api/tasks/" + task.ID + "/log", "/api/tasks?agent=web-1", "/api/openapi.json"} {
		resp, body := ts.api(t, "GET", path, "", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		answers = append(answers, body)
	}
	snap, err := ts.TakeSnapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "backup.tar.gz")
	if _, err := backup.Backup(context.Background(), backup.Options{DataDir: ts.dir, Out: out, Passphrase: testPassphrase, Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	needle := []byte(secret)
	if files := filesHolding(t, ts.dir, needle); len(files) > 0 {
		t.Errorf("the coordinator's data folder holds the value in %v (snapshot %s)", files, snap.Name)
	}
	if bytes.Contains(decompressed(t, out), needle) {
		t.Error("the backup holds the value")
	}
	if files := filesHolding(t, home, needle); len(files) > 0 {
		t.Errorf("the agent's home holds the value in %v", files)
	}
	for name, b := range map[string][]byte{"coordinator log": serverLog.bytes(), "agent log": agentLog.bytes(),
		"API answers": bytes.Join(answers, nil)} {
		if bytes.Contains(b, needle) {
			t.Errorf("the %s holds the value", name)
		}
	}
}

// TestOutputsAndArtifacts chains two tasks through an output variable and
// collects an artifact, resumable, from the agent; bad references and
// paths are refused with their reasons.
func TestOutputsAndArtifacts(t *testing.T) {
	ts := startServer(t, nil)
	ts.readyAgent(t, "web-1", nil)
	ctx := context.Background()

	report := strings.Repeat("report line\n", 5000)
	script := strings.Join([]string{
		`mkdir -p out && printf '` + strings.ReplaceAll(report, "\n", `\n`) + `' > out/report.txt`,
		serviceLine("set-output", "BUILD", "b-77"),
		serviceLine("artifact", "", "out/report.txt"),
		serviceLine("artifact", "", "../../escape.txt"),
	}, "\n")
	first := ts.waitFinished(t, ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", script}}).ID)
	if first.State != api.TaskSucceeded || first.Outputs["BUILD"] != "b-77" {
		t.Fatalf("first task: got %s outputs %v, want succeeded with BUILD", first.State, first.Outputs)
	}
	if len(first.Artifacts) != 1 || first.Artifacts[0].Name != "report.txt" || first.Artifacts[0].Size != int64(len(report)) {
		t.Fatalf("got artifacts %+v, want report.txt of %d bytes", first.Artifacts, len(report))
	}
	lines := ts.taskLines(t, first.ID)
	for _, want := range []string{"Collected artifact report.txt", "artifact ../../escape.txt not attached: it is outside the task's folder"} {
		if _, ok := lineWith(lines, "", want); !ok {
			t.Errorf("first task's log lacks %q", want)
		}
	}
	resp, body := ts.api(t, "GET", "/api/tasks/"+first.ID+"/artifacts/report.txt", "", nil)
	if resp.StatusCode != http.StatusOK || string(body) != report || !strings.Contains(resp.Header.Get("Content-Disposition"), "report.txt") {
		t.Errorf("download: got %d, %d bytes, %q; want 200 and the report", resp.StatusCode, len(body), resp.Header.Get("Content-Disposition"))
	}
	if resp, _ := ts.api(t, "GET", "/api/tasks/"+first.ID+"/artifacts/nope.txt", "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown artifact: got %d, want 404", resp.StatusCode)
	}

	second := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", `echo "build=$BUILD from=$PREV"`},
		VariablesFrom: []api.VariableFrom{{Task: first.ID, Output: "BUILD"}, {Name: "PREV", Task: first.ID, Output: "BUILD"}}})
	second = ts.waitFinished(t, second.ID)
	if _, ok := lineWith(ts.taskLines(t, second.ID), "stdout", "build=b-77 from=b-77"); !ok || second.State != api.TaskSucceeded {
		t.Errorf("second task: got %s, want its log to say the first task's output", second.State)
	}

	tests := []struct {
		name string
		req  api.TaskRequest
		kind error
		want string
	}{
		{"no such output", api.TaskRequest{VariablesFrom: []api.VariableFrom{{Task: first.ID, Output: "NOPE"}}},
			kind.ErrBadRequest, `has no output "NOPE" (its outputs are BUILD)`},
		{"no such task", api.TaskRequest{VariablesFrom: []api.VariableFrom{{Task: "missing", Output: "BUILD"}}},
			store.ErrNotFound, `no task "missing"`},
		{"bad name", api.TaskRequest{Variables: []api.Variable{{Name: "MY VAR", Value: "x"}}}, kind.ErrBadRequest, "letters, digits"},
		{"agent's name", api.TaskRequest{Variables: []api.Variable{{Name: "TENDRIL_HOME", Value: "x"}}}, kind.ErrBadRequest, "are the agent's"},
		{"unknown agent among several", api.TaskRequest{Agents: []string{"ghost", "ghost-2"}}, store.ErrNotFound, `no agent named "ghost", "ghost-2"; nothing was started`},
		{"agents and an environment", api.TaskRequest{Agents: []string{"web-1"}, Environment: "Test"}, kind.ErrBadRequest, "not both"},
	}
	before, _ := ts.Tasks(ctx, api.TaskFilter{})
	for _, tt := range tests {
		req := tt.req
		if req.Agent == "" && len(req.Agents) == 0 && req.Environment == "" {
			req.Agent = "web-1"
		}
		if len(req.Agents) > 0 && req.Agents[0] == "ghost" {
			req.Agent = "web-1" // a known one too: still nothing runs
		}
		req.Args = []string{"run-script", "--inline", "echo must not run"}
		_, err := ts.CreateTasks(ctx, req)
		if !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %v saying %q", tt.name, err, tt.kind, tt.want)
		}
	}
	if after, _ := ts.Tasks(ctx, api.TaskFilter{}); len(after) != len(before) {
		t.Errorf("refused requests made %d tasks", len(after)-len(before))
	}
}

// TestArtifactFetchResumes collects artifacts whose earlier fetch was cut:
// from the bytes kept when they are the artifact's, from the start when
// they are not.
func TestArtifactFetchResumes(t *testing.T) {
	ts := startServer(t, nil)
	ts.readyAgent(t, "web-1", nil)

	tests := []struct {
		name    string
		content string
		kept    func(content string) string
		want    string
	}{
		{"resumed", strings.Repeat("first half ", 3000) + strings.Repeat("second half ", 3000),
			func(c string) string { return c[:len(c)/2] }, "resuming a cut transfer after"},
		{"kept bytes wrong", strings.Repeat("artifact ", 4000),
			func(c string) string { return strings.Repeat("X", 1000) }, "Collected artifact data.txt ("},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gate := filepath.Join(t.TempDir(), "gate")
			script := fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done; printf '%%s' '%s' > data.txt; %s", gate, tt.content, serviceLine("artifact", "", "data.txt"))
			task := ts.createTask(t, api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", script}})
			sum := sha256.Sum256([]byte(tt.content))
			partial := filepath.Join(ts.filesDir(), hex.EncodeToString(sum[:])+"."+task.ID+".artifact")
			if err := os.MkdirAll(ts.filesDir(), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(partial, []byte(tt.kept(tt.content)), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(gate, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			done := ts.waitFinished(t, task.ID)
			if done.State != api.TaskSucceeded || len(done.Artifacts) != 1 {
				t.Fatalf("got %s with artifacts %+v, want succeeded with one", done.State, done.Artifacts)
			}
			if _, ok := lineWith(ts.taskLines(t, task.ID), "coordinator", tt.want); !ok {
				t.Errorf("log lacks %q", tt.want)
			}
			resp, body := ts.api(t, "GET", "/api/tasks/"+task.ID+"/artifacts/data.txt", "", nil)
			if resp.StatusCode != http.StatusOK || string(body) != tt.content {
				t.Errorf("download: got %d and %d bytes, want 200 and the %d bytes the script wrote", resp.StatusCode, len(body), len(tt.content))
			}
		})
	}
}
