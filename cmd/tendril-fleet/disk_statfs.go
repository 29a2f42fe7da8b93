//go:build linux || darwin || freebsd || dragonfly

package main

import "golang.org/x/sys/unix"

// freeBytes is the space available to an unprivileged user in dir's file
// system.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	// Field widths differ between systems; the conversions make one
	// expression fit them all.
	return int64(st.Bavail) * int64(st.Bsize), nil
}
