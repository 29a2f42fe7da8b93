// Package kind names the kinds of failure that decide how the coordinator
// answers a request: input to correct, a conflict with what is stored,
// something that does not exist, an agent that is not connected. Every
// layer returns them (the core, the rollout engine, the store through
// ErrNotFound) and only the HTTP API and the console turn them into status
// codes, so the kinds live in a leaf package that all of them can import.
package kind

import (
	"errors"
	"fmt"
)

// Kinds of failure, for errors.Is.
var (
	// ErrBadRequest wraps input a person must correct.
	ErrBadRequest = errors.New("bad request")
	// ErrConflict wraps a request that contradicts what is stored.
	ErrConflict = errors.New("conflict")
	// ErrNotFound wraps a request for something that does not exist. The
	// store's ErrNotFound is this error.
	ErrNotFound = errors.New("not found")
	// ErrNotConnected means the agent has no session to this coordinator.
	ErrNotConnected = errors.New("agent is not connected")
	// ErrForbidden wraps a request the caller's role does not allow.
	ErrForbidden = errors.New("forbidden")
	// ErrNoAnswer means the coordinator node that alone could act (the
	// one holding an agent's session) did not answer in time.
	ErrNoAnswer = errors.New("another coordinator node did not answer")
)

// Error is an error whose text is a message for a person and which matches
// the kind (ErrBadRequest, ErrNotFound, ...) that decides how the API
// answers it.
type Error struct {
	kind error
	msg  string
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns the kind.
func (e *Error) Unwrap() error { return e.kind }

// Errorf formats a message a person can act on, of the given kind.
func Errorf(kind error, format string, args ...any) error {
	return &Error{kind: kind, msg: fmt.Sprintf(format, args...)}
}
