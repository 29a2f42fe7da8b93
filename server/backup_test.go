package server

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"

	"github.com/tendrildeploy/tendril/internal/faultproxy"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
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
	if task.State != store.TaskSucceeded {
		t.Fatalf("task: %s", task.State)
	}
	file, err := ts.storeFile(strings.NewReader("a package"))
	if err != nil {
		t.Fatal(err)
	}
	ts.pushPackage(t, "1.2.4", "linux", "amd64", smallELF("b"))
	before := ts.Info()

	if _, running := RunningCoordinator(ts.dir); !running {
		t.Fatal("RunningCoordinator: want the test's own coordinator found running")
	}
	out := filepath.Join(t.TempDir(), "backup.tar.gz")
	res, err := Backup(ctx, BackupOptions{DataDir: ts.dir, Out: out, Passphrase: testPassphrase, Snapshot: ts.TakeSnapshot})
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.SchemaVersion != store.SchemaVersion || res.Manifest.CoordinatorVersion != ts.cfg.Version {
		t.Errorf("manifest versions: got %+v", res.Manifest)
	}
	if left, _ := filepath.Glob(filepath.Join(ts.dir, snapshotPrefix+"*")); len(left) != 0 {
		t.Errorf("snapshots left in the data folder: %v", left)
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want 0600", st, err)
	}
	// No secret appears in the clear anywhere in the archive.
	plain := archiveEntries(t, out)
	for _, name := range []string{masterFile, keyFile, signingFile, api.AdminKeyFile} {
		secret, err := os.ReadFile(filepath.Join(ts.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range plain {
			if bytes.Contains(e.data, bytes.TrimSpace(secret)) {
				t.Errorf("%s appears in the clear in entry %s", name, e.name)
			}
		}
	}
	// A second backup to the same file is refused rather than clobbering.
	if _, err := Backup(ctx, BackupOptions{DataDir: ts.dir, Out: out, Passphrase: testPassphrase, Snapshot: ts.TakeSnapshot}); !errors.Is(err, kind.ErrConflict) {
		t.Errorf("backup over an existing file: got %v, want a refusal", err)
	}

	target := filepath.Join(t.TempDir(), "restored")
	rr, err := Restore(ctx, RestoreOptions{In: out, DataDir: target, Passphrase: testPassphrase})
	if err != nil {
		t.Fatal(err)
	}
	if rr.Thumbprint != before.Thumbprint {
		t.Errorf("restored thumbprint %s, want %s", rr.Thumbprint, before.Thumbprint)
	}
	for _, name := range []string{masterFile, keyFile, signingFile, api.AdminKeyFile, certFile} {
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
	if err != nil || got.State != store.TaskSucceeded {
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
	if _, err := os.Stat(ts2.bundlePath("1.0.0")); err != nil {
		t.Errorf("restored bundle file: %v", err)
	}
	pkgs, err := ts2.AgentPackages(ctx)
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
	if task, _ := ts2.runTaskOn(t, "web-1", "run-script", "--inline", "true"); task.State != store.TaskSucceeded {
		t.Errorf("task after restore: %s", task.State)
	}
}

func TestBackupSnapshotAPI(t *testing.T) {
	ts := startServer(t, nil)
	resp, body := ts.api(t, "POST", "/api/backup/snapshot", "", nil)
	var sn api.Snapshot
	if err := json.Unmarshal(body, &sn); err != nil || resp.StatusCode != 201 || !snapshotNamePattern.MatchString(sn.Name) || sn.SchemaVersion != store.SchemaVersion {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	if st, err := os.Stat(filepath.Join(ts.dir, sn.Name)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file: %v, %v", st, err)
	}
}

// entry is one file of an archive as the tests read and re-pack it.
type entry struct {
	name string
	data []byte
}

func archiveEntries(t *testing.T, path string) []entry {
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
	tr := tar.NewReader(gz)
	var out []entry
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{h.Name, b})
	}
}

func packEntries(t *testing.T, path string, es []entry) {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range es {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Size: int64(len(e.data)), Mode: 0o600}); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	tw.Close()
	gz.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// repack rewrites a backup with its manifest changed by edit and signed
// again under the passphrase, as a newer coordinator would have written it.
func repack(t *testing.T, src, dst string, edit func(*BackupManifest), change func(name string, b []byte) []byte) {
	t.Helper()
	es := archiveEntries(t, src)
	var m BackupManifest
	for i, e := range es {
		if change != nil {
			es[i].data = change(e.name, e.data)
		}
		if e.name == manifestName {
			if err := json.Unmarshal(e.data, &m); err != nil {
				t.Fatal(err)
			}
		}
	}
	if edit != nil {
		edit(&m)
	}
	mb, _ := json.Marshal(m)
	keys, err := deriveBackupKeys(testPassphrase, m.KDF)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		switch e.name {
		case manifestName:
			es[i].data = mb
		case manifestMACName:
			es[i].data = []byte(hex.EncodeToString(keys.mac(mb)))
		}
	}
	packEntries(t, dst, es)
}

func TestRestoreRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	// A stopped coordinator: Backup opens its database itself.
	src := filepath.Join(t.TempDir(), "src")
	if _, err := Init(ctx, src); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.tar.gz")
	if _, err := Backup(ctx, BackupOptions{DataDir: src, Out: good, Passphrase: testPassphrase, Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := bytes.Clone(raw)
	flipped[len(flipped)/2] ^= 0x40
	newer := filepath.Join(dir, "newer.tar.gz")
	repack(t, good, newer, func(m *BackupManifest) { m.SchemaVersion = store.SchemaVersion + 1 }, nil)
	newerFormat := filepath.Join(dir, "newer-format.tar.gz")
	repack(t, good, newerFormat, func(m *BackupManifest) { m.FormatVersion = BackupFormat + 1 }, nil)
	badEntry := filepath.Join(dir, "bad-entry.tar.gz")
	repack(t, good, badEntry, nil, func(name string, b []byte) []byte {
		if name == dbFile {
			b = bytes.Clone(b)
			b[100] ^= 1
		}
		return b
	})
	extra := filepath.Join(dir, "extra.tar.gz")
	packEntries(t, extra, append(archiveEntries(t, good), entry{"files/unlisted", []byte("x")}))
	escape := filepath.Join(dir, "escape.tar.gz")
	packEntries(t, escape, append([]entry{{"../evil", []byte("x")}}, archiveEntries(t, good)...))

	running := startServer(t, nil)
	nonEmpty := t.TempDir()
	os.WriteFile(filepath.Join(nonEmpty, "keep.txt"), []byte("mine"), 0o600)

	tests := []struct {
		name   string
		in     string
		target string
		pass   string
		kind   error
		want   string
	}{
		{"corrupt byte", write("flipped.tar.gz", flipped), "", "", ErrBackupDamaged, "backup is damaged"},
		{"entry not matching its hash", badEntry, "", "", ErrBackupDamaged, "does not match its SHA-256"},
		{"truncated", write("half.tar.gz", raw[:len(raw)/2]), "", "", ErrBackupDamaged, "truncated"},
		{"cut just before the end", write("cut.tar.gz", raw[:len(raw)-4]), "", "", ErrBackupDamaged, "truncated"},
		{"empty file", write("empty.tar.gz", nil), "", "", ErrBackupDamaged, "not a gzip file"},
		{"entry not in the manifest", extra, "", "", ErrBackupDamaged, "not in the manifest"},
		{"entry outside the folder", escape, "", "", ErrBackupDamaged, `unexpected entry "../evil"`},
		{"wrong passphrase", good, "", "Tr0ub4dor&3", ErrWrongPassphrase, "wrong passphrase or damaged backup"},
		{"newer schema", newer, "", "", store.ErrSchemaTooNew, fmt.Sprintf("backup is from a newer coordinator (schema %d > %d)", store.SchemaVersion+1, store.SchemaVersion)},
		{"newer format", newerFormat, "", "", kind.ErrConflict, "backup format 2 is newer"},
		{"running coordinator", good, running.dir, "", kind.ErrConflict, "stop the coordinator first"},
		{"folder not empty", good, nonEmpty, "", kind.ErrConflict, "not empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			target := tt.target
			if target == "" {
				target = filepath.Join(parent, "data")
			}
			pass := testPassphrase
			if tt.pass != "" {
				pass = []byte(tt.pass)
			}
			before := listTree(t, filepath.Dir(target))
			_, err := Restore(ctx, RestoreOptions{In: tt.in, DataDir: target, Passphrase: pass})
			if !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %v saying %q", err, tt.kind, tt.want)
			}
			if after := listTree(t, filepath.Dir(target)); after != before {
				t.Fatalf("a failed restore changed the folder:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}

	// --force replaces a folder that is not empty.
	rr, err := Restore(ctx, RestoreOptions{In: good, DataDir: nonEmpty, Passphrase: testPassphrase, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(nonEmpty, "keep.txt")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("--force kept the old content: %v", err)
	}
	if want, _ := ReadThumbprint(src); rr.Thumbprint != want {
		t.Errorf("--force restore: thumbprint %s, want %s", rr.Thumbprint, want)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(nonEmpty), "."+filepath.Base(nonEmpty)+"*")); len(left) != 0 {
		t.Errorf("left beside the target: %v", left)
	}
}

// listTree describes every file and folder under dir, with sizes, so a
// test can tell that nothing changed.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Name() == api.RunFile || strings.HasPrefix(d.Name(), dbFile) {
			return nil // a running coordinator's own files change on their own
		}
		info, _ := d.Info()
		if info != nil {
			b.WriteString(p)
			if !d.IsDir() {
				b.WriteString(" " + info.Mode().String())
			}
			b.WriteString("\n")
		}
		return nil
	})
	return b.String()
}
