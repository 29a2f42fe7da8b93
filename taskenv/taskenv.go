// Package taskenv is the contract between the agent and the calamari it
// starts for each task: the environment variables it sets, the features a
// calamari lists in `calamari version --json`, and the start gate's byte.
// Both sides import it, so neither can drift from the other; it imports
// nothing, so calamari stays small and quick to start.
package taskenv

// Environment variables every task's process gets, on top of the agent's.
const (
	Ticket  = "TENDRIL_TICKET"
	TaskDir = "TENDRIL_TASK_DIR"
	// Files is the folder the files pushed with the task are in.
	Files = "TENDRIL_FILES"
	Home  = "TENDRIL_HOME"
	// Calamari is the path of the calamari the task runs; its folder is
	// also first in the task's PATH.
	Calamari = "TENDRIL_CALAMARI"
	// Exec, set to 1, tells calamari that the agent keeps what calamari
	// would otherwise keep between it and a script's shell: the stop grace
	// (the agent signals the whole process group, then kills it) and the
	// exit code of a shell a signal killed (128 + the signal, as shells
	// report it). A calamari that knows it may then replace itself with the
	// shell instead of starting it and waiting: a process start, a wait
	// and a Go exit less in every task. Earlier calamari releases ignore
	// it.
	Exec = "TENDRIL_CALAMARI_EXEC"
	// Gate names, to a calamari that lists FeatureStartGate, the file
	// descriptor it waits on before it does anything: GateOpen read there
	// lets it go on; the descriptor closing without it means the task is
	// not to run.
	Gate = "TENDRIL_CALAMARI_GATE"
)

// FeatureStartGate is what a calamari lists among the features of
// `calamari version --json` when it honours Gate.
const FeatureStartGate = "start-gate"

// GateOpen is the byte that lets a gated calamari go on.
const GateOpen byte = 'g'

// Version is what `calamari version --json` prints: the agent reads
// Features from it.
type Version struct {
	Version  string   `json:"version"`
	Features []string `json:"features"`
}
