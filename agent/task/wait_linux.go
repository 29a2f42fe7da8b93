package task

import (
	"errors"

	"golang.org/x/sys/unix"
)

// waitExited blocks until the process has exited, without reaping it
// (WNOWAIT): while it is an unreaped zombie its pid, and so its process
// group id, cannot be reused, and the group can still be signalled
// safely. It reports false if it could not wait.
func waitExited(pid int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil
	}
}
