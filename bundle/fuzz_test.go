package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzLimits keep each fuzz run small and fast.
var fuzzLimits = Limits{MaxFiles: 64, MaxTotalSize: 1 << 20, MaxManifestSize: 64 << 10}

// FuzzInstall feeds arbitrary bytes to Install as an archive. With gzipIt
// set the bytes are gzipped first, so the fuzzer explores tar and
// extraction rather than fighting gzip's checksum. The harness signs
// whatever manifest.json the archive starts with, so the extractor is
// reached, not just the signature check. Install must never panic, never
// write outside its folder, never leave a temporary folder, and never leave
// a version folder that does not verify.
func FuzzInstall(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s.data, s.gzipIt)
	}
	// One folder per fuzzing process, emptied after each input: cheaper than
	// a new t.TempDir per input, and inputs run one at a time per process.
	base := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, gzipIt bool) {
		archive := data
		if gzipIt {
			archive = storeGzip(data)
		}
		dir := filepath.Join(base, "Calamari")
		defer os.RemoveAll(dir)
		m, err := Install(context.Background(), bytes.NewReader(archive), dir, testKey().Public(), signFirstManifest(archive), fuzzLimits)
		checkInstalled(t, base, dir, m, err)
	})
}

// storeGzip wraps b in gzip without compressing it: a valid stream at a
// fraction of the cost of setting up a compressor for every input.
func storeGzip(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// signFirstManifest signs the first entry of archive if it is manifest.json,
// as the coordinator would have; otherwise it returns no signature.
func signFirstManifest(archive []byte) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return nil
	}
	tr := tar.NewReader(io.LimitReader(zr, 4<<20))
	hdr, err := tr.Next()
	if err != nil || hdr.Name != ManifestName || hdr.Size > fuzzLimits.MaxManifestSize {
		return nil
	}
	raw, err := io.ReadAll(tr)
	if err != nil {
		return nil
	}
	return Sign(testKey(), raw)
}

// checkInstalled asserts what must hold after any Install into dir, a
// folder inside base.
func checkInstalled(t *testing.T, base, dir string, m Manifest, err error) {
	t.Helper()
	if names := dirNames(t, base); len(names) > 1 || (len(names) == 1 && names[0] != "Calamari") {
		t.Fatalf("Install wrote %v next to its folder", names)
	}
	names := dirNames(t, dir)
	if err != nil {
		if len(names) != 0 {
			t.Fatalf("Install failed (%v) but left %v", err, names)
		}
		for _, sentinel := range []error{ErrInvalidManifest, ErrBadSignature, ErrUnsafeArchive, ErrCorrupt} {
			if errors.Is(err, sentinel) {
				return
			}
		}
		t.Fatalf("Install error %v wraps none of the sentinels", err)
	}
	if len(names) != 1 || names[0] != m.Version {
		t.Fatalf("Install succeeded with %s but left %v", m.Version, names)
	}
	if _, err := Verify(filepath.Join(dir, m.Version), testKey().Public()); err != nil {
		t.Fatalf("Install succeeded but Verify fails: %v", err)
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			t.Fatalf("%s is a %v, want only files and folders", p, d.Type())
		}
		if info, _ := d.Info(); !d.IsDir() && info.Mode().Perm()&^0o755 != 0 {
			t.Fatalf("%s has mode %v, more than 0755", p, info.Mode())
		}
		return nil
	})
}

type fuzzSeed struct {
	name   string
	data   []byte
	gzipIt bool
}

// fuzzSeeds are small archives covering the interesting shapes: valid ones
// and one of each kind of refusal. testdata/fuzz/FuzzInstall holds the same
// seeds as files (see TestWriteFuzzSeeds).
func fuzzSeeds(t testing.TB) []fuzzSeed {
	small := func() spec {
		s := spec{m: Manifest{Name: "calamari", Version: "1.0.0", Entrypoints: map[string]string{"linux/amd64": "bin/c"}}}
		s.addFile("bin/c", 0o755, []byte("#!/bin/sh\n"))
		s.addFile("a.txt", 0o644, []byte("a"))
		return s
	}
	tarOf := func(mutate func(*spec)) []byte {
		s := small()
		mutate(&s)
		return tarBytes(t, s.entries(t), false)
	}
	return []fuzzSeed{
		{"valid", tarOf(func(*spec) {}), true},
		{"valid-gz", small().archive(t), false},
		{"folders", tarOf(func(s *spec) { s.files = append([]entry{{name: "bin/", typ: tar.TypeDir, mode: 0o755}}, s.files...) }), true},
		{"symlink", tarOf(func(s *spec) { s.files[1] = entry{name: "a.txt", typ: tar.TypeSymlink, link: "../../x"} }), true},
		{"hardlink", tarOf(func(s *spec) { s.files[1] = entry{name: "a.txt", typ: tar.TypeLink, link: "bin/c"} }), true},
		{"fifo", tarOf(func(s *spec) { s.files[1] = entry{name: "a.txt", typ: tar.TypeFifo} }), true},
		{"dotdot", tarOf(func(s *spec) { s.files = append(s.files, reg("../x", []byte("x"))) }), true},
		{"hash-lie", tarOf(func(s *spec) { s.m.Files[1].SHA256 = strings.Repeat("0", 64) }), true},
		{"size-lie", tarOf(func(s *spec) { s.m.Files[1].Size = 2 }), true},
		{"duplicate", tarOf(func(s *spec) { s.files = append(s.files, s.files[1]) }), true},
		{"missing", tarOf(func(s *spec) { s.files = s.files[:1] }), true},
		{"no-manifest", tarOf(func(s *spec) { s.noManifest = true }), true},
		{"bad-version", tarOf(func(s *spec) { s.m.Version = "v1" }), true},
		{"long-name", tarOf(func(s *spec) { s.addFile(strings.Repeat("d/", 60)+"f", 0o644, []byte("f")) }), true},
	}
}

