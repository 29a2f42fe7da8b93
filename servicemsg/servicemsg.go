// Package servicemsg is the contract between a task's script and the
// agent that runs it: lines the script prints on its standard output
// that ask the agent for something instead of being logged.
//
// A service message is one whole line:
//
//	##tendril[set-output NAME BASE64-VALUE]
//	##tendril[artifact BASE64-PATH]
//
// The value and the path are standard base64 (RFC 4648, with padding), so
// that any byte, a newline or a ']' among them, travels on one line.
// `calamari set-output NAME VALUE` and `calamari artifact PATH` print
// them; a script that has no calamari at hand prints them itself:
//
//	echo "##tendril[set-output VERSION $(printf %s "$v" | base64 -w0)]"
package servicemsg

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Prefix starts every service message.
const Prefix = "##tendril["

// Kinds of service message.
const (
	KindSetOutput = "set-output"
	KindArtifact  = "artifact"
)

// Limits of what one message carries.
const (
	// MaxOutputValue is the longest output value, in bytes.
	MaxOutputValue = 32 << 10
	// MaxPath is the longest artifact path, in bytes.
	MaxPath = 4096
)

// Message is one parsed service message.
type Message struct {
	// Kind is KindSetOutput or KindArtifact.
	Kind string
	// Name is an output's name (KindSetOutput).
	Name string
	// Value is an output's value (KindSetOutput) or an artifact's path
	// (KindArtifact).
	Value string
}

// ErrMalformed wraps the reason a line that starts like a service message
// is not a valid one.
var ErrMalformed = errors.New("malformed service message")

// maxName is the longest name, in bytes.
const maxName = 128

// ValidateName checks an output (or variable) name: what a process
// environment takes everywhere, letters, digits and '_', not starting
// with a digit, at most 128 characters.
func ValidateName(name string) error {
	if !validName(name) {
		return fmt.Errorf("name %q: use letters, digits and '_', not starting with a digit, at most 128 characters", name)
	}
	return nil
}

// validName checks name by hand rather than with a regular expression:
// calamari, which imports this package, starts for every task, and
// compiling the expression at its start was 0.4-0.6 ms of a task's round
// trip (GODEBUG=inittrace=1).
func validName(name string) bool {
	if len(name) == 0 || len(name) > maxName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// SetOutput is the line that sets output name to value.
func SetOutput(name, value string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", fmt.Errorf("set-output: %w", err)
	}
	if len(value) > MaxOutputValue {
		return "", fmt.Errorf("set-output %s: value of %d bytes is over the limit of %d", name, len(value), MaxOutputValue)
	}
	return Prefix + KindSetOutput + " " + name + " " + base64.StdEncoding.EncodeToString([]byte(value)) + "]", nil
}

// Artifact is the line that attaches the file at path.
func Artifact(path string) (string, error) {
	if path == "" || len(path) > MaxPath {
		return "", fmt.Errorf("artifact: path must be 1 to %d bytes, got %d", MaxPath, len(path))
	}
	return Prefix + KindArtifact + " " + base64.StdEncoding.EncodeToString([]byte(path)) + "]", nil
}

// Parse reads one line of output. ok is false for an ordinary line; a
// line that starts with Prefix but is not a valid message is ok with an
// error wrapping ErrMalformed, which says what is wrong.
func Parse(line string) (m Message, ok bool, err error) {
	line = strings.TrimRight(line, "\r")
	if !strings.HasPrefix(line, Prefix) {
		return Message{}, false, nil
	}
	body, closed := strings.CutSuffix(line[len(Prefix):], "]")
	if !closed {
		return Message{}, true, fmt.Errorf("%w: it does not end with ']'", ErrMalformed)
	}
	fields := strings.Split(body, " ")
	bad := func(format string, args ...any) (Message, bool, error) {
		return Message{}, true, fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	switch fields[0] {
	case KindSetOutput:
		if len(fields) != 3 {
			return bad("want %s NAME BASE64-VALUE (an output name has no spaces)", KindSetOutput)
		}
		if err := ValidateName(fields[1]); err != nil {
			return bad("output %v", err)
		}
		v, err := decode(fields[2], MaxOutputValue)
		if err != nil {
			return bad("output %s: %v", fields[1], err)
		}
		return Message{Kind: KindSetOutput, Name: fields[1], Value: v}, true, nil
	case KindArtifact:
		if len(fields) != 2 {
			return bad("want %s BASE64-PATH", KindArtifact)
		}
		p, err := decode(fields[1], MaxPath)
		if err != nil {
			return bad("artifact path: %v", err)
		}
		if p == "" || strings.ContainsRune(p, 0) {
			return bad("artifact path is empty or holds a NUL byte")
		}
		return Message{Kind: KindArtifact, Value: p}, true, nil
	default:
		return bad("unknown kind %q: want %s or %s", fields[0], KindSetOutput, KindArtifact)
	}
}

func decode(s string, limit int) (string, error) {
	if base64.StdEncoding.DecodedLen(len(s)) > limit+3 {
		return "", fmt.Errorf("over the limit of %d bytes", limit)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("not base64: %v", err)
	}
	if len(b) > limit {
		return "", fmt.Errorf("%d bytes is over the limit of %d", len(b), limit)
	}
	return string(b), nil
}
