//go:build !windows

package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// lockHome takes the exclusive lock on <home>/agent.lock that keeps two
// agents off one home, and writes this process's id into the file for
// the error the next one gets. The file is opened close-on-exec (Go's
// default), so an agent that re-executes into a new binary drops the
// lock and the new image takes it again.
func lockHome(home string) (unlock func(), err error) {
	path := filepath.Join(home, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock agent home: %w", err)
	}
	if err := flockRetry(f); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(b))
			if _, perr := strconv.Atoi(pid); perr != nil {
				pid = "unknown"
			}
			return nil, fmt.Errorf("another tendril-agent is running with home %s (pid %s)", home, pid)
		}
		return nil, fmt.Errorf("lock agent home: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0) // only informative
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// lockRetries and lockRetryWait let a start pass the instant in which
// "tendril-agent diagnostics" holds a shared lock on the file to see
// whether an agent runs (package agent/diagnostics): another agent holds
// the lock for good, a probe for microseconds.
const (
	lockRetries   = 5
	lockRetryWait = 20 * time.Millisecond
)

// flockRetry takes the exclusive lock on f, trying again briefly while
// it is held.
func flockRetry(f *os.File) error {
	for i := 0; ; i++ {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) || i == lockRetries {
			return err
		}
		time.Sleep(lockRetryWait)
	}
}
