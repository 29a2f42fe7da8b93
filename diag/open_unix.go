//go:build !windows

package diag

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// OpenInside opens the regular file rel inside the folder dir for
// reading without following a symbolic link anywhere below dir: each
// folder on the way is opened relative to the one before with
// O_NOFOLLOW, and so is the file. Diagnostics runs as root on a folder
// the agent's or the coordinator's user (and what it deploys) can write:
// a link planted there, to /etc/shadow or to agent.json beside it, must
// not be read into an archive, and checking before opening would leave
// the time to plant it. A FIFO or a device is refused without blocking.
// dir itself is followed: it is what the operator named.
func OpenInside(dir, rel string) (*os.File, fs.FileInfo, error) {
	path := filepath.Join(dir, rel)
	parts, err := splitInside(rel)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	for i, p := range parts {
		last := i == len(parts)-1
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if last {
			flags |= unix.O_NONBLOCK // a FIFO would block the open
		} else {
			flags |= unix.O_DIRECTORY
		}
		next, err := openat(fd, p, flags)
		if err != nil {
			err = whyNotOpened(fd, p, err)
			unix.Close(fd)
			return nil, nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		unix.Close(fd)
		fd = next
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a regular file (%s): not read", path, st.Mode().Type())
	}
	return f, st, nil
}

func openat(dirfd int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// errSymlink says a path held a symbolic link, which diagnostics never
// follows.
var errSymlink = errors.New("a symbolic link, which diagnostics does not follow")

// whyNotOpened turns the errors O_NOFOLLOW gives for a link (ELOOP on
// Linux and macOS, EMLINK on FreeBSD, ENOTDIR for a link to a folder
// opened with O_DIRECTORY) into errSymlink when name is one.
func whyNotOpened(dirfd int, name string, err error) error {
	if err != unix.ELOOP && err != unix.EMLINK && err != unix.ENOTDIR {
		return err
	}
	var st unix.Stat_t
	if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return fmt.Errorf("%s is %w", name, errSymlink)
	}
	return err
}

// splitInside splits rel into its elements, refusing what would leave
// the folder.
func splitInside(rel string) ([]string, error) {
	if rel == "" || !filepath.IsLocal(rel) {
		return nil, errors.New("not a path inside the folder")
	}
	var parts []string
	for p := range strings.SplitSeq(filepath.ToSlash(filepath.Clean(rel)), "/") {
		if p != "" && p != "." {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return nil, errors.New("not a path inside the folder")
	}
	return parts, nil
}
