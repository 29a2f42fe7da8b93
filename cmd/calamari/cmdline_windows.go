package main

import (
	"os/exec"
	"syscall"
)

// setCmdLine makes cmd run with exactly line as its Windows command line.
func setCmdLine(cmd *exec.Cmd, line string) {
	if line != "" {
		cmd.SysProcAttr = &syscall.SysProcAttr{CmdLine: line}
	}
}
