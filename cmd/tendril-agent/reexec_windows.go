//go:build windows

package main

import (
	"errors"
	"os"

	"github.com/tendrildeploy/tendril/agent/service"
)

// reexec cannot replace a running image on Windows. Upgrades run only as
// a service there: the agent asked the Service Control Manager to stop
// it, and the upgrade watchdog (started before the swap) starts the
// service again on the new binary once this process is gone, so ending
// is the restart. Not exercised by the tests, which run on Linux.
func reexec(string) error {
	if os.Getenv(service.Env) != "" {
		return nil
	}
	return errors.New("restart into the new version: on Windows only an agent running as a service upgrades")
}
