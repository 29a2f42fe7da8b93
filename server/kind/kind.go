// Package kind names the kinds of failure that decide how the coordinator
// answers a request: input to correct, a conflict with what is stored,
// something that does not exist, an agent that is not connected, a full
// data folder, an unreachable database. Every layer returns them (the
// core, the rollout engine, the store through ErrNotFound and
// ErrUnavailable) and only the HTTP API and the console turn them into
// status codes, so the kinds live in a leaf package that all of them can
// import.
package kind

import (
	"errors"
	"fmt"
	"strconv"
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
	// ErrNoSpace wraps a write the coordinator's data folder had no room
	// for. It passes when space is freed: nothing needs a restart.
	ErrNoSpace = errors.New("no space left in the data folder")
	// ErrUnavailable wraps a request that needs the database while the
	// coordinator cannot reach it. It passes when the database is back.
	ErrUnavailable = errors.New("the database is unreachable")
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

// NoSpaceError is a write the data folder had no room for, with the room
// there was and the room the write needed, so that the person who sent
// it knows how much to free. It is of kind ErrNoSpace.
type NoSpaceError struct {
	// Free is what the data folder's file system had free once the
	// write's partial file was removed; -1 if unknown.
	Free int64
	// Needed is the size of what was being written (an upload's
	// length, a database snapshot's estimate); 0 if unknown.
	Needed int64
	// Err is the write's own error.
	Err error
}

func (e *NoSpaceError) Error() string {
	var why []string
	if e.Free >= 0 {
		why = append(why, mib(e.Free)+" free")
	}
	if e.Needed > 0 {
		why = append(why, mib(e.Needed)+" needed")
	}
	if len(why) == 0 {
		return ErrNoSpace.Error()
	}
	msg := ErrNoSpace.Error() + " (" + why[0]
	if len(why) > 1 {
		msg += ", " + why[1]
	}
	return msg + ")"
}

// Is makes a NoSpaceError of kind ErrNoSpace.
func (e *NoSpaceError) Is(target error) bool { return target == ErrNoSpace }

// Unwrap returns the write's error.
func (e *NoSpaceError) Unwrap() error { return e.Err }

// mib writes a size in MiB, with a decimal below 10 MiB, where it
// matters.
func mib(n int64) string {
	const m = 1 << 20
	if n < 10*m {
		return strconv.FormatFloat(float64(n)/m, 'f', 1, 64) + " MiB"
	}
	return strconv.FormatInt((n+m/2)/m, 10) + " MiB"
}

// IsNoSpace reports whether err is a write the file system had no room
// for: ENOSPC, a quota's EDQUOT (Windows: ERROR_DISK_FULL,
// ERROR_HANDLE_DISK_FULL), or an error of kind ErrNoSpace.
func IsNoSpace(err error) bool {
	if errors.Is(err, ErrNoSpace) {
		return true
	}
	for _, e := range noSpaceErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
