//go:build windows

package upgrade

import (
	"errors"
	"syscall"
)

func binaryName() string { return binaryBase + ".exe" }

// errWindows is why a Windows agent refuses upgrades for now: a running
// .exe cannot be replaced and re-executed in place there.
var errWindows = &RefusedError{Msg: "agent upgrades on Windows go through the service manager, which a later change adds; reinstall the agent to upgrade it"}

func supported() error { return errWindows }

func detached() *syscall.SysProcAttr { return nil }

func processAlive(int) bool { return false }

func killProcess(int) error { return errors.New("not supported on Windows") }

// runsProgram cannot be checked here; upgrades are refused on Windows.
func runsProgram(int, string) bool { return true }
