//go:build unix

package backup

import (
	"errors"
	"syscall"
)

// processAlive reports whether a process with that PID exists. EPERM means
// it exists but belongs to someone else, which still counts.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
