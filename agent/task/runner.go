// Package task runs deployment tasks on an agent: Calamari started with the
// coordinator's arguments in <home>/Work/<ticket>/, its output kept as a
// sequence-numbered log that followers read from any point, its result
// written last.
//
// Tasks belong to the Runner, not to a connection: a coordinator that
// loses its session finds the task still running (or finished) when it
// comes back, and reads the rest of the log from where it stopped. A
// ticket names a task once: starting it again reports the first run.
package task

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tendrildeploy/tendril/taskenv"

	"github.com/tendrildeploy/tendril/bytesize"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/agent/internal/keylock"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/servicemsg"
)

// DefaultKillGrace is how long a cancelled task may take to stop after
// SIGTERM before its process group gets SIGKILL.
const DefaultKillGrace = 5 * time.Second

// outputDrain is how long the agent keeps reading a task's output after
// its process exited, for children it left running that still hold the
// output pipes. Past it the pipes are closed and the task is finished;
// waiting for such children (a daemon the script started) could take
// forever.
const outputDrain = 2 * time.Second

// errInterrupted is the result of a task an earlier agent process was
// running when it stopped: its output pipes died with that process.
const errInterrupted = "the agent stopped while the task ran"

// Errors callers branch on. All but ErrClosed blame the request, not the
// agent (see IsBadRequest).
var (
	// ErrInvalidTicket means a ticket that cannot name a task folder.
	ErrInvalidTicket = errors.New("invalid ticket")
	// ErrInvalidFileName means a pushed file's name is not a plain name.
	ErrInvalidFileName = errors.New("invalid file name")
	// ErrInvalidTransfer means a transfer header that cannot be right.
	ErrInvalidTransfer = errors.New("invalid transfer header")
	// ErrUnknownTicket means no task was ever started with the ticket.
	ErrUnknownTicket = errors.New("unknown ticket")
	// ErrStarted means a file push to a task that already started with
	// other content under that name.
	ErrStarted = errors.New("task already started")
	// ErrClosed means the Runner is stopping and starts nothing new.
	ErrClosed = errors.New("the agent is stopping")
)

// CalamariError means the task's Calamari version cannot be used: the
// coordinator checks and pushes it before starting a task, so this is a
// guard against a race or a damaged disk.
type CalamariError struct {
	// Version is the Calamari version the task asked for.
	Version string
	// Err is why it cannot be used, from Config.Resolve.
	Err error
}

func (e *CalamariError) Error() string {
	return fmt.Sprintf("Calamari %s is not installed or damaged: %v", e.Version, e.Err)
}

func (e *CalamariError) Unwrap() error { return e.Err }

