//go:build !windows

package diagnostics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tendrildeploy/tendril/atomicfile"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tendrildeploy/tendril/diag"
)

// DumpSignal asks a running agent for a goroutine dump. Not SIGQUIT: Go's
// runtime answers that with a dump and an exit, which would take a
// production agent down. A Go program that did not ask for SIGUSR1
// catches and ignores it, so asking an agent older than this feature
// changes nothing.
const DumpSignal = syscall.SIGUSR1

// noDumps is "" where a running agent can be asked for a dump.
const noDumps = ""

// DumpPath is where the agent with process id pid writes its goroutine
// dump: <home>/Logs/goroutines-<pid>.txt.
func DumpPath(home string, pid int) string {
	return filepath.Join(home, logsDir, "goroutines-"+strconv.Itoa(pid)+".txt")
}

// ServeDumps writes this process's goroutine dump (diag.Goroutines) to
// DumpPath each time it receives DumpSignal, replacing the file
// atomically so a reader never sees half of one, until stop is called;
// stop waits for it to end. A dump that cannot be written (a full disk)
// is logged.
func ServeDumps(home string, log *zap.Logger) (stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, DumpSignal)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-sig:
			}
			path := DumpPath(home, os.Getpid())
			err := writeDump(path)
			if err != nil {
				log.Warn("could not write the goroutine dump diagnostics asked for", zap.String("file", path), zap.Error(err))
				continue
			}
			log.Info("goroutine dump written for diagnostics", zap.String("file", path))
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(sig)
			close(done)
			wg.Wait()
		})
	}
}

func writeDump(path string) error {
	b, err := diag.Goroutines()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write goroutine dump: %w", err)
	}
	return atomicfile.Write(path, b, 0o600)
}

// runningPID reports whether an agent runs on home: whether one holds
// the lock on its agent.lock (package agent's lockHome), and its process
// id, which the agent writes into the file and, where the kernel lists
// lock holders, lockHolder confirms. The lock is tested, not trusted from
// the file: a pid left by an agent that died may belong to another
// process by now, and signalling that one could end it. The test holds a
// shared lock for an instant; an agent starting in that instant retries
// its own. The file is opened following no link: the agent's user could
// otherwise point it at a file another process locks, and have that one
// signalled.
func runningPID(home string) (pid int, running bool, err error) {
	path := filepath.Join(home, lockFile)
	f, _, err := diag.OpenInside(home, lockFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("see whether an agent runs: %w", err)
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if err == nil {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return 0, false, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return 0, false, fmt.Errorf("see whether an agent runs: lock %s: %w", path, err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0, true, fmt.Errorf("an agent runs, but %s cannot be read: %w", path, err)
	}
	pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, true, fmt.Errorf("an agent runs, but %s names no process id", path)
	}
	if pid, err = lockHolder(f, pid); err != nil {
		return 0, true, err
	}
	return pid, true, nil
}

// requestDump asks the agent with process id pid for its goroutine dump
// and waits up to wait for the file, which is new when it is no longer
// the one that was there before (the agent replaces it by a rename).
// Links are not followed here, nor when the file is read (AddFile).
func requestDump(ctx context.Context, home string, pid int, wait time.Duration) (string, error) {
	if pid <= 0 {
		return "", fmt.Errorf("ask the running agent for a goroutine dump: process id %d", pid)
	}
	path := DumpPath(home, pid)
	before, _ := os.Lstat(path)
	if err := syscall.Kill(pid, DumpSignal); err != nil {
		return "", fmt.Errorf("ask the running agent (pid %d) for a goroutine dump: %w (run diagnostics as the agent's user or root)", pid, err)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, err := os.Lstat(path); err == nil && (before == nil || !os.SameFile(before, st)) {
			return path, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-deadline.C:
			return "", fmt.Errorf("the running agent (pid %d) wrote no goroutine dump to %s within %s: an agent older than this command does not write one, and one that cannot write to its Logs folder (a full disk) says why in its log", pid, path, wait)
		case <-tick.C:
		}
	}
}
