package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/tendrildeploy/tendril/taskenv"
)

// stopGrace is how long a script gets to exit after calamari is asked to
// stop (SIGINT/SIGTERM) before it is killed.
const stopGrace = 10 * time.Second

func runScriptCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("run-script")
	inline := fs.String("inline", "", "the script text")
	file := fs.String("file", "", "a script file")
	shell := fs.String("shell", "", "sh, bash, cmd, powershell or pwsh (default: sh, cmd on Windows)")
	if err := parse(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["inline"] == set["file"] {
		return usagef("run-script: give exactly one of --inline and --file")
	}
	if set["file"] {
		if st, err := os.Stat(*file); err != nil {
			return fmt.Errorf("run-script: %w", err)
		} else if st.IsDir() {
			return fmt.Errorf("run-script: %s is a folder", *file)
		}
	}
	sc, err := shellCommand(runtime.GOOS, *shell, *inline, *file, set["file"])
	if err != nil {
		return err
	}
	if runtime.GOOS != "windows" && os.Getenv(taskenv.Exec) == "1" {
		return execScript(sc)
	}
	return runScript(ctx, sc, stdin, stdout, stderr)
}

// execScript replaces calamari with the shell, which inherits its
// standard streams, folder and process. Nothing of calamari is left to
// do once the shell starts: its stop grace and a signal's exit code are
// the agent's (taskenv.Exec), so starting the shell as a child and waiting
// for it only cost a process start, a wait and a Go exit per task. The
// variable goes, so that a calamari the script runs itself waits for its
// shell as before. It returns only if the shell cannot start.
func execScript(sc script) error {
	path, err := exec.LookPath(sc.argv[0])
	if err != nil {
		return fmt.Errorf("run-script: %w", err)
	}
	os.Unsetenv(taskenv.Exec)
	if err := syscall.Exec(path, sc.argv, os.Environ()); err != nil {
		return fmt.Errorf("run-script: start %s: %w", path, err)
	}
	return nil
}

// script is how to start a shell on a script.
type script struct {
	argv []string
	// cmdLine, when set, is the exact Windows command line: cmd.exe parses
	// its own command line and does not understand the quoting Go applies
	// to argv.
	cmdLine string
}

func shellCommand(goos, shell, inline, file string, isFile bool) (script, error) {
	if shell == "" {
		shell = "sh"
		if goos == "windows" {
			shell = "cmd"
		}
	}
	switch shell {
	case "sh", "bash":
		exe := "/bin/sh"
		if shell == "bash" {
			exe = "bash"
		}
		if isFile {
			return script{argv: []string{exe, file}}, nil
		}
		return script{argv: []string{exe, "-c", inline}}, nil
	case "cmd":
		body := inline
		if isFile {
			body = `"` + file + `"`
		}
		// /S: strip exactly the outer quotes and run the rest verbatim.
		return script{argv: []string{"cmd", "/S", "/C", body}, cmdLine: `cmd /S /C "` + body + `"`}, nil
	case "powershell", "pwsh":
		pre := []string{shell, "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass"}
		if isFile {
			return script{argv: append(pre, "-File", file)}, nil
		}
		return script{argv: append(pre, "-Command", inline)}, nil
	default:
		return script{}, usagef("run-script: unknown shell %q (want sh, bash, cmd, powershell or pwsh)", shell)
	}
}

// runScript runs the shell in the current folder with calamari's standard
// streams and returns the script's exit code as an exitCode error (nil for
// 0). SIGINT or SIGTERM to calamari is passed on to the script, which gets
// stopGrace to finish before it is killed.
func runScript(ctx context.Context, sc script, stdin io.Reader, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := exec.CommandContext(ctx, sc.argv[0], sc.argv[1:]...)
	setCmdLine(cmd, sc.cmdLine)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.Cancel = func() error {
		if runtime.GOOS == "windows" {
			return cmd.Process.Kill()
		}
		return cmd.Process.Signal(syscall.SIGTERM)
	}
	cmd.WaitDelay = stopGrace
	err := cmd.Run()
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitCode(scriptExitCode(ee.ProcessState))
	}
	return fmt.Errorf("run-script: %w", err)
}

// scriptExitCode is the process's exit code or, if a signal killed it,
// 128 + the signal number, as shells report it.
func scriptExitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if c := ps.ExitCode(); c > 0 {
		return c
	}
	return exitError // not exited normally and not signaled: say failed
}