// IsBadRequest reports whether err blames the request rather than the
// agent: an invalid ticket or file name, an unknown ticket, an unusable
// Calamari version, a transfer that does not match its header.
func IsBadRequest(err error) bool {
	var ce *CalamariError
	if errors.As(err, &ce) {
		return true
	}
	for _, target := range []error{ErrInvalidTicket, ErrInvalidIsolation, protocol.ErrInvalidVariables, ErrInvalidFileName, ErrInvalidTransfer, ErrUnknownTicket, ErrUnknownArtifact, ErrStarted, protocol.ErrTransfer} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// Config describes a Runner.
type Config struct {
	// Dir is the work folder, <home>/Work. Required.
	Dir string
	// Home is the agent's home, given to tasks as TENDRIL_HOME.
	Home string
	// Resolve verifies a Calamari version and returns the absolute path of
	// its entry point for this machine. Required.
	Resolve func(version string) (string, error)
	// KillGrace is how long a cancelled task may take to stop before it is
	// killed. Default DefaultKillGrace.
	KillGrace time.Duration
	// MaxArtifactSize is the largest file a task may attach. Default
	// DefaultMaxArtifactSize.
	MaxArtifactSize int64
	// Logger receives what happens to tasks; it is named "task". Default:
	// discard.
	Logger *zap.Logger
}

// Runner starts, follows and cancels tasks. Create it with New and stop it
// with Close; its methods are safe for concurrent use.
type Runner struct {
	cfg Config
	log *zap.Logger
	// tickets serialises Start per ticket, files serialises pushes per
	// file: each decides from what is on disk and must not race itself.
	tickets keylock.Map
	files   keylock.Map
	// wg counts the goroutines waiting for task processes.
	wg sync.WaitGroup

	mu     sync.Mutex
	closed bool
	// tasks holds the tasks started by this Runner that have not
	// finished; finished ones are read from disk.
	tasks map[string]*task
	// kept holds the finished tasks whose end (log entries, result) the
	// disk did not take: they are served from memory, and written down
	// once it does (persist). keptOrder is their order, oldest first,
	// for the bound maxKept.
	kept      map[string]*task
	keptOrder []string
	// versions counts the Calamari versions tasks use, from the moment a
	// start verifies one until its task finishes, so a prune never removes
	// one from under a task.
	versions map[string]int
	// locks decides which tasks may run at once (isolation, named locks).
	locks lockTable
	// retention removes finished task folders (retention.go).
	retention retention
	// gates knows which calamari honour the start gate (gate.go).
	gates gates
	// writeInfo writes task.json, durably: writeJSON; tests replace it.
	writeInfo func(path string, v any) error
}

// New returns a Runner for cfg.Dir. Tasks that an earlier agent process
// left without a result are marked failed: their processes lost their
// output pipes when it stopped.
func New(cfg Config) (*Runner, error) {
	if cfg.Dir == "" || cfg.Resolve == nil {
		return nil, errors.New("task runner: Dir and Resolve are required")
	}
	if cfg.KillGrace < 0 {
		return nil, errors.New("task runner: KillGrace is negative")
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = DefaultKillGrace
	}
	if cfg.MaxArtifactSize < 0 {
		return nil, errors.New("task runner: MaxArtifactSize is negative")
	}
	if cfg.MaxArtifactSize == 0 {
		cfg.MaxArtifactSize = DefaultMaxArtifactSize
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	// Tasks run in other folders than the agent, so everything they are
	// told must be absolute.
	for _, p := range []*string{&cfg.Dir, &cfg.Home} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("task runner: %w", err)
		}
		*p = abs
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("task runner: %w", err)
	}
	r := &Runner{
		cfg:       cfg,
		log:       cfg.Logger.Named("task"),
		tasks:     map[string]*task{},
		kept:      map[string]*task{},
		versions:  map[string]int{},
		writeInfo: writeJSON,
	}
	return r, nil
}

func (r *Runner) taskDir(ticket string) string { return filepath.Join(r.cfg.Dir, ticket) }

// Recover finishes the tasks an earlier agent process was running. A task
// that cannot be finished is logged and left; following it reports why.
// Call it only while holding the agent's home lock: a second agent started
// by mistake on a live home must not mark the first one's tasks failed.
func (r *Runner) Recover() {
	entries, err := os.ReadDir(r.cfg.Dir)
	if err != nil {
		r.log.Error("could not look for tasks interrupted by an agent restart", zap.Error(err))
		return
	}
	for _, e := range entries {
		ticket := e.Name()
		dir := r.taskDir(ticket)
		if !e.IsDir() || ValidateTicket(ticket) != nil || !exists(filepath.Join(dir, infoFile)) || exists(filepath.Join(dir, resultFile)) {
			continue
		}
		t, err := openTask(ticket, dir, "")
		if err == nil {
			t.append(streamAgent, errInterrupted)
			err = t.writeResult(result{State: protocol.TaskFailed, ExitCode: -1, Error: errInterrupted, FinishedAt: time.Now().UTC()})
			t.closeLog()
		}
		if err != nil {
			r.log.Error("could not mark an interrupted task failed", zap.String("ticket", ticket), zap.Error(err))
			continue
		}
		r.log.Warn("task was interrupted by an agent restart; marked failed", zap.String("ticket", ticket))
	}
}

// reserve counts version as used by a starting task; false once closed.
func (r *Runner) reserve(version string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.versions[version]++
	return true
}

func (r *Runner) unreserve(version string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unreserveLocked(version)
}

func (r *Runner) unreserveLocked(version string) {
	if r.versions[version]--; r.versions[version] <= 0 {
		delete(r.versions, version)
	}
}

// InUse returns the Calamari versions that running (or starting) tasks
// use, sorted.
func (r *Runner) InUse() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	vs := make([]string, 0, len(r.versions))
	for v := range r.versions {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	return vs
}

