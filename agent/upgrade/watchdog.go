package upgrade

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/agent/service"
)

// pollInterval is how often the watchdog reads state.json: it is a
// separate process, and the file is small.
const pollInterval = 250 * time.Millisecond

// exitWait bounds how long the watchdog waits for a killed agent to be
// gone (and to release the home lock) before restarting it anyway.
const exitWait = 10 * time.Second

// StartWatchdog starts `<previous> upgrade-watchdog --home <home>` as a
// detached process. The previous binary watches, so a broken new one
// cannot break its own watchdog. It logs to <home>/Logs/watchdog.log
// (rotated); its raw output, only ever a crash, to watchdog.out.
func StartWatchdog(home string) error {
	return startDetached(PreviousPath(home), []string{"upgrade-watchdog", "--home", home}, filepath.Join(home, logsDir, watchdogOut))
}

// WatchdogLog is the watchdog's log file in home.
func WatchdogLog(home string) string { return filepath.Join(home, logsDir, watchdogLog) }

// startDetached starts path with args in a session of its own, stdin
// from the null device and output appended to logPath, and does not wait
// for it: it must outlive this process.
func startDetached(path string, args []string, logPath string) error {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return fmt.Errorf("start %s: %w", path, err)
	}
	out, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start %s: %w", path, err)
	}
	defer out.Close() // the child has its own copy
	null, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("start %s: %w", path, err)
	}
	defer null.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, out, out
	cmd.SysProcAttr = detached()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", path, err)
	}
	// Not waited for: the process outlives this one, and init reaps it.
	return cmd.Process.Release()
}

// Watch is the watchdog: it waits until the upgrade in home leaves phase
// "swapped" (the new version committed: it returns nil) or its deadline
// passes. Then it restores the previous binary, records "rolled_back"
// with the reason, kills the agent process if it still runs, and starts
// the agent again: through its OS service when it runs as one, not at all
// under a plain supervisor (--supervised, which restarts it), else itself.
func Watch(ctx context.Context, home string, log *zap.Logger) error {
	log = log.Named("watchdog")
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	restarted := false
	for {
		st, ok, err := Load(home)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("watch upgrade: no upgrade state in %s", Dir(home))
		}
		if err := supported(st.Service); err != nil {
			return err
		}
		if st.Phase != PhaseSwapped {
			log.Info("upgrade ended; watchdog done", zap.String("phase", string(st.Phase)), zap.String("to", st.To))
			return nil
		}
		if !time.Now().Before(st.Deadline) {
			return rollback(ctx, home, st, log)
		}
		st.restarted = restarted
		afterSwap(ctx, &st, log)
		restarted = st.restarted
		select {
		case <-ctx.Done():
			return fmt.Errorf("watch upgrade: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// rollback restores the previous binary over the new one and restarts the
// agent. The binary is restored before the process is killed, so a
// service manager that restarts it at once starts the previous version.
func rollback(ctx context.Context, home string, st State, log *zap.Logger) error {
	// The PID is the agent's (exec keeps it), unless the agent died and
	// the PID was reused: then it runs another program, which must live.
	alive := st.PID > 0 && processAlive(st.PID) && runsProgram(st.PID, st.Exe)
	reason := fmt.Sprintf("the new version did not connect within %ds", st.GraceSeconds)
	if !alive {
		reason = "the new version exited"
	}
	if err := replace(st.Exe, st.Previous, ".rollback"); err != nil {
		return fmt.Errorf("restore previous binary: %w", err)
	}
	st.Phase, st.Reason, st.Reported = PhaseRolledBack, reason, false
	if err := Save(home, st); err != nil {
		return err
	}
	log.Warn("watchdog restored the previous version", zap.String("exe", st.Exe), zap.String("version", st.From), zap.String("reason", reason), zap.Int("pid", st.PID))
	if alive {
		if err := killProcess(st.PID); err != nil {
			log.Warn("could not stop the new version", zap.Int("pid", st.PID), zap.Error(err))
		}
		// Its home lock goes with it; a restart before that would fail.
		deadline := time.Now().Add(exitWait)
		for processAlive(st.PID) && time.Now().Before(deadline) {
			time.Sleep(pollInterval / 5)
		}
	}
	if st.Service != "" {
		// Through the service manager, not by hand: the init script's
		// pid file and the unit's state must name the process it runs.
		if err := service.RestartByName(ctx, st.Service); err != nil {
			return fmt.Errorf("restart agent service %s: %w", st.Service, err)
		}
		log.Info("agent restarted at the previous version through its service", zap.String("service", st.Service))
		return nil
	}
	if st.Supervised {
		log.Info("the supervisor restarts the agent")
		return nil
	}
	if len(st.Args) == 0 {
		return errors.New("restart agent: no arguments recorded; start it by hand")
	}
	if err := startDetached(st.Exe, st.Args[1:], filepath.Join(home, logsDir, agentLog)); err != nil {
		return fmt.Errorf("restart agent: %w", err)
	}
	log.Info("agent restarted at the previous version", zap.String("exe", st.Exe), zap.Strings("args", st.Args[1:]))
	return nil
}
