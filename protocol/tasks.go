package protocol

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/servicemsg"
)

// Message types for Calamari bundles, deployment tasks and the files they
// need. All are coordinator -> agent requests.
const (
	// Verify one installed Calamari version: CalamariCheck -> CalamariState.
	TypeCalamariCheck = "calamari_check"
	TypeCalamariState = "calamari_state"
	// Push a bundle: CalamariPush -> PushReady, then the bundle bytes from
	// the offset the agent asked for, then -> CalamariInstalled.
	TypeCalamariPush      = "calamari_push"
	TypeCalamariInstalled = "calamari_installed"
	// Push a file into a task's folder before it starts: FilePush ->
	// PushReady, then the bytes, then -> TypeAck.
	TypeFilePush = "file_push"
	// The agent's answer to a push header.
	TypePushReady = "push_ready"
	// Start a task: TaskStart -> TaskStarted. Idempotent by ticket.
	TypeTaskStart   = "task_start"
	TypeTaskStarted = "task_started"
	// Follow a task's log: TaskFollow -> any number of TaskLog frames, then
	// one TaskEnd when the task has finished.
	TypeTaskFollow = "task_follow"
	TypeTaskLog    = "task_log"
	TypeTaskEnd    = "task_end"
	// Cancel a task: TaskCancel -> TypeAck once its process tree is gone.
	TypeTaskCancel = "task_cancel"
	// Fetch a file a task attached: ArtifactFetch -> ArtifactData, then
	// the file's bytes from the offset asked for. Only to agents with
	// FeatureVariables.
	TypeArtifactFetch = "artifact_fetch"
	TypeArtifactData  = "artifact_data"
)

// Transfer is the header of bulk bytes: they are sent raw on the stream
// after the receiver answers PushReady, and must add up to Size bytes
// whose SHA-256 is SHA256. Bulk bytes never travel inside frames.
type Transfer struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lower-case hex
}

// CalamariCheck asks whether a version is installed and intact.
type CalamariCheck struct {
	Version string `json:"version"`
}

// CalamariState answers CalamariCheck.
type CalamariState struct {
	Version   string `json:"version"`
	Installed bool   `json:"installed"`
	// Problem says why not, for the task log: "not installed", "file
	// linux-amd64/calamari: SHA-256 differs", ...
	Problem string `json:"problem,omitempty"`
}

// CalamariPush offers a signed bundle.
type CalamariPush struct {
	Version   string   `json:"version"`
	Signature []byte   `json:"signature"` // of the bundle's manifest.json
	Bundle    Transfer `json:"bundle"`
	// Keep is how many Calamari versions the agent keeps after installing
	// (the coordinator's machine policy); 0 means the agent's own setting.
	// Agents older than this field ignore it.
	Keep int `json:"keep,omitempty"`
	// ManifestOnly says that the agent need not hash the bundle as a
	// whole against Bundle.SHA256, which then only names the transfer (the
	// partial file a cut push resumes from). The signed manifest already
	// vouches for everything an install holds: bundle.Stage refuses any
	// file whose size or SHA-256 differs from it, any entry it does not
	// list or that is not a regular file or a folder of its files, any
	// file it lists that is missing, and anything after the archive, and
	// writes each file with the manifest's mode. A second SHA-256 of every
	// byte added no authenticity, only a check of the bytes a resume
	// reuses, which that same verification catches (a push whose bytes do
	// not make the signed bundle is refused and its partial file removed).
	// Agents older than this field ignore it and hash the bundle as
	// before, and an agent that gets a push without it (from an older
	// coordinator) does too.
	ManifestOnly bool `json:"manifest_only,omitempty"`
}

// PushReady answers a push header: send the bytes from Offset on (a
// previous push was cut after Offset bytes), or none if Done.
type PushReady struct {
	Offset int64 `json:"offset"`
	// Done means the agent already has what is offered; no bytes follow.
	Done bool `json:"done,omitempty"`
}

// CalamariInstalled reports a completed installation.
type CalamariInstalled struct {
	Version string `json:"version"`
	// Pruned lists old versions removed to keep the newest few.
	Pruned []string `json:"pruned,omitempty"`
}

// FilePush sends a file into a task's folder (a package to deploy).
type FilePush struct {
	Ticket string   `json:"ticket"`
	Name   string   `json:"name"` // a plain file name, no path
	File   Transfer `json:"file"`
}