// Running counts the tasks running (or starting) now. An agent upgrade
// waits until it is 0.
func (r *Runner) Running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.versions {
		n += c
	}
	return n
}

// Start starts a task, or reports the existing one if the ticket was
// started before (by this agent process or an earlier one): a ticket runs
// once however often it is started. A process that cannot be started
// still makes a task, failed, with the reason in its log.
func (r *Runner) Start(ctx context.Context, req protocol.TaskStart) (protocol.TaskStarted, error) {
	if err := ValidateTicket(req.Ticket); err != nil {
		return protocol.TaskStarted{}, err
	}
	c, err := newClaim(req)
	if err != nil {
		return protocol.TaskStarted{}, err
	}
	if err := protocol.ValidateVariables(req.Variables); err != nil {
		return protocol.TaskStarted{}, err
	}
	unlock, err := r.tickets.Lock(ctx, req.Ticket)
	if err != nil {
		return protocol.TaskStarted{}, fmt.Errorf("start task %s: %w", req.Ticket, err)
	}
	defer unlock()
	if state, ok, err := r.existing(req.Ticket); ok || err != nil {
		return protocol.TaskStarted{Ticket: req.Ticket, Existing: true, State: state}, err
	}
	if !r.reserve(req.Calamari) {
		return protocol.TaskStarted{}, fmt.Errorf("start task %s: %w", req.Ticket, ErrClosed)
	}
	entry, err := r.cfg.Resolve(req.Calamari)
	if err != nil {
		r.unreserve(req.Calamari)
		return protocol.TaskStarted{}, &CalamariError{Version: req.Calamari, Err: err}
	}
	dir := r.taskDir(req.Ticket)
	if err := os.MkdirAll(filepath.Join(dir, filesDir), 0o700); err != nil {
		r.unreserve(req.Calamari)
		return protocol.TaskStarted{}, r.refusal(req.Ticket, "cannot create the task's folder", err)
	}
	t := newTask(req.Ticket, dir, req.Calamari)
	t.claim = c
	// The variables stay in memory: a sensitive value must never reach
	// the disk, so they are not in task.json.
	t.mask, t.env = newMasker(sensitiveValues(req.Variables)), environ(req.Variables)
	r.mu.Lock()
	if r.closed {
		r.unreserveLocked(req.Calamari)
		r.mu.Unlock()
		return protocol.TaskStarted{}, fmt.Errorf("start task %s: %w", req.Ticket, ErrClosed)
	}
	r.tasks[req.Ticket] = t
	r.mu.Unlock()

	in := info{Ticket: req.Ticket, Calamari: req.Calamari, Args: req.Args, Isolation: req.Isolation, Locks: c.locks, StartedAt: time.Now().UTC()}
	// A task that will run at once starts its process now, waiting at
	// the gate (gate.go) while task.json is synced.
	var pre *gated
	if r.locks.free(c) && r.gates.honoured(entry) {
		pre = startGated(r.command(t, entry, in.Args))
	}
	if err := r.writeInfo(filepath.Join(dir, infoFile), in); err != nil {
		pre.abort()
		r.forget(t)
		return protocol.TaskStarted{}, r.refusal(req.Ticket, "cannot record the task in its folder", err)
	}
	// From here on the ticket is taken: every way out finishes the task.
	if err := t.openLog(); err != nil {
		pre.abort()
		r.finish(t, result{State: protocol.TaskFailed, ExitCode: -1, Error: err.Error()}, "")
		return protocol.TaskStarted{Ticket: req.Ticket, State: protocol.TaskFailed}, nil
	}
	blocker := r.locks.tryLock(c)
	if blocker == nil {
		return r.run(t, entry, in, pre), nil
	}
	// Another start took a lock meanwhile: this one waits its turn.
	pre.abort()
	// Its turn comes when the tasks in the way finish: the start is
	// answered now, and the task waits in the background, saying so in
	// its log, until it runs or is cancelled.
	waitCtx, stopWait := context.WithCancel(context.Background())
	t.mu.Lock()
	t.waiting, t.stopWait = true, stopWait
	if t.cancelled { // Close ran while the start was under way
		stopWait()
	}
	t.appendLocked(streamAgent, waitLine(blocker))
	t.mu.Unlock()
	r.log.Info("task waits for another to finish", zap.String("ticket", req.Ticket), zap.String("waits_for", blocker.ticket))
	r.wg.Go(func() {
		defer stopWait()
		err := r.locks.wait(waitCtx, c, func(b *claim) { t.append(streamAgent, waitLine(b)) })
		if err != nil {
			const msg = "cancelled while waiting for its turn; it never ran"
			t.mu.Lock()
			t.waiting = false
			t.mu.Unlock()
			r.finish(t, result{State: protocol.TaskCancelled, ExitCode: -1, Error: msg}, msg)
			return
		}
		r.run(t, entry, in, nil)
	})
	return protocol.TaskStarted{Ticket: req.Ticket, State: protocol.TaskQueued}, nil
}

