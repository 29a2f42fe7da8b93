package upgrade

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

// SmokeTimeout bounds the new binary's `version --json`.
const SmokeTimeout = 30 * time.Second

// RefusedError is an upgrade refused because of what was offered (or
// when): the coordinator is told with CodeBadRequest, and nothing on the
// agent changed.
// ErrBusy refuses an upgrade for now: tasks are running. Unlike a
// RefusedError it is not the request's fault, and the same offer succeeds
// once the agent is idle.
var ErrBusy = errors.New("agent is busy")

type RefusedError struct{ Msg string }

func (e *RefusedError) Error() string { return e.Msg }

func refused(format string, args ...any) error {
	return &RefusedError{Msg: fmt.Sprintf(format, args...)}
}

// IsRefused reports whether err is a RefusedError: the request, not the
// agent, is at fault.
func IsRefused(err error) bool {
	var re *RefusedError
	return errors.As(err, &re)
}

var hashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Params is what an upgrade needs to know about the running agent.
type Params struct {
	// Home is the agent's home folder (absolute).
	Home string
	// Exe is the agent binary a swap replaces (absolute, no symlinks).
	Exe string
	// Running is the running version.
	Running string
	// SigningKey is the coordinator's hex Ed25519 public key.
	SigningKey string
	// SignedRequest says the request came with the coordinator's
	// signature over it (protocol.Intent), checked: only such a request
	// may downgrade the agent.
	SignedRequest bool
	// Supervised is true when a plain supervisor restarts the agent.
	Supervised bool
	// Service is the OS service running the agent, "" if none: the
	// watchdog restarts the agent through it (see State.Service).
	Service string
	// Args are the agent's os.Args, to restart it with.
	Args []string
	// Logger receives what the upgrade does. Default: discard.
	Logger *zap.Logger
	// SimulateSwap stops Install short of the host, for the fleet
	// simulator (agent.Config.SimulateUpgradeSwap): the package is
	// received and verified as always, but not smoke-tested, no binary is
	// kept or replaced and no watchdog starts. The state records the swap
	// (State.Simulated), so the agent that starts next at the new version
	// commits it as after a real restart.
	SimulateSwap bool
}

// Check decides whether an upgrade may start, before any byte of the
// package is received: the platform, the version, that the agent is idle
// and no other upgrade is under way, and the signature (it covers the
// package's size and SHA-256, so the bytes are bound to it too). Every
// refusal is a RefusedError.
func Check(p Params, req protocol.AgentUpgrade, runningTasks int) error {
	if err := supported(p.Service); err != nil {
		return err
	}
	pkg := req.Package
	if pkg.OS != runtime.GOOS || pkg.Arch != runtime.GOARCH {
		return refused("package is for %s/%s, this agent is %s/%s", pkg.OS, pkg.Arch, runtime.GOOS, runtime.GOARCH)
	}
	if !bundle.ValidVersion(pkg.Version) {
		return refused("package version %q is not a valid semantic version", pkg.Version)
	}
	switch c := bundle.CompareVersions(pkg.Version, p.Running); {
	case c == 0:
		return refused("agent is already at version %s", pkg.Version)
	case c < 0 && !req.AllowDowngrade:
		return refused("downgrade from %s to %s needs --allow-downgrade", p.Running, pkg.Version)
	case c < 0 && !p.SignedRequest:
		// Whoever holds only the coordinator's TLS key could otherwise
		// roll the agent back to a release with a known flaw.
		return refused("downgrade from %s to %s needs the coordinator's signature on the request, and this one is unsigned (a coordinator older than this agent cannot downgrade it)", p.Running, pkg.Version)
	}
	if !hashRE.MatchString(pkg.SHA256) || pkg.Size <= 0 {
		return refused("package needs a size above 0 and a lower-case hex SHA-256, got %d and %q", pkg.Size, pkg.SHA256)
	}
	if req.GraceSeconds < 0 {
		return refused("grace period %ds is negative", req.GraceSeconds)
	}
	if runningTasks > 0 {
		return fmt.Errorf("%w with %d tasks; the upgrade waits for idle", ErrBusy, runningTasks)
	}
	st, ok, err := Load(p.Home)
	if err != nil {
		return err
	}
	if ok && st.Phase == PhaseSwapped {
		return refused("an upgrade from %s to %s is already in progress", st.From, st.To)
	}
	if err := certs.Verify(p.SigningKey, pkg.SigningBytes(), req.Signature); err != nil {
		return refused("package signature does not verify")
	}
	return nil
}

