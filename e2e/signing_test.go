package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/internal/servertest"
)

// TestSigningKeyOutsideDataFolder keeps the signing key sealed away from
// the data folder: the coordinator does not start without it, starts with
// it and its passphrase, signs agents' requests with it, and its backups
// say they do not hold it.
func TestSigningKeyOutsideDataFolder(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	mustRun(t, "tendril-server", "init", "--data", data)
	vault := t.TempDir()
	sealed, pass := filepath.Join(vault, "signing.sealed"), filepath.Join(vault, "pass")
	if err := os.WriteFile(pass, []byte("a long passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, "tendril-server", "signing-key", "seal", "--data", data, "--out", sealed, "--passphrase-file", pass, "--remove")
	if !strings.Contains(out, "--signing-key "+sealed) {
		t.Fatalf("seal printed %q, want how to start with it", out)
	}
	if _, err := os.Stat(filepath.Join(data, "signing.key")); !os.IsNotExist(err) {
		t.Fatalf("signing.key after seal --remove: %v, want it gone", err)
	}
	listen, httpAddr := servertest.FreeAddr(t), servertest.FreeAddr(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "no signing key at " + filepath.Join(data, "signing.key") + ": if it is kept outside the data folder, give its path (--signing-key)"},
		{[]string{"--signing-key", sealed}, "is sealed: give its passphrase (--signing-key-passphrase-file)"},
	} {
		_, stderr, code := runCode(t, "tendril-server", append([]string{"run", "--data", data, "--listen", listen, "--http", httpAddr}, tt.args...)...)
		if code == 0 || !strings.Contains(stderr, tt.want) {
			t.Fatalf("run %q: exit %d %q, want a refusal saying %q", tt.args, code, stderr, tt.want)
		}
	}
	start(t, "tendril-server", "run", "--data", data, "--listen", listen, "--http", httpAddr, "--health-interval", "1s",
		"--signing-key", sealed, "--signing-key-passphrase-file", pass)
	waitFor(t, "coordinator API", func() bool { return listAgents(t, data) != nil })
	join := strings.TrimSpace(mustRun(t, "tendril-server", "token", "create", "--data", data, "--environment", "Production"))
	home := filepath.Join(t.TempDir(), "agent")
	mustRun(t, "tendril-agent", "register", "--home", home, "--join", join, "--name", "web-1")
	start(t, "tendril-agent", "run", "--home", home)
	waitFor(t, "web-1 healthy", func() bool { return healthy(listAgents(t, data), "web-1") })
	mustRun(t, "tendril-server", "calamari", "push", filepath.Join(binDir, "calamari.tar.gz"), "--data", data)
	stdout, stderr, code := runCode(t, "tendril-server", "task", "run", "--agent", "web-1", "--data", data, "--", "run-script", "--inline", "echo signed")
	if code != 0 || !strings.Contains(stdout, "signed") {
		t.Fatalf("task with the sealed key: exit %d\n%s\n%s", code, stdout, stderr)
	}
	out = mustRun(t, "tendril-server", "backup", "--data", data, "--out", filepath.Join(t.TempDir(), "b.tar.gz"), "--passphrase-file", pass)
	if !strings.Contains(out, "this backup does not hold it either") {
		t.Fatalf("backup printed %q, want a note that the signing key is not in it", out)
	}
}
