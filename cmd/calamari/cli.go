package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/tendrildeploy/tendril/taskenv"

	"github.com/tendrildeploy/tendril/servicemsg"
	"github.com/tendrildeploy/tendril/version"
)

// Exit codes besides a script's own.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const usage = `usage:
  calamari version [--json]
  calamari run-script (--inline SCRIPT | --file FILE) [--shell sh|bash|cmd|powershell|pwsh]
  calamari deploy-package --package PKG.tar.gz --target DIR [--release NAME] [--keep N]
  calamari health
  calamari set-output NAME VALUE
  calamari artifact PATH`

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitCode carries a code to exit with that is not an error of calamari's
// own: a script's exit code.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit code %d", int(c)) }

// run runs one command and returns the process exit code. Errors are
// printed as one line "calamari: <reason>", which is what an operator sees
// in the task log.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdin, stdout, stderr)
	var code exitCode
	var uerr usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, &uerr):
		fmt.Fprintf(stderr, "calamari: %s\n%s\n", oneLine(uerr.msg), usage)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "calamari: %s\n", oneLine(err.Error()))
		return exitError
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("no command")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "version":
		return versionCmd(args, stdout)
	case "run-script":
		return runScriptCmd(ctx, args, stdin, stdout, stderr)
	case "deploy-package":
		return deployPackageCmd(ctx, args, stdout)
	case "health":
		return healthCmd(args, stdout)
	case servicemsg.KindSetOutput:
		return setOutputCmd(args, stdout)
	case servicemsg.KindArtifact:
		return artifactCmd(args, stdout)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		return usagef("unknown command %q", cmd)
	}
}

// newFlags returns a flag set that reports errors to run instead of
// printing and exiting.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usagef("%s: %v", fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

func versionCmd(args []string, stdout io.Writer) error {
	fs := newFlags("version")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, taskenv.Version{Version: version.Version, Features: []string{taskenv.FeatureStartGate}})
	}
	_, err := fmt.Fprintln(stdout, version.Version)
	return err
}

// health is what `calamari health` prints: that this bundle runs here.
type health struct {
	Version string `json:"version"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	OK      bool   `json:"ok"`
}

func healthCmd(args []string, stdout io.Writer) error {
	if err := parse(newFlags("health"), args); err != nil {
		return err
	}
	return writeJSON(stdout, health{Version: version.Version, OS: runtime.GOOS, Arch: runtime.GOARCH, OK: true})
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
