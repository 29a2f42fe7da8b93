//go:build linux || darwin || freebsd || dragonfly

package diag

import "golang.org/x/sys/unix"

// DiskFree returns the bytes available to this user on the file system
// holding path, or -1 and why not.
func DiskFree(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return -1, err
	}
	// Field widths differ between systems; the conversions make one
	// expression fit them all.
	return int64(st.Bavail) * int64(st.Bsize), nil
}