// TaskStart starts Calamari with Args in the task's folder. Starting a
// ticket that already exists starts nothing and reports its state.
type TaskStart struct {
	Ticket   string   `json:"ticket"`
	Calamari string   `json:"calamari"` // version to run
	Args     []string `json:"args"`
	// Isolation is IsolationFull ("" means it too: an older coordinator's
	// tasks run one at a time) or IsolationNone. A full-isolation task
	// runs alone on the agent; tasks of isolation none run beside each
	// other. Agents that do not isolate (no FeatureIsolation in Hello)
	// ignore it and Locks.
	Isolation string `json:"isolation,omitempty"`
	// Locks are named locks the task holds, exclusively, while it runs:
	// tasks that share one run one after the other.
	Locks []string `json:"locks,omitempty"`
	// Name says what the task is, for the log line of a task that waits
	// for it ("waiting for task <ticket> (<name>) to finish").
	Name string `json:"name,omitempty"`
	// Variables reach the task's process as environment variables. Only
	// to agents with FeatureVariables: an older agent would run the task
	// without them, and log a sensitive value it does not know to mask.
	Variables []Variable `json:"variables,omitempty"`
	// ReportMissingCalamari asks an agent with FeatureStartCalamari to
	// answer a start whose Calamari version is not installed or not
	// intact with CodeCalamariMissing rather than CodeBadRequest: the
	// coordinator then skips the CalamariCheck round trip before each
	// start, and pushes the version and starts again only when told.
	// Older agents ignore it and answer CodeBadRequest, which is why the
	// coordinator checks first with them.
	ReportMissingCalamari bool `json:"report_missing_calamari,omitempty"`
}

// FeatureStartCalamari, in Hello.Features, says that the agent honours
// TaskStart.ReportMissingCalamari. It verifies the task's Calamari
// version when it starts the task whatever the coordinator asks, so the
// coordinator's CalamariCheck before the start only costs a round trip.
const FeatureStartCalamari = "task_start_calamari"

// CodeCalamariMissing answers a TaskStart with ReportMissingCalamari set
// whose Calamari version is not installed or not intact; the message
// says why. Nothing of the task was kept: the coordinator pushes the
// version and sends the same start again.
const CodeCalamariMissing = "calamari_missing"

// Variable is one variable of a task.
type Variable struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// Sensitive values are never written to the agent's disk, and every
	// occurrence of one in the task's output is masked in its log.
	Sensitive bool `json:"sensitive,omitempty"`
}

// Limits of a task's variables, which all travel in one frame and end up
// in one process environment.
const (
	// MaxVariables is the most variables one task may have.
	MaxVariables = 256
	// MaxVariableBytes is the most bytes of names and values together.
	MaxVariableBytes = 256 << 10
	// ReservedPrefix starts the names of the variables the agent itself
	// gives every task; a task's variables may not use it.
	ReservedPrefix = "TENDRIL_"
)

// ErrInvalidVariables means a task's variables cannot be given to a
// process: a bad name, a reserved one, a repeated one, or too many.
var ErrInvalidVariables = errors.New("invalid task variables")

// ValidateVariables checks a task's variables: names as
// servicemsg.ValidateName allows, none starting with ReservedPrefix, none
// twice, no NUL byte in a value, within the limits. The coordinator checks
// before it stores a task, the agent again before it runs one.
func ValidateVariables(vars []Variable) error {
	if len(vars) > MaxVariables {
		return fmt.Errorf("%w: %d variables, at most %d", ErrInvalidVariables, len(vars), MaxVariables)
	}
	seen := make(map[string]bool, len(vars))
	total := 0
	for _, v := range vars {
		if err := servicemsg.ValidateName(v.Name); err != nil {
			return fmt.Errorf("%w: variable %v", ErrInvalidVariables, err)
		}
		if strings.HasPrefix(strings.ToUpper(v.Name), ReservedPrefix) {
			return fmt.Errorf("%w: variable %s: names starting with %s are the agent's", ErrInvalidVariables, v.Name, ReservedPrefix)
		}
		if seen[v.Name] {
			return fmt.Errorf("%w: variable %s given twice", ErrInvalidVariables, v.Name)
		}
		if strings.ContainsRune(v.Value, 0) {
			return fmt.Errorf("%w: variable %s: a value cannot hold a NUL byte", ErrInvalidVariables, v.Name)
		}
		seen[v.Name] = true
		total += len(v.Name) + len(v.Value)
	}
	if total > MaxVariableBytes {
		return fmt.Errorf("%w: %d bytes of variables, at most %d", ErrInvalidVariables, total, MaxVariableBytes)
	}
	return nil
}

