package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/taskenv"

	"go.uber.org/goleak"

	"github.com/tendrildeploy/tendril/version"
)

// envAsMain makes the test binary calamari itself, for the tests that
// need a process of its own: one that replaces itself with the shell.
const envAsMain = "CALAMARI_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envAsMain) == "1" {
		main()
	}
	goleak.VerifyTestMain(m)
}

// calamari runs the command line in-process and returns its exit code and
// output.
func calamari(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestVersionAndHealth(t *testing.T) {
	code, out, _ := calamari(t, "", "version")
	if code != 0 || out != version.Version+"\n" {
		t.Errorf("version: got %d %q, want 0 %q", code, out, version.Version+"\n")
	}
	code, out, _ = calamari(t, "", "version", "--json")
	var v struct{ Version string }
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || v.Version != version.Version {
		t.Errorf("version --json: got %d %q (%v), want 0 and version %s", code, out, err, version.Version)
	}
	code, out, _ = calamari(t, "", "health")
	var h health
	if err := json.Unmarshal([]byte(out), &h); code != 0 || err != nil {
		t.Fatalf("health: got %d %q (%v), want 0 and JSON", code, out, err)
	}
	if want := (health{Version: version.Version, OS: runtime.GOOS, Arch: runtime.GOARCH, OK: true}); h != want {
		t.Errorf("health: got %+v, want %+v", h, want)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := [][]string{
		{},
		{"nope"},
		{"version", "extra"},
		{"version", "--bogus"},
		{"health", "--json"},
		{"run-script"},
		{"run-script", "--inline", "true", "--file", "x"},
		{"run-script", "--inline", "true", "--shell", "fish"},
		{"run-script", "--inline"},
		{"deploy-package"},
		{"deploy-package", "--package", "p.tar.gz"},
		{"deploy-package", "--target", "t"},
		{"deploy-package", "--package", "p", "--target", "t", "--keep", "0"},
		{"deploy-package", "--package", "p", "--target", "t", "--release", "../x"},
		{"deploy-package", "--package", "p", "--target", "t", "--release", ".hidden"},
		{"deploy-package", "--package", "p", "--target", "t", "--release", "a/b"},
	}
	for _, args := range tests {
		code, out, errOut := calamari(t, "", args...)
		if code != exitUsage {
			t.Errorf("%q: got exit %d, want %d", args, code, exitUsage)
		}
		if out != "" || !strings.HasPrefix(errOut, "calamari: ") || !strings.Contains(errOut, "usage:") {
			t.Errorf("%q: got stdout %q stderr %q, want a reason and the usage on stderr", args, out, errOut)
		}
	}
}

func TestRunScript(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("POSIX shell scripts")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "s.sh")
	if err := os.WriteFile(file, []byte("echo from file\necho to stderr >&2\nexit 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	tests := []struct {
		name            string
		stdin           string
		args            []string
		code            int
		stdout, stderr  string
		stderrHasPrefix bool
	}{
		{"success", "", []string{"--inline", "echo hello"}, 0, "hello\n", "", false},
		{"exit code and both streams", "", []string{"--inline", "echo out; echo err >&2; exit 3"}, 3, "out\n", "err\n", false},
		{"large exit code", "", []string{"--inline", "exit 255"}, 255, "", "", false},
		{"killed by a signal", "", []string{"--inline", "kill -TERM $$"}, 128 + 15, "", "", false},
		{"file", "", []string{"--file", file}, 7, "from file\n", "to stderr\n", false},
		{"stdin", "abc\n", []string{"--inline", "read x; echo got $x"}, 0, "got abc\n", "", false},
		{"current folder", "", []string{"--inline", "pwd -P"}, 0, mustEval(t, wd) + "\n", "", false},
		{"explicit sh", "", []string{"--shell", "sh", "--inline", "echo sh"}, 0, "sh\n", "", false},
		{"missing file", "", []string{"--file", filepath.Join(dir, "missing.sh")}, 1, "", "calamari: run-script: ", true},
		{"folder as file", "", []string{"--file", dir}, 1, "", "calamari: run-script: ", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := calamari(t, tt.stdin, append([]string{"run-script"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit code: got %d, want %d (stderr %q)", code, tt.code, errOut)
			}
			if out != tt.stdout {
				t.Errorf("stdout: got %q, want %q", out, tt.stdout)
			}
			if tt.stderrHasPrefix {
				if !strings.HasPrefix(errOut, tt.stderr) || strings.Count(errOut, "\n") != 1 {
					t.Errorf("stderr: got %q, want one line starting %q", errOut, tt.stderr)
				}
			} else if errOut != tt.stderr {
				t.Errorf("stderr: got %q, want %q", errOut, tt.stderr)
			}
		})
	}
}

func mustEval(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRunScriptExec runs calamari as its own process, as the agent does,
// and checks that with taskenv.Exec it becomes the script's shell (the
// shell's pid is calamari's), without it starts the shell as a child,
// and either way the script gets its streams and its exit code reaches
// the caller: as the shell's own, or as the signal that killed it, which
// the agent turns into 128 + the signal itself.
func TestRunScriptExec(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no exec on Windows: calamari always waits for its shell there")
	}
	const script = `echo "pid $$ exec [$` + taskenv.Exec + `]"; read x; echo "got $x" >&2; exit 4`
	tests := []struct {
		name     string
		exec     bool
		args     []string
		wantSame bool // the shell's pid is calamari's
		wantCode int
		signaled syscall.Signal
		stderr   string
	}{
		{name: "exec", exec: true, args: []string{"--inline", script}, wantSame: true, wantCode: 4, stderr: "got abc\n"},
		{name: "child", args: []string{"--inline", script}, wantCode: 4, stderr: "got abc\n"},
		{name: "exec, killed by a signal", exec: true, args: []string{"--inline", "kill -TERM $$"}, wantCode: -1, signaled: syscall.SIGTERM},
		{name: "child, killed by a signal", args: []string{"--inline", "kill -TERM $$"}, wantCode: 128 + 15},
		{name: "exec, no such shell", exec: true, args: []string{"--shell", "pwsh", "--inline", "true"}, wantCode: exitError, stderr: "calamari: run-script: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], append([]string{"run-script"}, tt.args...)...)
			cmd.Env = append(os.Environ(), envAsMain+"=1", taskenv.Exec+"=", "PATH=/usr/bin:/bin")
			if tt.exec {
				cmd.Env = append(cmd.Env, taskenv.Exec+"=1")
			}
			cmd.Stdin = strings.NewReader("abc\n")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if got := cmd.ProcessState.ExitCode(); got != tt.wantCode || ws.Signaled() != (tt.signaled != 0) || ws.Signaled() && ws.Signal() != tt.signaled {
				t.Errorf("got exit code %d, signal %v, want %d, signal %v (stderr %q)", got, ws.Signal(), tt.wantCode, tt.signaled, stderr.String())
			}
			if !strings.HasPrefix(stderr.String(), tt.stderr) {
				t.Errorf("stderr: got %q, want it to start with %q", stderr.String(), tt.stderr)
			}
			if tt.wantCode != 4 {
				return
			}
			// The variable is the agent's word to this calamari only: a
			// calamari the script runs itself waits for its shell.
			var pid int
			var env string
			if _, err := fmt.Sscanf(stdout.String(), "pid %d exec %s", &pid, &env); err != nil || env != "[]" {
				t.Fatalf("stdout: got %q (%v), want the shell's pid and an empty %s", stdout.String(), err, taskenv.Exec)
			}
			if same := pid == cmd.Process.Pid; same != tt.wantSame {
				t.Errorf("shell's pid %d, calamari's %d: got same %v, want %v", pid, cmd.Process.Pid, same, tt.wantSame)
			}
		})
	}
}

// TestRunScriptStop checks that a stop request reaches the script, which
// can clean up and choose its exit code.
func TestRunScriptStop(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("POSIX signals")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr bytes.Buffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"run-script", "--inline", `trap 'echo stopping; kill $!; exit 5' TERM; echo started; sleep 30 >/dev/null 2>&1 & wait`},
			strings.NewReader(""), &stdout, &stderr)
	}()
	time.Sleep(300 * time.Millisecond) // let the shell set its trap
	start := time.Now()
	cancel()
	code := <-done
	if code != 5 {
		t.Errorf("exit code: got %d, want 5 (stdout %q stderr %q)", code, stdout.String(), stderr.String())
	}
	if got := stdout.String(); got != "started\nstopping\n" {
		t.Errorf("stdout: got %q, want started and stopping", got)
	}
	if d := time.Since(start); d > stopGrace/2 {
		t.Errorf("stop took %v, want the script to end promptly", d)
	}
}

