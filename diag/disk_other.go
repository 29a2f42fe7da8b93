//go:build !(linux || darwin || freebsd || dragonfly || windows)

package diag

import "errors"

// DiskFree is unknown on systems without a supported free-space call.
func DiskFree(string) (int64, error) {
	return -1, errors.New("free disk space is not known on this system")
}
