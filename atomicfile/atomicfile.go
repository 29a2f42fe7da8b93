// Package atomicfile writes a file so that readers see its old content or
// its new, never a mix, and the new content is durable once Write
// returns. It is its own package, on the standard library alone, so that
// calamari, which starts for every task, need not link the certificate
// code to write one file.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write writes data to a temporary file in the same folder,
// syncs it, and renames it over path, so readers see the old or the new
// content and never a mix.
func Write(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, true)
}

// Replace is Write without syncing the folder: once it returns, readers
// see the new content, but a system crash may bring back the old, whole
// (the new content is synced before it takes the name, so the file is
// never found torn or empty). For a rewrite whose loss is harmless, one
// sync less than Write.
func Replace(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, false)
}

// write is Write, and with durable false Replace.
func write(path string, data []byte, perm os.FileMode, durable bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if !durable {
		return nil
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // make the rename durable; best effort on systems without dir fsync
		d.Close()
	}
	return nil
}
