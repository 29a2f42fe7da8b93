package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/faultproxy"
	"github.com/tendrildeploy/tendril/server/backup"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

var testPassphrase = []byte("correct horse battery staple")

func TestBackupWhileRunningAndRestore(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	proxy, err := faultproxy.New(ts.AgentAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	startAgent(t, registerAgent(t, ts, proxy.Addr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	ts.upload(t, packBundle(t, "1.0.0", 64<<10))
	task, _ := ts.runTaskOn(t, "web-1", "run-script", "--inline", "echo from-before-the-backup")
	if task.State != api.TaskSucceeded {
		t.Fatalf("task: %s", task.State)
	}
	file, err := ts.storeFile(strings.NewReader("a package"))
	if err != nil {
		t.Fatal(err)
	}
	ts.pushPackage(t, "1.2.4", "linux", "amd64")
	before := ts.Info()

	if _, running := backup.RunningCoordinator(ts.dir); !running {
		t.Fatal("RunningCoordinator: want the test's own coordinator found running")
	}
	out := filepath.Join(t.TempDir(), "backup.tar.gz")
	res, err := backup.Backup(ctx, backup.Options{DataDir: ts.dir, Out: out, Passphrase: testPassphrase, Snapshot: ts.TakeSnapshot})
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.SchemaVersion != sqlstore.SchemaVersion || res.Manifest.CoordinatorVersion != ts.cfg.Version {
		t.Errorf("manifest versions: got %+v", res.Manifest)
	}
	if left, _ := filepath.Glob(filepath.Join(ts.dir, backup.SnapshotPrefix+"*")); len(left) != 0 {
		t.Errorf("snapshots left in the data folder: %v", left)
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want 0600", st, err)
	}
	// No secret appears in the clear anywhere in the archive.
	plain := decompressed(t, out)
	for _, name := range []string{datadir.MasterFile, datadir.KeyFile, datadir.SigningFile, api.AdminKeyFile} {
		secret, err := os.ReadFile(filepath.Join(ts.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(plain, bytes.TrimSpace(secret)) {
			t.Errorf("%s appears in the clear in the archive", name)
		}
	}
	// A second backup to the same file is refused rather than clobbering.
	if _, err := backup.Backup(ctx, backup.Options{DataDir: ts.dir, Out: out, Passphrase: testPassphrase, Snapshot: ts.TakeSnapshot}); !errors.Is(err, kind.ErrConflict) {
		t.Errorf("backup over an existing file: got %v, want a refusal", err)
	}

	target := filepath.Join(t.TempDir(), "restored")
	rr, err := backup.Restore(ctx, backup.RestoreOptions{In: out, DataDir: target, Passphrase: testPassphrase})
	if err != nil {
		t.Fatal(err)
	}
	if rr.Thumbprint != before.Thumbprint {
		t.Errorf("restored thumbprint %s, want %s", rr.Thumbprint, before.Thumbprint)
	}
	for _, name := range []string{datadir.MasterFile, datadir.KeyFile, datadir.SigningFile, api.AdminKeyFile, datadir.CertFile} {
		a, _ := os.ReadFile(filepath.Join(ts.dir, name))
		b, err := os.ReadFile(filepath.Join(target, name))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: restored copy differs (%v)", name, err)
		}
		if st, _ := os.Stat(filepath.Join(target, name)); st == nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: want mode 0600, got %v", name, st)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(target), ".*")); len(left) != 0 {
		t.Errorf("temporary folders left beside the target: %v", left)
	}

	// The original goes away; the restored coordinator takes its place
	// and the agent, which knows only the old thumbprint, reconnects.
	ts.stop()
	ts2 := runServer(t, target, nil)
	proxy.SetTarget(ts2.AgentAddr())
	ts2.waitConnected(t, "web-1")
	after := ts2.Info()
	if after.Thumbprint != before.Thumbprint || after.SigningKey != before.SigningKey {
		t.Errorf("identity changed: thumbprint %s -> %s, signing key %s -> %s", before.Thumbprint, after.Thumbprint, before.SigningKey, after.SigningKey)
	}
	got, err := ts2.Task(ctx, task.ID)
	if err != nil || got.State != api.TaskSucceeded {
		t.Fatalf("restored task: %+v, %v", got, err)
	}
	lines, _ := ts2.store.TaskLogs(ctx, task.ID, 1, 0)
	if !strings.Contains(logText(lines), "stdout: from-before-the-backup") {
		t.Errorf("restored task log lacks its output:\n%s", logText(lines))
	}
	bundles, err := ts2.CalamariBundles(ctx)
	if err != nil || len(bundles) != 1 || bundles[0].Version != "1.0.0" {
		t.Fatalf("restored Calamari: %+v, %v", bundles, err)
	}
	if _, err := os.Stat(ts2.bundles.Path("1.0.0")); err != nil {
		t.Errorf("restored bundle file: %v", err)
	}
	pkgs, err := ts2.rollouts.AgentPackages(ctx)
	if err != nil || len(pkgs) != 1 {
		t.Fatalf("restored agent packages: %+v, %v", pkgs, err)
	}
	if b, err := os.ReadFile(filepath.Join(ts2.filesDir(), file.SHA256)); err != nil || string(b) != "a package" {
		t.Errorf("restored uploaded file: %q, %v", b, err)
	}
	// The old admin key still opens the API, and tasks run on the agent.
	if resp, body := ts2.api(t, "GET", "/api/agents", "", nil); resp.StatusCode != 200 {
		t.Errorf("API with the restored admin key: %d %s", resp.StatusCode, body)
	}
	if task, _ := ts2.runTaskOn(t, "web-1", "run-script", "--inline", "true"); task.State != api.TaskSucceeded {
		t.Errorf("task after restore: %s", task.State)
	}
}

func TestBackupSnapshotAPI(t *testing.T) {
	ts := startServer(t, nil)
	resp, body := ts.api(t, "POST", "/api/backup/snapshot", "", nil)
	var sn api.Snapshot
	if err := json.Unmarshal(body, &sn); err != nil || resp.StatusCode != 201 || !backup.ValidSnapshotName(sn.Name) || sn.SchemaVersion != sqlstore.SchemaVersion {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	if st, err := os.Stat(filepath.Join(ts.dir, sn.Name)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file: %v, %v", st, err)
	}
}

// TestRestoreRefusesRunningCoordinator checks the refusal against a real
// running coordinator; server/backup's tests cover every other refusal.
func TestRestoreRefusesRunningCoordinator(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	if _, err := datadir.Init(ctx, src); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(t.TempDir(), "good.tar.gz")
	if _, err := backup.Backup(ctx, backup.Options{DataDir: src, Out: good, Passphrase: testPassphrase, Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	running := startServer(t, nil)
	eventually(t, "the run file names the coordinator", func() bool {
		_, ok := backup.RunningCoordinator(running.dir)
		return ok
	})
	_, err := backup.Restore(ctx, backup.RestoreOptions{In: good, DataDir: running.dir, Passphrase: testPassphrase})
	if !errors.Is(err, kind.ErrConflict) || !strings.Contains(err.Error(), "stop the coordinator first") {
		t.Fatalf("got %v, want %v saying %q", err, kind.ErrConflict, "stop the coordinator first")
	}
}

// decompressed is the whole tar stream of a backup: every entry's bytes
// appear in it as they were packed.
func decompressed(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