// refusal is the error of a task the agent cannot start because its disk
// refuses the task's folder: the reason, with the free space when known,
// so the coordinator can fail the task with it at once.
func (r *Runner) refusal(ticket, what string, err error) error {
	msg := fmt.Sprintf("start task %s: the agent %s: %v", ticket, what, err)
	if free := r.retention.free(r.cfg.Dir); free >= 0 {
		msg += fmt.Sprintf(" (%s free in %s)", bytesize.Format(free), r.cfg.Dir)
	}
	return &StartError{msg: msg, err: err}
}

// StartError means the agent cannot start a task for a reason of its own
// (its disk, most often): trying again will fail the same way until the
// agent's operator acts, so the coordinator fails the task with it.
type StartError struct {
	msg string
	err error
}

func (e *StartError) Error() string { return e.msg }
func (e *StartError) Unwrap() error { return e.err }

// waitLine is the log line of a task that waits for blocker.
func waitLine(blocker *claim) string {
	return "waiting for " + blocker.describe() + " to finish"
}

// run starts the process of a task that holds its claim, and reports how
// the start went. pre, if not nil, is the process already started and
// waiting at the gate, which run opens.
func (r *Runner) run(t *task, entry string, in info, pre *gated) protocol.TaskStarted {
	t.mu.Lock()
	t.waiting = false
	if t.cancelled { // Close or Cancel ran while the start was under way
		t.mu.Unlock()
		pre.abort()
		r.finish(t, result{State: protocol.TaskCancelled, ExitCode: -1, Error: "cancelled before it started"}, "cancelled before it started")
		return protocol.TaskStarted{Ticket: t.ticket, State: protocol.TaskCancelled}
	}
	t.appendLocked(streamAgent, "running calamari "+in.Calamari+quoteArgs(in.Args))
	var cmd *exec.Cmd
	var err error
	if pre != nil {
		cmd = pre.cmd
		pre.open()
	} else {
		cmd = r.command(t, entry, in.Args)
		err = cmd.Start()
	}
	if err != nil {
		t.mu.Unlock()
		msg := fmt.Sprintf("could not start Calamari: %v", err)
		r.finish(t, result{State: protocol.TaskFailed, ExitCode: -1, Error: msg}, msg)
		return protocol.TaskStarted{Ticket: t.ticket, State: protocol.TaskFailed}
	}
	t.proc = cmd.Process
	t.mu.Unlock()
	r.log.Info("task started", zap.String("ticket", t.ticket), zap.String("calamari", in.Calamari), zap.Int("pid", cmd.Process.Pid))
	in.PID = cmd.Process.Pid
	// The process id is written beside the process rather than before
	// the start is answered: it is only informative (the task is
	// tracked in memory), and its synced write took 1.7 ms of a 15 ms
	// task round trip. For the same reason the folder is not synced
	// after it: a crash may bring back task.json as the start wrote it,
	// which is whole and durable, and the disk has one sync less to do
	// while the task runs (the result's sync, at its end, waits behind
	// it). The task finishes once it is written, so that nothing touches
	// the folder of a finished task.
	recorded := make(chan struct{})
	r.wg.Go(func() {
		defer close(recorded)
		if err := rewriteJSON(filepath.Join(t.dir, infoFile), in); err != nil {
			r.log.Warn("could not record a task's process id", zap.String("ticket", t.ticket), zap.Error(err))
		}
	})
	r.wg.Go(func() { r.wait(t, cmd, recorded) })
	return protocol.TaskStarted{Ticket: t.ticket, State: protocol.TaskRunning}
}

