//go:build windows

package diskfree

import "golang.org/x/sys/windows"

// Free returns the bytes available to the agent's user on the volume
// holding path, or -1 if unknown.
func Free(path string) int64 {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return -1
	}
	var avail, total, free uint64
	if err := windows.GetDiskFreeSpaceEx(p, &avail, &total, &free); err != nil {
		return -1
	}
	return int64(avail)
}
