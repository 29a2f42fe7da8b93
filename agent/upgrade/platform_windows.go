//go:build windows

package upgrade

import (
	"context"
	"os"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/windows"

	"github.com/tendrildeploy/tendril/agent/service"
)

func binaryName() string { return binaryBase + ".exe" }

// errWindows is why a Windows agent in the foreground refuses upgrades: a
// running .exe cannot be re-executed in place, so the restart goes through
// the Service Control Manager, which needs the agent to run as a service.
var errWindows = &RefusedError{Msg: "agent upgrades on Windows need the agent to run as a service (tendril-agent service install); reinstall a foreground agent to upgrade it"}

// supported: on Windows only a service upgrades, restarted by the
// watchdog through the Service Control Manager (see afterSwap).
func supported(svc string) error {
	if svc == "" {
		return errWindows
	}
	return nil
}

// replaceRunning puts next in place of the running exe: Windows refuses
// to overwrite a running image but lets it be renamed, so it is moved
// aside first (exe.old, removed by the next upgrade).
func replaceRunning(next, exe string) error {
	old := exe + ".old"
	os.Remove(old)
	if err := os.Rename(exe, old); err != nil {
		return err
	}
	if err := os.Rename(next, exe); err != nil {
		os.Rename(old, exe)
		return err
	}
	return nil
}

// afterSwap is the Windows restart step, run by the watchdog (started
// before the swap) while it waits for the commit: once the agent process
// that swapped has exited (it asks the Service Control Manager to stop
// its service), the watchdog starts the service again, now on the new
// binary. Not exercised by the tests, which run on Linux.
func afterSwap(ctx context.Context, st *State, log *zap.Logger) {
	if st.Service == "" || st.restarted || processAlive(st.PID) {
		return
	}
	st.restarted = true
	if err := service.RestartByName(ctx, st.Service); err != nil {
		log.Error("could not start the agent service on the new version", zap.String("service", st.Service), zap.Error(err))
		return
	}
	log.Info("agent service started on the new version", zap.String("service", st.Service))
}

func detached() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{CreationFlags: windows.CREATE_NEW_PROCESS_GROUP | windows.DETACHED_PROCESS}
}

// stillActive is GetExitCodeProcess's code for a process still running.
const stillActive = 259

func processAlive(pid int) bool {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return false
	}
	defer windows.CloseHandle(h)
	var code uint32
	if err := windows.GetExitCodeProcess(h, &code); err != nil {
		return false
	}
	return code == stillActive
}

func killProcess(pid int) error {
	h, err := windows.OpenProcess(windows.PROCESS_TERMINATE, false, uint32(pid))
	if err != nil {
		return err
	}
	defer windows.CloseHandle(h)
	return windows.TerminateProcess(h, 1)
}

// runsProgram cannot be checked cheaply here; the PID is the service's.
func runsProgram(int, string) bool { return true }