// manifestSeeds are manifests for FuzzParseManifest: valid ones and one
// of each kind of refusal.
func manifestSeeds(t testing.TB) map[string][]byte {
	hash := strings.Repeat("0", 64)
	one := func(fields string) []byte {
		return []byte(`{"name":"a","version":"1.0.0","entrypoints":{"linux/amd64":"bin/a"},"files":[` + fields + `]}`)
	}
	enc, err := validManifest().Encode()
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"valid":            marshal(t, validManifest()),
		"encoded":          enc,
		"minimal":          one(`{"path":"bin/a","size":0,"mode":493,"sha256":"` + hash + `"}`),
		"dotdot":           one(`{"path":"bin/a","size":0,"mode":493,"sha256":"` + hash + `"},{"path":"../x","size":1,"mode":420,"sha256":"` + hash + `"}`),
		"case-duplicate":   one(`{"path":"bin/a","size":0,"mode":493,"sha256":"` + hash + `"},{"path":"BIN/A","size":1,"mode":420,"sha256":"` + hash + `"}`),
		"reserved":         one(`{"path":"bin/a","size":0,"mode":493,"sha256":"` + hash + `"},{"path":"Success.txt","size":1,"mode":420,"sha256":"` + hash + `"}`),
		"duplicate-key":    one(`{"path":"bin/a","path":"bin/b","size":0,"mode":493,"sha256":"` + hash + `"}`),
		"unknown-field":    one(`{"path":"bin/a","size":0,"mode":493,"sha256":"` + hash + `","owner":"root"}`),
		"setuid":           one(`{"path":"bin/a","size":0,"mode":2541,"sha256":"` + hash + `"}`),
		"unicode-path":     one(`{"path":"bin/a","size":0,"mode":493,"sha256":"` + hash + `"},{"path":"d\u00e9j\u00e0/K\u212a","size":1,"mode":420,"sha256":"` + hash + `"}`),
		"escaped-slashes":  one(`{"path":"bin\/a","size":0,"mode":493,"sha256":"` + hash + `"}`),
		"huge-size":        one(`{"path":"bin/a","size":9223372036854775807,"mode":493,"sha256":"` + hash + `"}`),
		"version-v-prefix": []byte(`{"name":"a","version":"v1.0.0","entrypoints":{"linux/amd64":"bin/a"},"files":[{"path":"bin/a","size":0,"mode":493,"sha256":"` + hash + `"}]}`),
	}
}

// TestWriteFuzzSeeds regenerates testdata/fuzz from fuzzSeeds and
// manifestSeeds when BUNDLE_WRITE_FUZZ_SEEDS is set; otherwise it checks
// the files exist, so a seed added in code is not forgotten on disk.
func TestWriteFuzzSeeds(t *testing.T) {
	write := os.Getenv("BUNDLE_WRITE_FUZZ_SEEDS") != ""
	seed := func(target, name, content string) {
		dir := filepath.Join("testdata", "fuzz", target)
		p := filepath.Join(dir, name)
		if write {
			must(t, os.MkdirAll(dir, 0o755))
			must(t, os.WriteFile(p, []byte(content), 0o644))
			return
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("seed %s: %v (run with BUNDLE_WRITE_FUZZ_SEEDS=1 to write it)", p, err)
		}
	}
	for _, s := range fuzzSeeds(t) {
		seed("FuzzInstall", s.name, fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbool(%v)\n", s.data, s.gzipIt))
	}
	for name, b := range manifestSeeds(t) {
		seed("FuzzParseManifest", name, fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b))
	}
}
