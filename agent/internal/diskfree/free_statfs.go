//go:build linux || darwin || freebsd || dragonfly

package diskfree

import "golang.org/x/sys/unix"

// Free returns the bytes available to the agent's user on the file
// system holding path, or -1 if unknown.
func Free(path string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return -1
	}
	// Field widths differ between systems; the conversions make one
	// expression fit them all.
	return int64(st.Bavail) * int64(st.Bsize)
}
