//go:build !windows

package main

import (
	"fmt"
	"os"
	"syscall"
)

// reexec replaces this process's image with the binary at exe, with the
// same arguments and environment: the process id stays, so a service
// manager keeps tracking the agent. It returns only on failure.
func reexec(exe string) error {
	if err := syscall.Exec(exe, os.Args, os.Environ()); err != nil {
		return fmt.Errorf("restart into the new version %s: %w", exe, err)
	}
	return nil
}
