//go:build unix

package task

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// newProcessGroup puts the task's process in a process group of its own,
// whose id is its pid, so one signal reaches everything it started (and
// a signal meant for the agent's group does not reach it).
func newProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// terminateGroup asks every process of the task's group to stop.
func terminateGroup(p *os.Process) error {
	return signalGroup(p, syscall.SIGTERM)
}

// killGroup kills every process of the task's group. A group already gone
// is not an error worth reporting: that is the goal.
func killGroup(p *os.Process) {
	signalGroup(p, syscall.SIGKILL)
}

// exitStatus is the process's exit code or, if a signal killed it, 128 +
// the signal's number, as shells report it, and the signal's name
// ("SIGTERM").
func exitStatus(ps *os.ProcessState) (code int, signal string) {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), unix.SignalName(ws.Signal())
	}
	return ps.ExitCode(), ""
}

func signalGroup(p *os.Process, sig syscall.Signal) error {
	if err := syscall.Kill(-p.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal process group %d: %w", p.Pid, err)
	}
	return nil
}
