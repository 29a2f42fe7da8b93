//go:build windows

package task

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// newProcessGroup starts the task's process in a new process group, so a
// console interrupt meant for the agent does not reach it.
func newProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: syscall.CREATE_NEW_PROCESS_GROUP}
}

// terminateGroup ends the task's process and every process it started.
// Windows has no polite signal for a process without a console window, so
// this is already forceful; taskkill walks the tree by parent process id.
func terminateGroup(p *os.Process) error {
	out, err := exec.Command("taskkill", "/T", "/F", "/PID", strconv.Itoa(p.Pid)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskkill %d: %w: %s", p.Pid, err, out)
	}
	return nil
}

// killGroup is terminateGroup again, and the process itself for good
// measure if taskkill could not run.
func killGroup(p *os.Process) {
	if terminateGroup(p) != nil {
		p.Kill()
	}
}

// exitStatus is the process's exit code; Windows has no signals to name.
func exitStatus(ps *os.ProcessState) (code int, signal string) { return ps.ExitCode(), "" }
