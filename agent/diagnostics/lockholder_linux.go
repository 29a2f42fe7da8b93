package diagnostics

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// procLocks lists the file locks the kernel holds, each with the process
// id of its holder as this process's PID namespace sees it.
const procLocks = "/proc/locks"

// lockHolder confirms which process holds the flock on the open lock
// file f before it is signalled. The process id the agent wrote into the
// file is the agent's own view of it: an agent in a container, sharing
// the home with the host, names a process id that on the host is another
// process, which SIGUSR1 could end. The kernel's list names the holder as
// this process sees it; a holder it cannot see (another PID namespace) is
// not signalled at all. A lock is the file's when both its inode and its
// device match: the same inode number on another file system is another
// file, whose holder must not be signalled.
func lockHolder(f *os.File, filePID int) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("find the process holding %s: %w", f.Name(), err)
	}
	b, err := os.ReadFile(procLocks)
	if err != nil {
		return filePID, nil // no /proc: trust the file
	}
	if pid := pickHolder(parseLocks(b, st.Ino), unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), filePID); pid > 0 {
		return pid, nil
	}
	return 0, fmt.Errorf("an agent holds %s, but not as process %d of this system (it may run in a container: run diagnostics there, or use tendril-server agents diagnostics NAME)", f.Name(), filePID)
}

// pickHolder returns the process among holders (the flocks on the lock
// file's inode) to signal, 0 for none: filePID if it holds the lock on
// the file's device major:minor, or else the one holder on that device
// this process can see.
func pickHolder(holders []flockHolder, major, minor uint32, filePID int) int {
	var sameDev []int
	for _, h := range holders {
		if h.major != major || h.minor != minor {
			continue
		}
		if h.pid == filePID && filePID > 0 {
			return filePID
		}
		sameDev = append(sameDev, h.pid)
	}
	if len(sameDev) == 1 && sameDev[0] > 0 {
		return sameDev[0]
	}
	return 0
}

// flockHolder is one flock on a file of inode ino in /proc/locks.
type flockHolder struct {
	pid          int
	major, minor uint32
}

// parseLocks returns the holders of flocks on inode ino from the text of
// /proc/locks, whose lines read
// "1: FLOCK  ADVISORY  WRITE 1234 fe:00:10569869 0 EOF" (a waiter's line
// has "->" after the number, and is skipped). A pid of 0 or less is a
// holder this process cannot see.
func parseLocks(text []byte, ino uint64) []flockHolder {
	var out []flockHolder
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[1] != "FLOCK" {
			continue
		}
		dev := strings.Split(f[5], ":")
		if len(dev) != 3 {
			continue
		}
		n, err := strconv.ParseUint(dev[2], 10, 64)
		if err != nil || n != ino {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		major, merr := strconv.ParseUint(dev[0], 16, 32)
		minor, nerr := strconv.ParseUint(dev[1], 16, 32)
		if err != nil || merr != nil || nerr != nil {
			continue
		}
		out = append(out, flockHolder{pid: pid, major: uint32(major), minor: uint32(minor)})
	}
	return out
}
