//go:build windows

package agent

// lockHome does nothing on Windows: there the agent runs as one service
// instance, which the service manager keeps single, and upgrades (which
// need the lock on Unix to keep a restarted agent and a re-executed one
// apart) are refused until a later change adds them.
func lockHome(string) (func(), error) { return func() {}, nil }
