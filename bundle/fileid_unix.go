//go:build linux || darwin || freebsd || netbsd || openbsd

package bundle

import (
	"io/fs"
	"syscall"
)

func identify(st fs.FileInfo) (fileID, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	m, c := statTimes(sys)
	return fileID{size: st.Size(), mtime: m, ctime: c, dev: uint64(sys.Dev), ino: uint64(sys.Ino)}, true
}