func TestShellCommand(t *testing.T) {
	tests := []struct {
		goos, shell, inline, file string
		isFile                    bool
		want                      []string
		cmdLine                   string
	}{
		{"linux", "", "echo hi", "", false, []string{"/bin/sh", "-c", "echo hi"}, ""},
		{"linux", "", "", "x.sh", true, []string{"/bin/sh", "x.sh"}, ""},
		{"windows", "", "echo hi", "", false, []string{"cmd", "/S", "/C", "echo hi"}, `cmd /S /C "echo hi"`},
		{"windows", "", "", `C:\a b\x.cmd`, true, []string{"cmd", "/S", "/C", `"C:\a b\x.cmd"`}, `cmd /S /C ""C:\a b\x.cmd""`},
		{"windows", "powershell", "Write-Output hi", "", false, []string{"powershell", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", "Write-Output hi"}, ""},
		{"linux", "pwsh", "", "x.ps1", true, []string{"pwsh", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File", "x.ps1"}, ""},
	}
	for _, tt := range tests {
		got, err := shellCommand(tt.goos, tt.shell, tt.inline, tt.file, tt.isFile)
		if err != nil || !slices.Equal(got.argv, tt.want) || got.cmdLine != tt.cmdLine {
			t.Errorf("shellCommand(%s, %q): got %q %q %v, want %q %q", tt.goos, tt.shell, got.argv, got.cmdLine, err, tt.want, tt.cmdLine)
		}
	}
}
