//go:build !(linux || darwin || freebsd || dragonfly || windows)

package diskfree

// Free is unknown on systems without a supported free-space call; -1
// tells the coordinator so instead of reporting a full disk.
func Free(string) int64 { return -1 }
