//go:build linux

package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/internal/tmpfstest"

	"github.com/tendrildeploy/tendril/internal/servertest"
)

// TestCommandsDiskFull runs "calamari push" and "backup" against a
// coordinator whose data folder, on a small tmpfs, is full: each prints
// the coordinator's answer (the room free and, where known, needed) on
// one line and exits 1; once space is freed both work, with no restart.
func TestCommandsDiskFull(t *testing.T) {
	mount := tmpfstest.Mount(t, 32<<20)
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

	free := tmpfstest.FillLeaving(t, dir, 6<<20)
	if code, _, stderr := run("calamari", "push", big); code != 1 || !answer(`, 12 MiB needed`).MatchString(stderr) {
		t.Fatalf("push to a full folder: got %d %q, want 1 and the coordinator's 507", code, stderr)
	}
	full := tmpfstest.Fill(t, dir)
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
