package agent

import "github.com/tendrildeploy/tendril/agent/internal/diskfree"

// diskFree returns the bytes available to the agent's user on the file
// system holding path, or -1 if unknown.
func diskFree(path string) int64 { return diskfree.Free(path) }
