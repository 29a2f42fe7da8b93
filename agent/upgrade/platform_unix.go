//go:build !windows

package upgrade

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

func binaryName() string { return binaryBase }

// supported is nil where the agent upgrades itself: on Unix it re-executes
// into the new binary, as a service or not.
func supported(service string) error { return nil }

// replaceRunning renames next over the running binary exe: Unix lets a
// running program's file be replaced, the process keeps the old inode.
func replaceRunning(next, exe string) error { return os.Rename(next, exe) }

// afterSwap is the Windows restart step; on Unix the agent re-executes
// itself (same PID), so there is nothing to do.
func afterSwap(context.Context, *State, *zap.Logger) {}

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
