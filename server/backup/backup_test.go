package backup

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
	"slices"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

var testPassphrase = []byte("correct horse battery staple")

// initDataDir makes a stopped coordinator's data folder, as init does.
func initDataDir(t *testing.T, dir string) {
	t.Helper()
	if _, err := datadir.Init(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
}

// runningDataDir is a data folder whose run file names a live process,
// which is how restore knows a coordinator runs there.
func runningDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	initDataDir(t, dir)
	b, _ := json.Marshal(api.RunInfo{PID: os.Getpid(), Version: "1.0.0", HTTP: "127.0.0.1:1", AgentAddr: "127.0.0.1:2"})
	if err := os.WriteFile(filepath.Join(dir, api.RunFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
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
func repack(t *testing.T, src, dst string, edit func(*Manifest), change func(name string, b []byte) []byte) {
	t.Helper()
	es := archiveEntries(t, src)
	var m Manifest
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
	initDataDir(t, src)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.tar.gz")
	if _, err := Backup(ctx, Options{DataDir: src, Out: good, Passphrase: testPassphrase, Version: "1.0.0"}); err != nil {
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
	// Sixteen bytes, not one bit: a single flipped bit can land in bits
	// deflate ignores (the padding before a stored block), which is no
	// damage at all.
	flipped := bytes.Clone(raw)
	for i := range 16 {
		flipped[len(flipped)/2+i] ^= 0xff
	}
	newer := filepath.Join(dir, "newer.tar.gz")
	repack(t, good, newer, func(m *Manifest) { m.SchemaVersion = sqlstore.SchemaVersion + 1 }, nil)
	newerFormat := filepath.Join(dir, "newer-format.tar.gz")
	repack(t, good, newerFormat, func(m *Manifest) { m.FormatVersion = Format + 1 }, nil)
	badEntry := filepath.Join(dir, "bad-entry.tar.gz")
	repack(t, good, badEntry, nil, func(name string, b []byte) []byte {
		if name == datadir.DBFile {
			b = bytes.Clone(b)
			b[100] ^= 1
		}
		return b
	})
	extra := filepath.Join(dir, "extra.tar.gz")
	packEntries(t, extra, append(archiveEntries(t, good), entry{"files/unlisted", []byte("x")}))
	escape := filepath.Join(dir, "escape.tar.gz")
	packEntries(t, escape, append([]entry{{"../evil", []byte("x")}}, archiveEntries(t, good)...))

	running := runningDataDir(t)
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
		{"corrupt byte", write("flipped.tar.gz", flipped), "", "", ErrDamaged, "backup is damaged"},
		{"entry not matching its hash", badEntry, "", "", ErrDamaged, "does not match its SHA-256"},
		{"truncated", write("half.tar.gz", raw[:len(raw)/2]), "", "", ErrDamaged, "truncated"},
		{"cut just before the end", write("cut.tar.gz", raw[:len(raw)-4]), "", "", ErrDamaged, "truncated"},
		{"empty file", write("empty.tar.gz", nil), "", "", ErrDamaged, "not a gzip file"},
		{"entry not in the manifest", extra, "", "", ErrDamaged, "not in the manifest"},
		{"entry outside the folder", escape, "", "", ErrDamaged, `unexpected entry "../evil"`},
		{"wrong passphrase", good, "", "Tr0ub4dor&3", ErrWrongPassphrase, "wrong passphrase or damaged backup"},
		{"newer schema", newer, "", "", store.ErrSchemaTooNew, fmt.Sprintf("backup is from a newer coordinator (schema %d > %d)", sqlstore.SchemaVersion+1, sqlstore.SchemaVersion)},
		{"newer format", newerFormat, "", "", kind.ErrConflict, "backup format 2 is newer"},
		{"running coordinator", good, running, "", kind.ErrConflict, "stop the coordinator first"},
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
	if want, _ := datadir.ReadThumbprint(src); rr.Thumbprint != want {
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
		if d.Name() == api.RunFile || strings.HasPrefix(d.Name(), datadir.DBFile) {
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

// TestRemoveLeftSnapshots: the snapshots an earlier run left go, however
// young; the coordinator's own files stay.
func TestRemoveLeftSnapshots(t *testing.T) {
	dir := t.TempDir()
	left := []string{SnapshotPrefix + "0b1c2d3e-0000-4000-8000-000000000001.db", SnapshotPrefix + "0b1c2d3e-0000-4000-8000-000000000002.db"}
	kept := []string{"tendril.db", "tendril.db-wal", "server.crt"}
	for _, n := range append(slices.Clone(left), kept...) {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if n := RemoveLeftSnapshots(dir); n != len(left) {
		t.Fatalf("removed %d, want %d", n, len(left))
	}
	for _, n := range left {
		if _, err := os.Stat(filepath.Join(dir, n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: got %v, want it removed", n, err)
		}
	}
	for _, n := range kept {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s: got %v, want it kept", n, err)
		}
	}
}
