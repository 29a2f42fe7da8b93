package main

import (
	"os"
	"strconv"
)

// The start gate (the agent's task.EnvCalamariGate): an agent may start
// calamari before the task is recorded on its disk, naming a descriptor
// calamari waits on before it does anything. One byte 'g' lets it go on;
// the descriptor closing without it means the task is not to run.

const (
	// envGate names the descriptor to wait on.
	envGate = "TENDRIL_CALAMARI_GATE"
	// featureStartGate is listed by `calamari version --json` so that
	// the agent knows this calamari waits.
	featureStartGate = "start-gate"
)

// awaitStart waits at the gate, if the agent set one, and reports whether
// calamari may go on. The descriptor is closed and the variable removed
// either way, so the script inherits neither.
func awaitStart() bool {
	v, ok := os.LookupEnv(envGate)
	if !ok {
		return true
	}
	os.Unsetenv(envGate)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return false // not the agent's word: do nothing rather than guess
	}
	f := os.NewFile(uintptr(fd), "start gate")
	if f == nil {
		return false
	}
	defer f.Close()
	var b [1]byte
	n, _ := f.Read(b[:])
	return n == 1 && b[0] == 'g'
}
