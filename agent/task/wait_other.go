//go:build !linux

package task

// waitExited cannot wait without reaping on this system; the waiter then
// learns of the exit only from Wait, and stops signalling from then on.
func waitExited(int) bool { return false }
