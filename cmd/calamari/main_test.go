package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tendrildeploy/tendril/version"
)

func TestMain(m *testing.M) {
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