// existing reports the state of a ticket already started, and whether
// there is one.
func (r *Runner) existing(ticket string) (string, bool, error) {
	r.mu.Lock()
	t := r.tasks[ticket]
	if t == nil {
		t = r.kept[ticket]
	}
	r.mu.Unlock()
	if t != nil {
		return t.state(), true, nil
	}
	dir := r.taskDir(ticket)
	if !exists(filepath.Join(dir, infoFile)) {
		return "", false, nil
	}
	res, err := readResult(dir)
	if err != nil {
		return "", true, fmt.Errorf("task %s has no result and is not running: %w", ticket, err)
	}
	return res.State, true, nil
}

// command prepares the task's process: in its folder, with the task's
// environment, output into the log, and in a process group of its own so
// that cancelling reaches every process it started.
func (r *Runner) command(t *task, entry string, args []string) *exec.Cmd {
	cmd := exec.Command(entry, args...)
	cmd.Dir = t.dir
	env := append(os.Environ(), t.env...)
	cmd.Env = append(env,
		taskenv.Ticket+"="+t.ticket,
		taskenv.TaskDir+"="+t.dir,
		taskenv.Files+"="+filepath.Join(t.dir, filesDir),
		taskenv.Home+"="+r.cfg.Home,
		taskenv.Calamari+"="+entry,
		// This agent stops the process group with its own grace and
		// reads a signal's exit code (wait), so calamari may exec.
		taskenv.Exec+"=1",
		// So that a script finds calamari set-output and calamari
		// artifact. Later entries win in exec, so this PATH does.
		"PATH="+filepath.Dir(entry)+string(os.PathListSeparator)+lookupEnv(env, "PATH"),
		// The agent's own PWD would tell the task it runs elsewhere.
		"PWD="+t.dir,
	)
	// Stdin stays nil: the null device. Nobody is there to type.
	t.stdout = &lineWriter{t: t, stream: streamStdout, service: func(m servicemsg.Message, err error) string {
		return r.serviceMessage(t, m, err)
	}}
	t.stderr = &lineWriter{t: t, stream: streamStderr}
	cmd.Stdout, cmd.Stderr = t.stdout, t.stderr
	cmd.WaitDelay = outputDrain
	newProcessGroup(cmd)
	return cmd
}

// serviceMessage acts on a service message of the task's script and
// returns the line its log shows instead.
func (r *Runner) serviceMessage(t *task, m servicemsg.Message, err error) string {
	if err != nil {
		return "ignored a line that looks like a service message: " + err.Error()
	}
	switch m.Kind {
	case servicemsg.KindSetOutput:
		return t.setOutput(m.Name, m.Value)
	default: // servicemsg.KindArtifact: Parse knows no other
		return r.attach(t, m.Value)
	}
}

// lookupEnv is the last value of key in env, as exec would use it.
func lookupEnv(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		k, v, ok := strings.Cut(env[i], "=")
		if ok && (k == key || runtime.GOOS == "windows" && strings.EqualFold(k, key)) {
			return v
		}
	}
	return ""
}

// wait waits for the task's process and finishes the task once recorded
// is closed (the process id is in task.json).
func (r *Runner) wait(t *task, cmd *exec.Cmd, recorded <-chan struct{}) {
	pid := cmd.Process.Pid
	// Where the system allows it, see the exit before reaping it: until
	// Wait reaps the process its id cannot be reused, so a cancellation
	// can still signal the process group without hitting a stranger.
	waited := waitExited(pid)
	if waited {
		t.mu.Lock()
		if t.cancelled {
			// The main process is gone; the rest of its tree goes with
			// it, even the processes that ignored SIGTERM.
			killGroup(t.proc)
		}
		t.exited = true
		t.mu.Unlock()
	}
	err := cmd.Wait()
	if !waited {
		t.mu.Lock()
		t.exited = true
		t.mu.Unlock()
	}
	t.stdout.flush()
	t.stderr.flush()

	code, signal := -1, ""
	if cmd.ProcessState != nil {
		code, signal = exitStatus(cmd.ProcessState)
	}
	t.mu.Lock()
	cancelled := t.cancelled
	t.mu.Unlock()
	var res result
	var msg string
	switch {
	case cancelled:
		res, msg = result{State: protocol.TaskCancelled, ExitCode: code, Error: "cancelled"}, "cancelled"
	case code == 0:
		res, msg = result{State: protocol.TaskSucceeded}, "exited with code 0"
	case signal != "":
		msg = fmt.Sprintf("killed by %s (exit code %d)", signal, code)
		res = result{State: protocol.TaskFailed, ExitCode: code, Error: msg}
	case code > 0:
		msg = "exited with code " + strconv.Itoa(code)
		res = result{State: protocol.TaskFailed, ExitCode: code, Error: msg}
	default:
		msg = "ended abnormally: " + describeExit(cmd, err)
		res = result{State: protocol.TaskFailed, ExitCode: code, Error: msg}
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		// Said in the task's log, where whoever reads the output looks.
		t.append(streamAgent, "output after the process exited was cut: a process it started still holds its output")
	}
	<-recorded
	r.finish(t, res, msg)
}

