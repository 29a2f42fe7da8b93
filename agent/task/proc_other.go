//go:build !unix && !windows

package task

import (
	"os"
	"os/exec"
)

// newProcessGroup does nothing where the system has no process groups.
func newProcessGroup(*exec.Cmd) {}

// terminateGroup can only end the task's own process here.
func terminateGroup(p *os.Process) error { return p.Kill() }

// killGroup can only end the task's own process here.
func killGroup(p *os.Process) { p.Kill() }

// exitStatus is the process's exit code; no signals here.
func exitStatus(ps *os.ProcessState) (code int, signal string) { return ps.ExitCode(), "" }
