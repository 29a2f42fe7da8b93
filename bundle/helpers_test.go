package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/tendrildeploy/tendril/certs"
)

func TestMain(m *testing.M) {
	// The crash test re-runs this binary as the process it kills.
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(installHelper(dir))
	}
	goleak.VerifyTestMain(m)
}

var (
	testKey  = sync.OnceValue(func() *certs.SigningKey { return mustKey() })
	otherKey = sync.OnceValue(func() *certs.SigningKey { return mustKey() })
)

func mustKey() *certs.SigningKey {
	k, err := certs.NewSigningKey()
	if err != nil {
		panic(err)
	}
	return k
}

// entry is one tar entry of a hand-built archive.
type entry struct {
	name string
	typ  byte // tar.TypeReg when zero
	body []byte
	mode int64 // 0644 when zero
	link string
}

func reg(name string, body []byte) entry { return entry{name: name, body: body} }

// tarBytes writes entries as an uncompressed tar stream, without closing it
// when open is set (so a caller can append its own bytes).
func tarBytes(t testing.TB, entries []entry, open bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, ModTime: packTime}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			h = &tar.Header{Typeflag: h.Typeflag, Name: e.name, PAXRecords: map[string]string{"comment": "hello"}}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("write header %s: %v", e.name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatalf("write %s: %v", e.name, err)
			}
		}
	}
	if open {
		if err := tw.Flush(); err != nil {
			t.Fatal(err)
		}
	} else if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func tarGz(t testing.TB, entries []entry) []byte { return gzipBytes(tarBytes(t, entries, false)) }

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// spec describes a bundle archive to build, valid unless a test bends it.
type spec struct {
	m            Manifest
	files        []entry // after manifest.json
	manifestJSON []byte  // replaces json.Marshal(m) when set
	noManifest   bool
	manifestLast bool
}

// goodSpec is a small valid bundle with nested folders, two modes and an
// empty file.
func goodSpec(version string) spec {
	bodies := []struct {
		path string
		mode uint32
		body []byte
	}{
		{"linux-amd64/calamari", 0o755, []byte("#!/bin/sh\necho calamari " + version + "\n")},
		{"README.txt", 0o644, []byte("Calamari " + version + "\n")},
		{"lib/data/blob.bin", 0o644, bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 3000)},
		{"lib/empty", 0o644, nil},
	}
	s := spec{m: Manifest{Name: "calamari", Version: version, Entrypoints: map[string]string{"linux/amd64": "linux-amd64/calamari"}}}
	for _, b := range bodies {
		s.m.Files = append(s.m.Files, File{Path: b.path, Size: int64(len(b.body)), Mode: b.mode, SHA256: sum(b.body)})
		s.files = append(s.files, entry{name: b.path, body: b.body, mode: int64(b.mode)})
	}
	return s
}

// manifestBytes is what the archive carries as manifest.json. json.Marshal
// rather than Encode, so tests can build manifests Encode would refuse.
func (s spec) manifestBytes(t testing.TB) []byte {
	if s.manifestJSON != nil {
		return s.manifestJSON
	}
	b, err := json.Marshal(s.m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (s spec) entries(t testing.TB) []entry {
	me := reg(ManifestName, s.manifestBytes(t))
	switch {
	case s.noManifest:
		return s.files
	case s.manifestLast:
		return append(append([]entry(nil), s.files...), me)
	default:
		return append([]entry{me}, s.files...)
	}
}

func (s spec) archive(t testing.TB) []byte { return tarGz(t, s.entries(t)) }

// sig signs the manifest the archive carries with the test key.
func (s spec) sig(t testing.TB) []byte { return Sign(testKey(), s.manifestBytes(t)) }

// addFile adds a file to both the manifest and the archive.
func (s *spec) addFile(path string, mode uint32, body []byte) {
	s.m.Files = append(s.m.Files, File{Path: path, Size: int64(len(body)), Mode: mode, SHA256: sum(body)})
	s.files = append(s.files, entry{name: path, body: body, mode: int64(mode)})
}

func (s *spec) fileIndex(t testing.TB, path string) int {
	for i, f := range s.m.Files {
		if f.Path == path {
			return i
		}
	}
	t.Fatalf("no file %s in spec", path)
	return -1
}

// assertNothingInstalled fails unless calamariDir is absent or empty: no
// version folder, no temporary folder left behind.
func assertNothingInstalled(t testing.TB, calamariDir string) {
	t.Helper()
	entries, err := os.ReadDir(calamariDir)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Errorf("%s holds %s, want nothing", calamariDir, strings.Join(names, ", "))
	}
	for _, st := range Scan(calamariDir, testKey().Public()) {
		if st.Err == nil {
			t.Errorf("Scan: version %s verifies, want nothing installed", st.Version)
		}
	}
}

func tryInstall(t testing.TB, archive, sig []byte, dir string) (Manifest, error) {
	t.Helper()
	return Install(context.Background(), bytes.NewReader(archive), dir, testKey().Public(), sig, Limits{})
}

func mustInstall(t testing.TB, s spec, dir string) Manifest {
	t.Helper()
	m, err := tryInstall(t, s.archive(t), s.sig(t), dir)
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	return m
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// failingReader returns its data up to n bytes, then errInjected, like a
// connection cut in the middle of a push.
type failingReader struct {
	data []byte
	n    int
}

var errInjected = errors.New("injected read failure")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errInjected
	}
	k := copy(p, f.data[:min(len(f.data), f.n)])
	f.data, f.n = f.data[k:], f.n-k
	return k, nil
}