func describeExit(cmd *exec.Cmd, err error) string {
	if cmd.ProcessState != nil {
		return cmd.ProcessState.String()
	}
	return err.Error()
}

// finish ends a task: the last log entry, then result.json, and only then
// the task counts as finished for followers and Start. What the disk does
// not take of it (log entries, the result) is kept in memory and served
// from there (kept), so the task ends with its real state and its whole
// end however full the disk is.
func (r *Runner) finish(t *task, res result, msg string) {
	res.FinishedAt = time.Now().UTC()
	t.mu.Lock()
	res.Outputs, res.Artifacts = t.outputs, t.artifacts
	if msg != "" {
		t.appendLocked(streamAgent, msg)
	}
	if !t.tail.empty() && !t.flushLocked() {
		t.keepLocked()
	}
	res.LostLines, res.LostReason = t.tail.lost, t.tail.lostReason()
	inMemory := len(t.mem)
	t.mu.Unlock()
	err := t.writeResult(res)
	if err != nil || inMemory > 0 {
		r.log.Warn("could not write the end of a finished task to disk; it is kept in memory until the disk takes it",
			zap.String("ticket", t.ticket), zap.Int("log_entries_in_memory", inMemory), zap.Bool("result_written", err == nil), zap.Error(err))
	}
	// The next task may run once this one's result is known.
	if t.claim != nil {
		r.locks.unlock(t.claim)
	}
	// Forgotten before anyone hears it finished, so whoever does finds
	// its Calamari version no longer in use; lookups meanwhile read the
	// result just written, or the task kept in memory.
	keep := err != nil || inMemory > 0
	t.mu.Lock()
	t.resultWritten = err == nil
	t.mu.Unlock()
	r.retire(t, keep)
	t.mu.Lock()
	t.result = &res
	t.notifyLocked()
	t.mu.Unlock()
	if !keep {
		t.closeLog()
	}
	close(t.done)
	if res.LostLines > 0 {
		r.log.Warn("task output was lost", zap.String("ticket", t.ticket), zap.Int64("lines", res.LostLines), zap.String("reason", res.LostReason))
	}
	r.log.Info("task finished", zap.String("ticket", t.ticket), zap.String("state", res.State), zap.Int("exit_code", res.ExitCode))
	r.retention.wake() // a finished task may put another beyond the rule
}

// maxKept bounds the finished tasks kept in memory for a disk that does
// not take them; each holds at most its tail (tailLines, tailBytes).
const maxKept = 100

// forget drops a finished (or never started) task from memory; from now on
// it is read from disk.
func (r *Runner) forget(t *task) { r.retire(t, false) }

// retire drops a task from the running ones, and keeps it in memory if
// keep (its end is not all on disk).
func (r *Runner) retire(t *task, keep bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tasks[t.ticket] == t {
		delete(r.tasks, t.ticket)
		r.unreserveLocked(t.calamari)
	}
	if !keep {
		return
	}
	r.kept[t.ticket] = t
	r.keptOrder = append(r.keptOrder, t.ticket)
	for len(r.keptOrder) > maxKept {
		old := r.kept[r.keptOrder[0]]
		delete(r.kept, r.keptOrder[0])
		r.keptOrder = r.keptOrder[1:]
		if old != nil {
			r.log.Error("too many finished tasks the disk did not take; the oldest one's end, kept in memory, is dropped",
				zap.String("ticket", old.ticket), zap.Int("kept", maxKept))
			old.closeLog()
		}
	}
}

