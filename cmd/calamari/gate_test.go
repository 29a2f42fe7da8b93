//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tendrildeploy/tendril/taskenv"
)

// TestStartGate runs calamari as its own process with the gate the agent
// sets: it does nothing until the gate opens, passes neither the
// descriptor nor the variable on to the script, and when the gate closes
// unopened it ends without running anything.
func TestStartGate(t *testing.T) {
	var v taskenv.Version
	code, out, _ := calamari(t, "", "version", "--json")
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || !slices.Contains(v.Features, taskenv.FeatureStartGate) {
		t.Fatalf("version --json: got %d %q (%v), want the feature %q", code, out, err, taskenv.FeatureStartGate)
	}
	tests := []struct {
		name     string
		open     bool
		wantCode int
		wantOut  string
		wantRan  bool
	}{
		{name: "opened", open: true, wantCode: 0, wantOut: "fd 3: no, variable: []\n", wantRan: true},
		{name: "closed unopened", wantCode: exitError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "ran")
			script := `touch ` + marker + `; if [ -e /dev/fd/3 ]; then fd=yes; else fd=no; fi; echo "fd 3: $fd, variable: [$` + taskenv.Gate + `]"`
			cmd := exec.Command(os.Args[0], "run-script", "--inline", script)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.ExtraFiles = []*os.File{r}
			cmd.Env = append(os.Environ(), envAsMain+"=1", taskenv.Exec+"=", taskenv.Gate+"=3")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			r.Close()
			if tt.open {
				w.Write([]byte{'g'})
			}
			w.Close()
			err = cmd.Wait()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			if got := cmd.ProcessState.ExitCode(); got != tt.wantCode || stdout.String() != tt.wantOut || stderr.Len() != 0 {
				t.Errorf("got exit %d, stdout %q, stderr %q; want exit %d, stdout %q and nothing on stderr", got, stdout.String(), stderr.String(), tt.wantCode, tt.wantOut)
			}
			if _, err := os.Stat(marker); (err == nil) != tt.wantRan {
				t.Errorf("script ran: got %v, want %v", err == nil, tt.wantRan)
			}
		})
	}
}
