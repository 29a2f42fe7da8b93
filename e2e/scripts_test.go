package e2e

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/internal/servertest"
)

// TestScriptsOnEnvironmentJourney runs one script on an environment of
// three machines with a plain and a sensitive variable, with the real
// binaries and the real Calamari: each machine's result and artifact come
// back, an output feeds a later task, a list naming an unknown machine
// runs nothing, and the sensitive value is nowhere at rest or in a log.
func TestScriptsOnEnvironmentJourney(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	mustRun(t, "tendril-server", "init", "--data", data)
	coordinator := start(t, "tendril-server", "run", "--data", data, "--listen", servertest.FreeAddr(t), "--http", servertest.FreeAddr(t), "--health-interval", "1s")
	waitFor(t, "coordinator API", func() bool { return listAgents(t, data) != nil })
	names := []string{"web-1", "web-2", "web-3"}
	homes := make([]string, len(names))
	for i, name := range names {
		join := strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", data, "--environment", "Production"))
		homes[i] = filepath.Join(t.TempDir(), name)
		mustRun(t, "tendril-agent", "register", "--home", homes[i], "--join", join, "--name", name)
		start(t, "tendril-agent", "run", "--home", homes[i])
	}
	mustRun(t, "tendril-server", "calamari", "push", filepath.Join(binDir, "calamari.tar.gz"), "--data", data)
	waitFor(t, "three healthy agents with Calamari", func() bool {
		n := 0
		for _, r := range listAgents(t, data) {
			if r.Connected && r.Health == "healthy" && r.CalamariCurrent {
				n++
			}
		}
		return n == 3
	})

	secret := "Jq4-secret-" + strings.Repeat("z", 9)
	secretFile := filepath.Join(t.TempDir(), "pw.txt")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `echo "on $(basename "$TENDRIL_HOME") pw=$PW"; echo "report for $REGION" > report.txt; ` +
		`calamari artifact report.txt; calamari set-output BUILD "b-$REGION"`
	stdout, stderr, code := runCode(t, "tendril-server", "task", "run", "--environment", "Production", "--data", data,
		"--var", "REGION=eu", "--sensitive-var", "PW=@"+secretFile, "--", "run-script", "--inline", script)
	if code != 0 || strings.Count(stdout, "pw=********") != 3 || strings.Contains(stdout+stderr, secret) {
		t.Fatalf("task run on the environment: exit %d, want 0 and three masked lines\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	var tasks []struct {
		ID        string            `json:"id"`
		Group     string            `json:"group"`
		Agent     string            `json:"agent"`
		State     string            `json:"state"`
		Outputs   map[string]string `json:"outputs"`
		Artifacts []struct {
			Name string `json:"name"`
		} `json:"artifacts"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "tendril-server", "task", "list", "--data", data, "--json")), &tasks); err != nil || len(tasks) != 3 {
		t.Fatalf("task list: %d tasks (%v), want 3", len(tasks), err)
	}
	seen := map[string]bool{}
	for _, tk := range tasks {
		seen[tk.Agent] = true
		if tk.State != "succeeded" || tk.Group != tasks[0].Group || tk.Outputs["BUILD"] != "b-eu" || len(tk.Artifacts) != 1 || tk.Artifacts[0].Name != "report.txt" {
			t.Errorf("task on %s: got %+v, want succeeded in one group with output BUILD and artifact report.txt", tk.Agent, tk)
		}
	}
	if len(seen) != 3 {
		t.Errorf("tasks ran on %v, want the three machines", seen)
	}
	out := filepath.Join(t.TempDir(), "report.txt")
	mustRun(t, "tendril-server", "task", "artifact", tasks[0].ID, "report.txt", "--out", out, "--data", data)
	if b, err := os.ReadFile(out); err != nil || string(b) != "report for eu\n" {
		t.Errorf("downloaded artifact: got %q, %v", b, err)
	}
	show := mustRun(t, "tendril-server", "task", "show", tasks[0].ID, "--data", data)
	for _, want := range []string{`Variable:  REGION = "eu"`, "Variable:  PW = (sensitive)", `Output:    BUILD = "b-eu"`, "Artifact:  report.txt"} {
		if !strings.Contains(show, want) {
			t.Errorf("task show lacks %q:\n%s", want, show)
		}
	}

	// An output feeds the next task.
	stdout, stderr, code = runCode(t, "tendril-server", "task", "run", "--agent", "web-2", "--data", data,
		"--var-from", "FROM_BUILD="+tasks[0].ID+":BUILD", "--", "run-script", "--inline", `echo "deploying $FROM_BUILD"`)
	if code != 0 || !strings.Contains(stdout, "deploying b-eu") {
		t.Fatalf("task with --var-from: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if _, stderr, code := runCode(t, "tendril-server", "task", "run", "--agent", "web-2", "--data", data,
		"--var-from", tasks[0].ID+":NOPE", "--", "run-script", "--inline", "true"); code != 1 || !strings.Contains(stderr, `has no output "NOPE" (its outputs are BUILD)`) {
		t.Fatalf("--var-from a missing output: exit %d %q", code, stderr)
	}
	// A machine list naming an unknown machine runs nothing anywhere.
	if _, stderr, code := runCode(t, "tendril-server", "task", "run", "--agent", "web-1", "--agent", "ghost", "--data", data,
		"--", "run-script", "--inline", "true"); code != 1 || !strings.Contains(stderr, `no agent named "ghost"; nothing was started`) {
		t.Fatalf("a list with an unknown machine: exit %d %q", code, stderr)
	}
	if err := json.Unmarshal([]byte(mustRun(t, "tendril-server", "task", "list", "--data", data, "--json")), &tasks); err != nil || len(tasks) != 4 {
		t.Fatalf("task list: %d tasks (%v), want 4: the refused requests made none", len(tasks), err)
	}

	coordinator.kill()
	needle := []byte(secret)
	for _, dir := range append([]string{data}, homes...) {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, needle) {
				t.Errorf("%s holds the sensitive value", path)
			}
			return nil
		})
	}
	if bytes.Contains(coordinator.log.Bytes(), needle) {
		t.Error("the coordinator's log holds the sensitive value")
	}
}
