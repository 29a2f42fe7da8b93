//go:build unix

package task

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/taskenv"

	"github.com/tendrildeploy/tendril/protocol"
)

// gatedCalamari is a calamari that honours the start gate, in shell: it
// says so in `version --json`, waits at the gate, says whether task.json
// was there once the gate opened, and runs its arguments with /bin/sh.
const gatedCalamari = `#!/bin/sh
if [ "$1" = version ]; then echo '{"version":"1","features":["start-gate"]}'; exit 0; fi
if [ -n "$` + taskenv.Gate + `" ]; then
	g=$(head -c1 <&3)
	exec 3<&-
	[ "$g" = g ] || exit 1
	if [ -f "$` + taskenv.TaskDir + `/task.json" ]; then echo "gate opened after task.json"; fi
fi
exec /bin/sh "$@"
`

func newGatedRunner(t *testing.T) *Runner {
	t.Helper()
	entry := filepath.Join(t.TempDir(), "calamari")
	if err := os.WriteFile(entry, []byte(gatedCalamari), 0o755); err != nil {
		t.Fatal(err)
	}
	return newRunnerOf(t, filepath.Join(t.TempDir(), "Work"), entry)
}

// TestGatedStart starts tasks on a calamari that honours the start gate:
// the process starts before task.json is written and goes on only once it
// is; when task.json cannot be written, the start is refused and the
// process ends at the gate, having run nothing.
func TestGatedStart(t *testing.T) {
	r := newGatedRunner(t)
	if !r.gates.honoured(mustResolve(t, r)) {
		t.Fatal("the gated calamari: got not honoured, want honoured")
	}
	t.Run("runs once task.json is written", func(t *testing.T) {
		startTask(t, r, protocol.TaskStart{Ticket: "gated", Isolation: protocol.IsolationNone, Args: []string{"-c", "echo ran"}})
		entries, end := followAll(t, r, "gated")
		if end.State != protocol.TaskSucceeded {
			t.Fatalf("end: got %s (%s), want succeeded", end.State, end.Error)
		}
		var got []string
		for _, e := range entries {
			if e.Stream == streamStdout {
				got = append(got, e.Text)
			}
		}
		if strings.Join(got, "|") != "gate opened after task.json|ran" {
			t.Errorf("stdout: got %q, want the gate opened after task.json, then the script", got)
		}
	})
	t.Run("refused when task.json cannot be written", func(t *testing.T) {
		r.writeInfo = func(string, any) error { return errors.New("disk says no") }
		defer func() { r.writeInfo = writeJSON }()
		marker := filepath.Join(t.TempDir(), "ran")
		_, err := r.Start(context.Background(), protocol.TaskStart{Ticket: "refused", Calamari: "1", Isolation: protocol.IsolationNone,
			Args: []string{"-c", "touch " + marker}})
		var se *StartError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "disk says no") {
			t.Fatalf("start: got %v, want a StartError saying why", err)
		}
		if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the script ran (%v): want it to end at the gate", err)
		}
		if n := r.Running(); n != 0 {
			t.Errorf("running tasks: got %d, want 0", n)
		}
		if left := children(t, mustResolve(t, r)); len(left) > 0 {
			t.Errorf("processes of the refused start left, not reaped: %v", left)
		}
	})
}

// children lists this process's child processes running entry, reaped
// or not: a child the agent did not reap stays listed as a zombie.
// Linux only (/proc); elsewhere it lists none.
func children(t *testing.T, entry string) []int {
	t.Helper()
	if runtime.GOOS != "linux" {
		return nil
	}
	procs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var found []int
	for _, stat := range procs {
		b, err := os.ReadFile(stat)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces, so after ')'.
		rest := string(b[bytes.LastIndexByte(b, ')')+1:])
		var state string
		var ppid int
		if _, err := fmt.Sscan(rest, &state, &ppid); err != nil || ppid != os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(stat), "cmdline"))
		if state == "Z" || bytes.Contains(cmdline, []byte(entry)) {
			var pid int
			fmt.Sscan(filepath.Base(filepath.Dir(stat)), &pid)
			found = append(found, pid)
		}
	}
	return found
}

func mustResolve(t *testing.T, r *Runner) string {
	t.Helper()
	entry, err := r.cfg.Resolve("1")
	if err != nil {
		t.Fatal(err)
	}
	return entry
}

// TestGateProbeKeepsOnlyAnswers checks what the agent remembers of asking
// a calamari whether it honours the gate: nothing when the calamari could
// not be started at all (here a file not yet executable), so the next
// start asks again; the answer once it ran, whatever it was.
func TestGateProbeKeepsOnlyAnswers(t *testing.T) {
	entry := filepath.Join(t.TempDir(), "calamari")
	if err := os.WriteFile(entry, []byte(gatedCalamari), 0o644); err != nil {
		t.Fatal(err)
	}
	var g gates
	if g.honoured(entry) {
		t.Fatal("a calamari that cannot be started: got honoured, want not")
	}
	if err := os.Chmod(entry, 0o755); err != nil {
		t.Fatal(err)
	}
	if !g.honoured(entry) {
		t.Fatal("once it can be started: got not honoured, want honoured (a failed start must not be remembered)")
	}
	if err := os.Chmod(entry, 0o644); err != nil {
		t.Fatal(err)
	}
	if !g.honoured(entry) {
		t.Error("the same file, asked again: got not honoured, want the answer it gave")
	}
}