// persist tries to write a kept task's end to disk, and stops keeping it
// once it is all there. Called with r.mu held.
func (r *Runner) persist(t *task) {
	t.mu.Lock()
	done := t.result != nil && t.persistLocked()
	t.mu.Unlock()
	if !done {
		return
	}
	t.closeLog()
	if r.kept[t.ticket] == t {
		delete(r.kept, t.ticket)
		r.keptOrder = slices.DeleteFunc(r.keptOrder, func(k string) bool { return k == t.ticket })
	}
	r.log.Info("the end of a finished task, kept in memory, is written to disk now", zap.String("ticket", t.ticket))
}

// persistKept tries to write every kept task's end to disk.
func (r *Runner) persistKept() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.kept {
		r.persist(t)
	}
}

// Cancel kills a task's whole process tree and returns once its process
// has been reaped and its result written. A task that already finished is
// left as it is; an unknown ticket is an error.
func (r *Runner) Cancel(ctx context.Context, ticket string) error {
	if err := ValidateTicket(ticket); err != nil {
		return err
	}
	r.mu.Lock()
	t := r.tasks[ticket]
	r.mu.Unlock()
	if t == nil {
		if exists(filepath.Join(r.taskDir(ticket), infoFile)) {
			return nil // finished: nothing to do
		}
		return fmt.Errorf("cancel task %s: %w", ticket, ErrUnknownTicket)
	}
	if err := r.cancel(ctx, t); err != nil {
		return fmt.Errorf("cancel task %s: %w", ticket, err)
	}
	return nil
}

// cancel asks the task's process group to stop, kills it after the grace
// period, and waits until the task has finished. Signals are sent only
// while the process has not been reaped (t.exited is false under t.mu),
// so they cannot reach a process that inherited its id.
func (r *Runner) cancel(ctx context.Context, t *task) error {
	t.mu.Lock()
	if t.result != nil {
		t.mu.Unlock()
		return nil
	}
	first := !t.cancelled
	t.cancelled = true
	if t.stopWait != nil && t.proc == nil {
		t.stopWait() // a task waiting for its turn never runs
	}
	if first && t.proc != nil && !t.exited {
		r.log.Info("cancelling task", zap.String("ticket", t.ticket))
		if err := terminateGroup(t.proc); err != nil {
			r.log.Warn("could not ask a task to stop", zap.String("ticket", t.ticket), zap.Error(err))
		}
	}
	t.mu.Unlock()

	grace := time.NewTimer(r.cfg.KillGrace)
	defer grace.Stop()
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-grace.C:
	}
	t.mu.Lock()
	if t.proc != nil && !t.exited {
		r.log.Warn("task did not stop in time; killing it", zap.String("ticket", t.ticket), zap.Duration("grace", r.cfg.KillGrace))
		killGroup(t.proc)
	}
	t.mu.Unlock()
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the Runner: it starts nothing more, cancels every running
// task and waits for them, bounded by ctx, so no process is left behind by
// a stopping agent. It is idempotent.
func (r *Runner) Close(ctx context.Context) error {
	r.persistKept()
	r.mu.Lock()
	r.closed = true
	running := make([]*task, 0, len(r.tasks))
	for _, t := range r.tasks {
		running = append(running, t)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range running {
		wg.Go(func() { r.cancel(ctx, t) }) // a failure is ctx's, seen below
	}
	wg.Wait()
	var left []string
	for _, t := range running {
		select {
		case <-t.done:
		default:
			left = append(left, t.ticket)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("close task runner: tasks still running: %s: %w", strings.Join(left, ", "), ctx.Err())
	}
	// Every task finished, so every waiter is returning.
	r.wg.Wait()
	return nil
}

// quoteArgs renders arguments for the log, quoting the ones a reader could
// not otherwise tell apart.
func quoteArgs(args []string) string {
	var b strings.Builder
	for _, a := range args {
		b.WriteByte(' ')
		if a == "" || strings.ContainsAny(a, " \t\r\n\"'\\") {
			a = strconv.Quote(a)
		}
		b.WriteString(a)
	}
	return b.String()
}
