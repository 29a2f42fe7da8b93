//go:build linux

// Package tmpfstest gives a test a small file system of its own, a tmpfs
// mount, and fills it up: the full disks of the fault tests. Imported by
// tests only.
package tmpfstest

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size bytes on a new folder and returns it; it is
// unmounted when the test ends. A test that is not run as root is skipped:
// only root may mount.
func Mount(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs as a full disk; run the tests as root (CI does)")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			// Something still holds a file there (a process the test
			// leaves behind): detach it, so the folder can go.
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount the tmpfs on %s: %v", dir, err)
			}
		}
	})
	return dir
}

// Fill writes a file into dir until the file system holding it has no
// room left, and returns a function that removes it again (idempotent,
// and called when the test ends).
func Fill(t testing.TB, dir string) (free func()) {
	t.Helper()
	return FillLeaving(t, dir, 0)
}

// FillLeaving is Fill that leaves the last leave bytes free. Each call
// writes a file of its own, so a test can fill in steps and free them
// apart.
func FillLeaving(t testing.TB, dir string, leave int64) (free func()) {
	t.Helper()
	f, err := os.CreateTemp(dir, ".filler-*")
	if err != nil {
		t.Fatalf("fill %s: %v", dir, err)
	}
	defer f.Close()
	if leave > 0 {
		buf := make([]byte, 1<<20)
		for left := Free(t, dir) - leave; left > 0; {
			n, err := f.Write(buf[:min(int64(len(buf)), left)])
			left -= int64(n)
			if err != nil && !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			if err != nil {
				break
			}
		}
	} else {
		// Big writes first, then small ones into what is left.
		for _, n := range []int{1 << 20, 4 << 10, 1} {
			buf := make([]byte, n)
			for {
				if _, err = f.Write(buf); err != nil {
					break
				}
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: got %v, want no space left", dir, err)
			}
		}
	}
	removed := false
	free = func() {
		if removed {
			return
		}
		removed = true
		if err := os.Remove(f.Name()); err != nil {
			t.Errorf("free %s: %v", dir, err)
		}
	}
	t.Cleanup(free)
	return free
}

// Free returns the bytes free on the file system holding path.
func Free(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatalf("free space of %s: %v", path, err)
	}
	return int64(st.Bavail) * st.Bsize
}
