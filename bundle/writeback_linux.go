package bundle

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing bytes [off, off+n) of f
// to disk without waiting for it, so that a later fsync has little left
// to do: an extracted file then goes to disk while the rest of the bundle
// still arrives. It is advice; the fsync at the end is what guarantees
// durability, so an error is ignored.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
