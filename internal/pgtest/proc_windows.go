package pgtest

import (
	"errors"
	"os"
	"syscall"
)

// sysProcAttr has nothing to set on Windows, where tests do not run as
// root.
func sysProcAttr(uid, gid int) *syscall.SysProcAttr { return nil }

// interrupt cannot signal on Windows; Stop falls back to killing the
// server, which is only a throwaway.
func interrupt(p *os.Process) error {
	return errors.New("no signals on windows")
}

// alive reports whether a process with that PID exists.
func alive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	p.Release()
	return true
}
