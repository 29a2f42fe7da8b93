package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/tendrildeploy/tendril/servicemsg"
)

// setOutputCmd sets an output variable of the task: it prints the
// service message the agent reads from the task's output.
func setOutputCmd(args []string, stdout io.Writer) error {
	if len(args) != 2 {
		return usagef("set-output: want NAME VALUE, got %d arguments", len(args))
	}
	line, err := servicemsg.SetOutput(args[0], args[1])
	if err != nil {
		return usagef("%v", err)
	}
	_, err = fmt.Fprintln(stdout, line)
	return err
}

// artifactCmd attaches a file to the task. The path is made absolute
// here, where the script's working folder is known: the agent resolves
// it against the task's folder, and a script may have changed folder.
func artifactCmd(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usagef("artifact: want PATH, got %d arguments", len(args))
	}
	abs, err := filepath.Abs(args[0])
	if err != nil {
		return fmt.Errorf("artifact %s: %w", args[0], err)
	}
	line, err := servicemsg.Artifact(abs)
	if err != nil {
		return usagef("%v", err)
	}
	_, err = fmt.Fprintln(stdout, line)
	return err
}