// Offset is where the receive of req's package resumes.
func Offset(p Params, req protocol.AgentUpgrade) int64 {
	return protocol.PartialSize(PartialPath(p.Home, req.Package.SHA256))
}

// Install receives the package from body (from Offset on), stages and
// smoke-tests it, swaps it in and starts the watchdog, recording each step
// in state.json. It returns the swapped state; the caller then replies
// and restarts into the new binary. A failure before the swap leaves the
// running binary as it was and state "failed" with the reason, except a
// transfer that was merely cut: its bytes are kept for the next attempt.
// Call Check first.
func Install(ctx context.Context, p Params, req protocol.AgentUpgrade, body io.Reader) (State, error) {
	log := p.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("upgrade")
	pkg := req.Package
	st := State{RolloutID: req.RolloutID, From: p.Running, To: pkg.Version, Exe: p.Exe,
		Previous: PreviousPath(p.Home), PID: os.Getpid(), Supervised: p.Supervised, Service: p.Service, Args: p.Args}
	if p.SimulateSwap {
		// No binary is replaced or kept, so the state names none: nothing
		// may ever restore one from it.
		st.Exe, st.Previous, st.Simulated = "", "", true
	}
	fail := func(err error) (State, error) {
		os.RemoveAll(filepath.Dir(StagedPath(p.Home, pkg.Version)))
		f := st
		f.Phase, f.Reason, f.Deadline = PhaseFailed, err.Error(), time.Time{}
		if serr := Save(p.Home, f); serr != nil {
			return State{}, errors.Join(err, serr)
		}
		return State{}, err
	}
	partial := PartialPath(p.Home, pkg.SHA256)
	if err := os.MkdirAll(filepath.Dir(partial), 0o700); err != nil {
		return fail(fmt.Errorf("receive agent package %s: %w", pkg.Version, err))
	}
	if err := protocol.ReceiveBulk(body, partial, protocol.Transfer{Size: pkg.Size, SHA256: pkg.SHA256}); err != nil {
		if errors.Is(err, protocol.ErrTransfer) {
			return fail(refused("receive agent package %s: %v", pkg.Version, err))
		}
		// Cut or stalled: keep what arrived, the next attempt resumes.
		return State{}, fmt.Errorf("receive agent package %s: %w", pkg.Version, err)
	}
	staged := StagedPath(p.Home, pkg.Version)
	if err := stage(partial, staged); err != nil {
		return fail(err)
	}
	if !p.SimulateSwap {
		if err := SmokeTest(ctx, staged, pkg.Version); err != nil {
			os.Remove(partial)
			return fail(err)
		}
	}
	st.Phase = PhaseReceived
	if err := Save(p.Home, st); err != nil {
		return fail(err)
	}
	log.Info("upgrade received", zap.String("from", st.From), zap.String("to", st.To), zap.String("rollout", st.RolloutID))
	grace := time.Duration(req.GraceSeconds) * time.Second
	if grace == 0 {
		grace = defaultGrace
	}
	if p.SimulateSwap {
		swapped, err := simulatedSwap(p.Home, st, grace)
		if err != nil {
			return fail(err)
		}
		log.Info("upgrade swap simulated: no binary replaced, no watchdog", zap.String("to", st.To), zap.Time("deadline", swapped.Deadline))
		return swapped, nil
	}
	swapped, err := swap(p.Home, st, staged, grace, StartWatchdog)
	if err != nil {
		return fail(err)
	}
	log.Info("upgrade swapped in; watchdog started", zap.String("exe", st.Exe), zap.Time("deadline", swapped.Deadline))
	return swapped, nil
}

// stage moves a received package to its staged path, executable.
func stage(partial, staged string) error {
	if err := os.MkdirAll(filepath.Dir(staged), 0o700); err != nil {
		return fmt.Errorf("stage agent package: %w", err)
	}
	if err := os.Rename(partial, staged); err != nil {
		return fmt.Errorf("stage agent package: %w", err)
	}
	if err := os.Chmod(staged, 0o755); err != nil {
		return fmt.Errorf("stage agent package: %w", err)
	}
	return nil
}

