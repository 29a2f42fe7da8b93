//go:build !windows

package upgrade

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func binaryName() string { return binaryBase }

// supported is nil where the agent upgrades itself.
func supported() error { return nil }

// detached puts a child in a session of its own, so the agent's end (or
// its terminal's) does not end it.
func detached() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }

// processAlive reports whether pid exists (EPERM: it exists, owned by
// someone else).
func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	if err != nil && !errors.Is(err, unix.EPERM) {
		return false
	}
	// A killed agent stays a zombie until its parent reaps it, but it is
	// gone: it holds no lock and runs nothing. Linux says so in /proc.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return false
		}
	}
	return true
}

func killProcess(pid int) error { return unix.Kill(pid, unix.SIGKILL) }

// runsProgram reports whether pid runs the program at exe. Linux tells
// through /proc (a replaced binary reads as "<exe> (deleted)"); where
// there is no /proc the answer is yes, as the watchdog cannot tell.
func runsProgram(pid int, exe string) bool {
	got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return true
	}
	return got == exe || strings.TrimSuffix(got, " (deleted)") == exe
}
