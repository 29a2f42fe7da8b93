package task

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tendrildeploy/tendril/protocol"
)

// MaxOutputs is the most output variables a task's script may set.
const MaxOutputs = 256

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