// SmokeTest runs `<path> version --json` with nothing in its environment
// but PATH, and checks that it prints {"version": want}. Failures are
// RefusedErrors: the package is at fault.
func SmokeTest(ctx context.Context, path, want string) error {
	ctx, cancel := context.WithTimeout(ctx, SmokeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "version", "--json")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.Dir = filepath.Dir(path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var pe *fs.PathError
		var ee *exec.ExitError
		switch {
		case ctx.Err() != nil:
			return refused("smoke test: new binary did not print its version within %s", SmokeTimeout)
		case errors.As(err, &pe):
			return refused("smoke test: new binary failed to run: %v", pe.Err)
		case errors.As(err, &ee):
			return refused("smoke test: new binary exited with %v: %s", ee, tail(stderr.String()))
		default:
			return refused("smoke test: new binary failed to run: %v", err)
		}
	}
	var out struct {
		Version *string `json:"version"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &out); err != nil || out.Version == nil {
		return refused(`smoke test: new binary printed %q, want {"version": %q}`, tail(stdout.String()), want)
	}
	if *out.Version != want {
		return refused("smoke test: new binary printed version %s, want %s", *out.Version, want)
	}
	return nil
}

// tail is the end of a program's output, short enough for an error.
func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		s = "..." + s[len(s)-300:]
	}
	return s
}

// swap keeps a copy of the running binary, records PhaseSwapped, starts
// the watchdog and then puts staged in place of the binary. The state and
// the watchdog come before the rename: a crash between them leaves
// "swapped" with the old binary, which the old version, starting, reads
// as rolled back; the reverse order could leave a new binary nobody
// watches.
func swap(home string, st State, staged string, grace time.Duration, watchdog func(home string) error) (State, error) {
	if err := os.MkdirAll(filepath.Dir(st.Previous), 0o700); err != nil {
		return State{}, fmt.Errorf("keep previous binary: %w", err)
	}
	tmp := st.Previous + ".tmp"
	if err := copyFile(st.Exe, tmp); err != nil {
		return State{}, fmt.Errorf("keep previous binary: %w", err)
	}
	if err := os.Rename(tmp, st.Previous); err != nil {
		os.Remove(tmp)
		return State{}, fmt.Errorf("keep previous binary: %w", err)
	}
	syncDir(filepath.Dir(st.Previous))
	next := st.Exe + ".new"
	if err := copyFile(staged, next); err != nil {
		os.Remove(next)
		return State{}, replaceError(st.Exe, err)
	}
	st.Phase = PhaseSwapped
	st.GraceSeconds = int(grace / time.Second)
	st.Deadline = time.Now().Add(grace).UTC().Truncate(time.Second)
	if err := Save(home, st); err != nil {
		os.Remove(next)
		return State{}, err
	}
	if err := watchdog(home); err != nil {
		os.Remove(next)
		return State{}, fmt.Errorf("start upgrade watchdog: %w", err)
	}
	if err := replaceRunning(next, st.Exe); err != nil {
		os.Remove(next)
		return State{}, replaceError(st.Exe, err)
	}
	syncDir(filepath.Dir(st.Exe))
	return st, nil
}

// simulatedSwap records PhaseSwapped as swap does, without touching any
// binary or starting the watchdog: the simulated agents share the
// simulator's binary, and restarting one is a new Agent in the same
// process.
func simulatedSwap(home string, st State, grace time.Duration) (State, error) {
	st.Phase = PhaseSwapped
	st.GraceSeconds = int(grace / time.Second)
	st.Deadline = time.Now().Add(grace).UTC().Truncate(time.Second)
	if err := Save(home, st); err != nil {
		return State{}, err
	}
	return st, nil
}

func replaceError(exe string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("cannot replace %s: permission denied; run the agent as a user that owns its binary", exe)
	}
	return fmt.Errorf("cannot replace %s: %w", exe, err)
}

// replace copies src next to dst (dst+suffix), syncs it and renames it
// over dst: dst is the old or the new file at every moment.
func replace(dst, src, suffix string) error {
	tmp := dst + suffix
	if err := copyFile(src, tmp); err != nil {
		os.Remove(tmp)
		return replaceError(dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return replaceError(dst, err)
	}
	syncDir(filepath.Dir(dst))
	return nil
}

// copyFile copies src to dst with mode 0755 and syncs it.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	// The mode of an existing dst is not changed by OpenFile.
	if err := out.Chmod(0o755); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// syncDir makes renames in dir durable; best effort where folders cannot
// be synced.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
