package task

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/tendrildeploy/tendril/taskenv"
)

// The start gate: a task's process may start before its task.json is on
// disk, as long as it does nothing until it is.
//
// A task must never run twice, so task.json is written and synced before
// the task runs: after a crash, the ticket is found taken. That sync and
// the start of calamari (a process start and Go's runtime start, about 2
// ms) took turns in every task's round trip. A calamari that says it
// honours the gate (taskenv.FeatureStartGate in `calamari version
// --json`) is started with one end of a pipe as file descriptor 3, named
// in taskenv.Gate, and waits on it before it does anything: the agent
// writes one byte once task.json is synced, and closes the pipe without
// it (then kills the process group) when the task is not to run. The
// sync and calamari's start then overlap. A calamari that does not say
// so is started after the sync, as before.

// gateFD is the descriptor the gate's read end gets in the process:
// the first of cmd.ExtraFiles.
const gateFD = "3"

// featureProbeTimeout bounds `calamari version --json`.
const featureProbeTimeout = 5 * time.Second

// gates remembers which calamari entry points honour the start gate: asked
// once per file (by path, size and modification time), by running it.
type gates struct {
	mu sync.Mutex
	m  map[string]gateAnswer
}

type gateAnswer struct {
	size  int64
	mtime time.Time
	ok    bool
}

// honoured reports whether the calamari at entry honours the start gate.
// An entry that cannot say (an earlier calamari, a failure to run it)
// does not: its tasks start after task.json is synced. The answer of a
// calamari that ran is kept; a probe that could not start it (the system
// short of processes, say) is not, and the next start asks again. Starts
// do not wait on each other's probes; two first starts may both ask.
func (g *gates) honoured(entry string) bool {
	if runtime.GOOS == "windows" { // no inherited descriptors to wait on
		return false
	}
	st, err := os.Stat(entry)
	if err != nil {
		return false
	}
	g.mu.Lock()
	a, ok := g.m[entry]
	g.mu.Unlock()
	if ok && a.size == st.Size() && a.mtime.Equal(st.ModTime()) {
		return a.ok
	}
	honours, ran := probeStartGate(entry)
	if ran {
		g.mu.Lock()
		if g.m == nil {
			g.m = map[string]gateAnswer{}
		}
		g.m[entry] = gateAnswer{size: st.Size(), mtime: st.ModTime(), ok: honours}
		g.mu.Unlock()
	}
	return honours
}

// probeStartGate runs `entry version --json` and reads its features; ran
// is false if it could not be started. It runs in an empty folder of its
// own, removed after, so that nothing it writes lands where the agent
// happens to run.
func probeStartGate(entry string) (honours, ran bool) {
	dir, err := os.MkdirTemp("", "tendril-calamari-")
	if err != nil {
		return false, false
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), featureProbeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, entry, "version", "--json")
	cmd.Dir = dir
	// A process it started that keeps the output open must not hold this
	// start past the timeout.
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if cmd.ProcessState == nil && ctx.Err() == nil {
		return false, false // not started
	}
	if err != nil {
		return false, true // it ran and failed, or timed out: an answer
	}
	var v taskenv.Version
	return json.Unmarshal(out, &v) == nil && slices.Contains(v.Features, taskenv.FeatureStartGate), true
}

// gated is a task's process started and waiting at the gate.
type gated struct {
	cmd  *exec.Cmd
	gate *os.File // the write end
}

// startGated starts cmd waiting at the gate, or returns nil if it could
// not: the task then starts the usual way, which reports why if it fails
// again.
func startGated(cmd *exec.Cmd) *gated {
	r, w, err := os.Pipe()
	if err != nil {
		return nil
	}
	cmd.ExtraFiles = []*os.File{r}
	cmd.Env = append(cmd.Env, taskenv.Gate+"="+gateFD)
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil
	}
	return &gated{cmd: cmd, gate: w}
}

// open lets the process go on. A process that died at the gate meanwhile
// is the wait's to report, like any exit.
func (g *gated) open() {
	g.gate.Write([]byte{taskenv.GateOpen})
	g.gate.Close()
}

// abort ends a process that must not go on: the gate closes unopened,
// which the process takes as its end, and its group is killed in case it
// is still at its start; then it is reaped. It did nothing but wait. A
// nil g does nothing.
func (g *gated) abort() {
	if g == nil {
		return
	}
	g.gate.Close()
	killGroup(g.cmd.Process)
	g.cmd.Wait()
}
