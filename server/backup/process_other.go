//go:build !unix

package backup

import "os"

// processAlive reports whether a process with that PID exists: on Windows
// finding it opens a handle, which fails once it has exited.
func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	p.Release()
	return true
}