// FeatureVariables, in Hello.Features, says that the agent gives tasks
// their Variables, masks sensitive values in their logs, reads the
// service messages of their scripts (output variables and artifacts,
// package servicemsg), reports them in TaskEnd and serves ArtifactFetch.
const FeatureVariables = "task_variables"

// Artifact is a file a task's script attached, kept by the agent under
// the task's folder until the coordinator fetched it.
type Artifact struct {
	// Name is the file's base name, unique within the task.
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// ArtifactFetch asks for a task's artifact from byte Offset on (the
// bytes before it arrived in an earlier, cut fetch).
type ArtifactFetch struct {
	Ticket string `json:"ticket"`
	Name   string `json:"name"`
	Offset int64  `json:"offset"`
}

// ArtifactData answers ArtifactFetch: File describes the whole artifact,
// and its bytes from the requested offset follow on the stream.
type ArtifactData struct {
	File Transfer `json:"file"`
}

// Task isolation, TaskStart.Isolation.
const (
	IsolationFull = "full"
	IsolationNone = "none"
)

// FeatureIsolation, in Hello.Features, says that the agent honours
// TaskStart.Isolation and Locks, and may answer TaskStarted with
// TaskQueued for a task that waits its turn.
const FeatureIsolation = "task_isolation"

// Task states as agents and the coordinator report them.
const (
	TaskQueued    = "queued"
	TaskRunning   = "running"
	TaskSucceeded = "succeeded"
	TaskFailed    = "failed"
	TaskCancelled = "cancelled"
)

// TaskStarted answers TaskStart.
type TaskStarted struct {
	Ticket string `json:"ticket"`
	// Existing is true when the ticket was already known: nothing new was
	// started.
	Existing bool `json:"existing,omitempty"`
	// State is TaskQueued while the task waits for another one to finish
	// (its isolation or a lock), TaskRunning once its process started,
	// or a final state.
	State string `json:"state"`
}

// TaskFollow asks for a task's log from sequence number From on, and to
// keep sending until the task ends.
type TaskFollow struct {
	Ticket string `json:"ticket"`
	From   int64  `json:"from"`
}

// LogEntry is one line of a task's output. Seq numbers start at 1 and have
// no gaps, so a reader that stored up to N resumes from N+1.
type LogEntry struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"` // "stdout", "stderr" or "agent"
	Text   string    `json:"text"`
}

// TaskLog carries log entries in order.
type TaskLog struct {
	Entries []LogEntry `json:"entries"`
	// State is the task's state once these entries were written
	// (TaskQueued or TaskRunning), so the coordinator sees a waiting task
	// start. Omitted by agents without FeatureIsolation.
	State string `json:"state,omitempty"`
}

// TaskEnd is the last frame of a follow: the task has finished.
type TaskEnd struct {
	State    string `json:"state"`
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error,omitempty"`
	// LastSeq is the sequence number of the final log entry.
	LastSeq int64 `json:"last_seq"`
	// Outputs are the output variables the task's script set, and
	// Artifacts the files it attached (FeatureVariables).
	Outputs   map[string]string `json:"outputs,omitempty"`
	Artifacts []Artifact        `json:"artifacts,omitempty"`
	// FinishedAt is when the task finished on the agent, LostLines how
	// many lines of its output the agent lost (its disk refused them:
	// the log says where) and LostReason why (FeatureTaskOutcome).
	FinishedAt time.Time `json:"finished_at,omitzero"`
	LostLines  int64     `json:"lost_lines,omitempty"`
	LostReason string    `json:"lost_reason,omitempty"`
}

// FeatureTaskOutcome, in Hello.Features, says that the agent reports in
// TaskEnd when a task finished and the output it lost, keeps the newest
// output in memory while its disk refuses the log (so a task's last line
// is never the one lost), and serves a finished task's end from memory
// until its disk takes it. A coordinator records the end time of an agent
// without it as the time it collected the result.
const FeatureTaskOutcome = "task_outcome"

// TaskCancel asks the agent to kill a task's whole process tree.
type TaskCancel struct {
	Ticket string `json:"ticket"`
}
