//go:build unix

package pgtest

import (
	"errors"
	"os"
	"syscall"
)

// interrupt asks PostgreSQL for a fast shutdown: clients are disconnected
// and the server exits at once, cleanly.
func interrupt(p *os.Process) error {
	return p.Signal(syscall.SIGINT)
}

// alive reports whether a process with that PID exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
