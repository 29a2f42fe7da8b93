package main

import (
	"os"
	"strconv"

	"github.com/tendrildeploy/tendril/taskenv"
)

// The start gate (taskenv.Gate): an agent may start calamari before the
// task is recorded on its disk, naming a descriptor calamari waits on
// before it does anything. One byte, taskenv.GateOpen, lets it go on; the
// descriptor closing without it means the task is not to run.

// awaitStart waits at the gate, if the agent set one, and reports whether
// calamari may go on. The descriptor is closed and the variable removed
// either way, so the script inherits neither.
func awaitStart() bool {
	v, ok := os.LookupEnv(taskenv.Gate)
	if !ok {
		return true
	}
	os.Unsetenv(taskenv.Gate)
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
	return n == 1 && b[0] == taskenv.GateOpen
}
