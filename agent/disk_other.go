//go:build !(linux || darwin || freebsd || dragonfly || windows)

package agent

// diskFree is unknown on systems without a supported free-space call; -1
// tells the coordinator so instead of reporting a full disk.
func diskFree(string) int64 { return -1 }
