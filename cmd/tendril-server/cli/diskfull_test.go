//go:build linux

package cli

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/tendrildeploy/tendril/internal/servertest"
)

// fillUp fills the file system holding dir, up to its last leave bytes,
// with a file in dir, and returns a function that removes it.
func fillUp(t *testing.T, dir string, leave int64) (remove func()) {
	t.Helper()
	f, err := os.CreateTemp(dir, "ballast-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for fill := int64(st.Bavail)*int64(st.Bsize) - leave; fill > 0; {
		n, err := f.Write(chunk[:min(int64(len(chunk)), fill)])
		fill -= int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return func() {
		if err := os.Remove(f.Name()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCommandsDiskFull runs "calamari push" and "backup" against a
// coordinator whose data folder, on a small tmpfs, is full: each prints
// the coordinator's answer (the room free and, where known, needed) on
// one line and exits 1; once space is freed both work, with no restart.
func TestCommandsDiskFull(t *testing.T) {
	mount := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", mount).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs for the data folder (needs root): %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mount).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mount, err, out)
		}
	})
	dir := filepath.Join(mount, "data")
	startCoordinatorCmdIn(t, dir) // stopped before the unmount: cleanups run last first
	run := func(args ...string) (int, string, string) {
		t.Helper()
		return cli(t, context.Background(), nil, append([]string{args[0], "--data", dir}, args[1:]...)...)
	}
	big := servertest.CalamariBundle(t, "2.0.0", 12<<20)
	pass := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pass, []byte("a passphrase for the test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	answer := func(needed string) *regexp.Regexp {
		return regexp.MustCompile(`^tendril-server: .*no space left in the data folder \([0-9.]+ MiB free` + needed +
			`\); free space in the data folder, then send it again \(HTTP 507\)\n$`)
	}

	free := fillUp(t, dir, 6<<20)
	if code, _, stderr := run("calamari", "push", big); code != 1 || !answer(`, 12 MiB needed`).MatchString(stderr) {
		t.Fatalf("push to a full folder: got %d %q, want 1 and the coordinator's 507", code, stderr)
	}
	full := fillUp(t, dir, 0)
	out := filepath.Join(t.TempDir(), "backup.tar.gz")
	if code, _, stderr := run("backup", "--out", out, "--passphrase-file", pass); code != 1 || !answer(`, [0-9.]+ MiB needed`).MatchString(stderr) {
		t.Fatalf("backup of a full folder: got %d %q, want 1 and the coordinator's 507", code, stderr)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backup of a full folder left %s: %v", out, err)
	}

	full()
	free()
	if code, stdout, stderr := run("calamari", "push", big); code != 0 || !strings.HasPrefix(stdout, "stored Calamari 2.0.0") {
		t.Fatalf("push once space is freed: got %d %q %q", code, stdout, stderr)
	}
	if code, stdout, stderr := run("backup", "--out", out, "--passphrase-file", pass); code != 0 || !strings.HasPrefix(stdout, "Backed up ") {
		t.Fatalf("backup once space is freed: got %d %q %q", code, stdout, stderr)
	}
}
