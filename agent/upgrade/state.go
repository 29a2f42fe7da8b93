// Package upgrade replaces the agent's own binary: it receives, verifies
// and smoke-tests a new one, swaps it in keeping the previous one, and
// runs the watchdog that restores the previous binary when the new one
// does not commit in time.
//
// Everything lives under <home>/Upgrade/:
//
//	.partial/<sha256>.part        a package being received (resumable)
//	staged/<version>/tendril-agent a verified, smoke-tested package
//	previous/tendril-agent        a copy of the binary the upgrade replaced
//	state.json                    the upgrade's state (see State)
//
// The state machine, written to state.json at each step:
//
//	received -> swapped -> committed   (the new version said Hello and got Welcome)
//	                    -> rolled_back (the watchdog restored previous)
//	received/any step before the swap -> failed
package upgrade

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tendrildeploy/tendril/atomicfile"
)

// Names inside the home folder.
const (
	dirName      = "Upgrade"
	partialDir   = ".partial"
	stagedDir    = "staged"
	previousDir  = "previous"
	stateName    = "state.json"
	logsDir      = "Logs"
	watchdogLog  = "watchdog.log"
	watchdogOut  = "watchdog.out"
	agentLog     = "agent.log"
	binaryBase   = "tendril-agent"
	defaultGrace = 120 * time.Second
)

// Phase is how far an upgrade got.
type Phase string

// Phases of an upgrade, in the order they happen.
const (
	// PhaseReceived: the package is verified, smoke-tested and staged;
	// the running binary is untouched.
	PhaseReceived Phase = "received"
	// PhaseSwapped: the new binary is in place and the watchdog runs; it
	// waits for PhaseCommitted until Deadline.
	PhaseSwapped Phase = "swapped"
	// PhaseCommitted: the new version connected and was welcomed.
	PhaseCommitted Phase = "committed"
	// PhaseRolledBack: the watchdog (or the old version, finding itself
	// running) restored the previous binary.
	PhaseRolledBack Phase = "rolled_back"
	// PhaseFailed: the upgrade failed before the swap; nothing changed.
	PhaseFailed Phase = "failed"
)

// State is <home>/Upgrade/state.json: the last upgrade and how far it got.
type State struct {
	RolloutID string `json:"rollout_id"`
	From      string `json:"from"`
	To        string `json:"to"`
	Phase     Phase  `json:"phase"`
	// Exe is the absolute path of the agent binary, symlinks resolved.
	Exe string `json:"exe"`
	// Previous is the copy of the binary the upgrade replaced.
	Previous string `json:"previous,omitempty"`
	// Deadline is when the watchdog gives up on the new version.
	Deadline time.Time `json:"deadline,omitzero"`
	// GraceSeconds is the grace period Deadline was computed from, for
	// the rollback's reason.
	GraceSeconds int    `json:"grace_seconds,omitempty"`
	Reason       string `json:"reason,omitempty"`
	// PID is the agent process; the new version keeps it (re-exec).
	PID int `json:"pid,omitempty"`
	// Supervised is true when a service manager restarts the agent; the
	// watchdog then leaves the restart to it.
	Supervised bool `json:"supervised"`
	// Service is the name of the OS service that runs the agent, "" in
	// the foreground. On rollback the watchdog restarts the agent through
	// that service manager (the init script, systemctl, the Windows
	// Service Control Manager), so its pid file and unit state stay true.
	Service string `json:"service,omitempty"`
	// Args are the agent's os.Args; the watchdog restarts an unsupervised
	// agent with Args[1:].
	Args []string `json:"args,omitempty"`
	// Reported is true once a Welcome acknowledged the outcome.
	Reported bool `json:"reported"`
	// Simulated is true when the swap was only recorded, by a simulated
	// agent (Params.SimulateSwap): no binary was replaced, Exe and
	// Previous are empty and no watchdog runs.
	Simulated bool `json:"simulated,omitempty"`

	// restarted is the watchdog's note that it started the service on
	// the new version (Windows); not stored.
	restarted bool
}

// Dir is <home>/Upgrade.
func Dir(home string) string { return filepath.Join(home, dirName) }

// StatePath is <home>/Upgrade/state.json.
func StatePath(home string) string { return filepath.Join(Dir(home), stateName) }

// PartialPath is where a package with the given SHA-256 is received.
func PartialPath(home, sha256 string) string {
	return filepath.Join(Dir(home), partialDir, sha256+".part")
}

// StagedPath is where a verified package of version v waits for the swap.
func StagedPath(home, v string) string {
	return filepath.Join(Dir(home), stagedDir, v, binaryName())
}

// PreviousPath is the copy of the binary the last swap replaced.
func PreviousPath(home string) string {
	return filepath.Join(Dir(home), previousDir, binaryName())
}

// Load reads the upgrade state; ok is false when there is none (no
// upgrade ever ran).
func Load(home string) (s State, ok bool, err error) {
	b, err := os.ReadFile(StatePath(home))
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("read upgrade state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, false, fmt.Errorf("read upgrade state %s: %w", StatePath(home), err)
	}
	return s, true, nil
}

// Save writes the upgrade state atomically: the watchdog, another
// process, reads it at any moment.
func Save(home string, s State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode upgrade state: %w", err)
	}
	if err := os.MkdirAll(Dir(home), 0o700); err != nil {
		return fmt.Errorf("save upgrade state: %w", err)
	}
	if err := atomicfile.Write(StatePath(home), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save upgrade state: %w", err)
	}
	return nil
}

// RemoveStaged removes every staged package. Previous is kept until the
// next upgrade replaces it: it is what a manual rollback would use.
func RemoveStaged(home string) error {
	if err := os.RemoveAll(filepath.Join(Dir(home), stagedDir)); err != nil {
		return fmt.Errorf("remove staged upgrade: %w", err)
	}
	return nil
}

// Executable is the absolute path of the running binary with symlinks
// resolved: the file a swap replaces.
func Executable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find agent binary: %w", err)
	}
	resolved, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return "", fmt.Errorf("find agent binary: %w", err)
	}
	return filepath.Abs(resolved)
}
