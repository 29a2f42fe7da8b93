//go:build windows

package diagnostics

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// noDumps says why a running agent is not asked for a goroutine dump:
// Windows has no signal to ask it with, and its home is not locked.
const noDumps = "on Windows a running agent cannot be asked for a goroutine dump from the command line; tendril-server agents diagnostics NAME asks it over its session"

// ServeDumps does nothing on Windows: see noDumps.
func ServeDumps(string, *zap.Logger) (stop func()) { return func() {} }

// runningPID cannot tell on Windows, where the home is not locked.
func runningPID(string) (int, bool, error) { return 0, false, nil }

func requestDump(context.Context, string, int, time.Duration) (string, error) {
	return "", errors.New(noDumps)
}
