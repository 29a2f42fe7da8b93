package task

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/servicemsg"
)

// Limits of a task's variables, which all travel in one frame and end up
// in one process environment.
const (
	// MaxVariables is the most variables one task may have.
	MaxVariables = 256
	// MaxVariableBytes is the most bytes of names and values together.
	MaxVariableBytes = 256 << 10
	// MaxOutputs is the most output variables a task's script may set.
	MaxOutputs = 256
)

// ErrInvalidVariables means a task's variables cannot be given to a
// process: a bad name, a reserved one, a repeated one, or too many.
var ErrInvalidVariables = errors.New("invalid task variables")

// ReservedPrefix starts the names of the variables the agent itself
// gives every task; a task's variables may not use it.
const ReservedPrefix = "TENDRIL_"

// validateVariables checks a task's variables.
func validateVariables(vars []protocol.Variable) error {
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

// sensitiveValues returns the values to mask.
func sensitiveValues(vars []protocol.Variable) []string {
	var out []string
	for _, v := range vars {
		if v.Sensitive {
			out = append(out, v.Value)
		}
	}
	return out
}

// environ is the variables as NAME=VALUE.
func environ(vars []protocol.Variable) []string {
	out := make([]string, len(vars))
	for i, v := range vars {
		out[i] = v.Name + "=" + v.Value
	}
	return out
}

// setOutput records an output variable and says so in the log. Its value
// is masked like the log, so a script cannot carry a sensitive value out
// through an output.
func (t *task) setOutput(name, value string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.outputs[name]; !ok && len(t.outputs) >= MaxOutputs {
		return fmt.Sprintf("output %s ignored: a task may set at most %d outputs", name, MaxOutputs)
	}
	if t.outputs == nil {
		t.outputs = map[string]string{}
	}
	value = t.mask.mask(value)
	t.outputs[name] = value
	shown := value
	if len(shown) > 200 {
		shown = strings.ToValidUTF8(shown[:200], "") + "..."
	}
	return "output " + name + " = " + strconv.Quote(shown)
}
