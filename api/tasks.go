package api

import (
	"fmt"
	"time"
)

// FileView describes an uploaded file.
type FileView struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// LogLineView is one line of GET /api/tasks/{id}/log, which streams
// newline-delimited JSON: LogLineView objects, then, once the task has
// finished and every line was sent, one {"end": TaskView}.
type LogLineView struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"`
	Text   string    `json:"text"`
}

// LogEnd is the last object of a task log stream.
type LogEnd struct {
	End TaskView `json:"end"`
}

// TaskRequest asks for Calamari to run on one agent, on several, or on
// every agent of an environment. A request naming an agent that does not
// exist, or one that is not connected, starts nothing anywhere.
type TaskRequest struct {
	Agent string `json:"agent,omitempty"`
	// Agents are more agents to run on, besides Agent.
	Agents      []string `json:"agents,omitempty"`
	Environment string   `json:"environment,omitempty"`
	// Args are Calamari's arguments, e.g. ["run-script", "--inline", "echo hi"].
	Args []string `json:"args"`
	// Calamari is the bundle version to run; "" means the latest.
	Calamari string `json:"calamari,omitempty"`
	// File is an uploaded file (POST /api/files) to put in the task's
	// folder before it starts, e.g. a package for deploy-package.
	File *FileRef `json:"file,omitempty"`
	// Isolation is IsolationFull (the default, "") or IsolationNone: a
	// full-isolation task runs alone on its agent, waiting for the tasks
	// there to finish and making later ones wait for it.
	Isolation string `json:"isolation,omitempty"`
	// Locks are named locks (names as ValidateName allows, at most
	// MaxTaskLocks) the task holds on its agent while it runs: tasks that
	// share one run one after the other.
	Locks []string `json:"locks,omitempty" schema:"name"`
	// Variables reach the task's process as environment variables. Names
	// are letters, digits and '_', not starting with a digit nor with
	// TENDRIL_. A sensitive value is stored sealed under the coordinator's
	// master key, sent only inside the agent's session, and masked in the
	// task's log; it is never shown again.
	Variables []Variable `json:"variables,omitempty"`
	// VariablesFrom take variables' values from the outputs of earlier
	// tasks.
	VariablesFrom []VariableFrom `json:"variables_from,omitempty"`
}

// Variable is a variable of a task.
type Variable struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// Sensitive hides the value everywhere: TaskView shows only the name.
	Sensitive bool `json:"sensitive,omitempty"`
}

// VariableFrom names an output of an earlier task.
type VariableFrom struct {
	// Name is the variable's; "" means the output's name.
	Name   string `json:"name,omitempty"`
	Task   string `json:"task"`
	Output string `json:"output"`
}

// ArtifactView is a file a task's script attached: GET
// /api/tasks/{id}/artifacts/{name} downloads it.
type ArtifactView struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Task isolation, TaskRequest.Isolation and TaskView.Isolation.
const (
	IsolationFull = "full"
	IsolationNone = "none"
)

// MaxTaskLocks is the most named locks one task may hold.
const MaxTaskLocks = 16

// ValidateIsolation checks a TaskRequest's isolation and locks; the
// coordinator refuses a request that fails it, and the command checks it
// before uploading anything.
func ValidateIsolation(isolation string, locks []string) error {
	switch isolation {
	case "", IsolationFull, IsolationNone:
	default:
		return fmt.Errorf("isolation %q: use %q (the task runs alone on its agent; the default) or %q", isolation, IsolationFull, IsolationNone)
	}
	if len(locks) > MaxTaskLocks {
		return fmt.Errorf("%d locks: a task may hold at most %d", len(locks), MaxTaskLocks)
	}
	for _, l := range locks {
		if err := ValidateName("lock", l); err != nil {
			return err
		}
	}
	return nil
}

// FileRef names an uploaded file and what to call it on the agent.
type FileRef struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// TaskView is a task as the API shows it.
type TaskView struct {
	ID       string   `json:"id"`
	Group    string   `json:"group"`
	Agent    string   `json:"agent"`
	Args     []string `json:"args"`
	Calamari string   `json:"calamari"`
	File     string   `json:"file,omitempty"`
	// Isolation is IsolationFull or IsolationNone.
	Isolation string `json:"isolation"`
	// Locks are the task's named locks.
	Locks []string `json:"locks,omitempty"`
	// State is TaskQueued until the task runs: until it reaches its
	// agent, and while it waits there for its turn (its log says for
	// which task).
	State string `json:"state"`
	// WaitingFor says, while the task is queued on its agent, what it
	// waits for, as the agent said it ("waiting for task ID (NAME) to
	// finish").
	WaitingFor string `json:"waiting_for,omitempty"`
	// StateReason says, while the task is queued or running, what keeps
	// it there and what ends it: its agent is not connected (it goes on
	// when the agent is back), the coordinator cannot store its log or
	// result yet (it retries), ... "" when nothing holds it up.
	StateReason string     `json:"state_reason,omitempty"`
	ExitCode    int        `json:"exit_code"`
	Error       string     `json:"error,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	LogLines    int64      `json:"log_lines"`
	// Variables are the task's variables; a sensitive one has only its
	// name and Sensitive set.
	Variables []Variable `json:"variables,omitempty"`
	// Outputs are the output variables its script set.
	Outputs map[string]string `json:"outputs,omitempty"`
	// Artifacts are the files its script attached, once collected from
	// the agent.
	Artifacts []ArtifactView `json:"artifacts,omitempty"`
	// LostLines counts the lines of the task's output that never reached
	// the coordinator, and LostReason says why (the agent's disk refused
	// them, say). Its log says where they were lost. The task keeps its
	// state: a script that succeeded succeeded, with this warning.
	LostLines  int64  `json:"lost_lines,omitempty"`
	LostReason string `json:"lost_reason,omitempty"`
}

// LostWarning is the warning of a task that lost output, "" if it lost
// none: what the CLI and the console show.
func (v TaskView) LostWarning() string {
	if v.LostLines == 0 {
		return ""
	}
	line := "lines"
	if v.LostLines == 1 {
		line = "line"
	}
	if v.LostReason == "" {
		return fmt.Sprintf("%d %s of output lost", v.LostLines, line)
	}
	return fmt.Sprintf("%d %s of output lost: %s", v.LostLines, line, v.LostReason)
}

// Task states, as TaskView.State says them.
const (
	TaskQueued    = "queued"
	TaskRunning   = "running"
	TaskSucceeded = "succeeded"
	TaskFailed    = "failed"
	TaskCancelled = "cancelled"
)

// Finished reports whether the task reached a final state.
func (v TaskView) Finished() bool {
	return v.State == TaskSucceeded || v.State == TaskFailed || v.State == TaskCancelled
}

// TaskFilter is the query of GET /api/tasks; zero fields match
// everything.
type TaskFilter struct {
	// Agent is an agent's name.
	Agent string
	// Group is the group of tasks one request created.
	Group string
	// Limit is at most 1000; 0 means 100.
	Limit int
}
