package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pe is one entry of a test package.
type pe struct {
	name string
	typ  byte // tar.TypeReg when zero
	body string
	mode int64
	link string
	size int64 // header size instead of len(body) when set (no content written)
}

func tarOf(t *testing.T, entries []pe) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, ModTime: time.Unix(1_700_000_000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
			if e.size != 0 {
				h.Size = e.size
			}
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			h = &tar.Header{Typeflag: h.Typeflag, Name: e.name, PAXRecords: map[string]string{"comment": "commit abc"}}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.size != 0 {
			return buf.Bytes() // a header that promises content that never comes
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func writePkg(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pkg.tar.gz")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func goodPkg(t *testing.T, marker string) string {
	return writePkg(t, gz(tarOf(t, []pe{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "./app.txt", body: "release " + marker + "\n"},
		{name: "./bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "./bin/run.sh", body: "#!/bin/sh\necho " + marker + "\n", mode: 0o755},
		{name: "./lib/deep/data.bin", body: strings.Repeat("d", 5000), mode: 0o4755},
		{name: "run", typ: tar.TypeSymlink, link: "bin/run.sh"},
		{name: "lib/up", typ: tar.TypeSymlink, link: "../app.txt"},
		{name: "copy.txt", typ: tar.TypeLink, link: "./app.txt"},
	})))
}

func deploy(t *testing.T, pkg, target, release string, keep int) (string, error) {
	t.Helper()
	return deployPackage(context.Background(), deployOptions{pkg: pkg, target: target, release: release, keep: keep, maxSize: maxPackageSize, goos: runtime.GOOS})
}

func current(t *testing.T, target string) string {
	t.Helper()
	name, err := currentRelease(target, runtime.GOOS)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

func releaseNames(t *testing.T, target string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(target, releasesDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestDeployPackage(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symbolic links in the package")
	}
	target := filepath.Join(t.TempDir(), "app")
	pkg := goodPkg(t, "one")

	code, out, errOut := calamari(t, "", "deploy-package", "--package", pkg, "--target", target, "--release", "r1")
	want := filepath.Join(target, releasesDir, "r1")
	if code != 0 || out != want+"\n" {
		t.Fatalf("deploy-package: got %d %q %q, want 0 and %q", code, out, errOut, want)
	}
	if got := current(t, target); got != "r1" {
		t.Errorf("current: got %q, want r1", got)
	}
	read := func(rel string) string {
		b, err := os.ReadFile(filepath.Join(target, currentLink, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for rel, wantBody := range map[string]string{"app.txt": "release one\n", "run": "#!/bin/sh\necho one\n", "lib/up": "release one\n", "copy.txt": "release one\n"} {
		if got := read(rel); got != wantBody {
			t.Errorf("%s: got %q, want %q", rel, got, wantBody)
		}
	}
	st, err := os.Stat(filepath.Join(want, "lib", "deep", "data.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
		t.Errorf("data.bin: got mode %v, want no setuid bit", st.Mode())
	}
	if st, _ := os.Stat(filepath.Join(want, "bin", "run.sh")); st.Mode().Perm()&0o100 == 0 {
		t.Errorf("run.sh: got mode %v, want executable", st.Mode())
	}

	// The same release name twice is refused; current does not move.
	if _, err := deploy(t, goodPkg(t, "again"), target, "r1", 3); err == nil {
		t.Error("deploying r1 twice: got nil error, want one")
	}

	for _, r := range []string{"r2", "r3", "r4"} {
		if _, err := deploy(t, goodPkg(t, r), target, r, 2); err != nil {
			t.Fatalf("deploy %s: %v", r, err)
		}
	}
	if got := current(t, target); got != "r4" {
		t.Errorf("current: got %q, want r4", got)
	}
	if got, want := releaseNames(t, target), []string{"r3", "r4"}; !slices.Equal(got, want) {
		t.Errorf("releases with --keep 2: got %v, want %v", got, want)
	}
	if got := read("app.txt"); got != "release r4\n" {
		t.Errorf("current app.txt: got %q, want release r4", got)
	}

	// The default name is a UTC timestamp with a random suffix.
	dir, err := deploy(t, goodPkg(t, "five"), target, "", 3)
	if err != nil {
		t.Fatal(err)
	}
	if name := filepath.Base(dir); !regexp.MustCompile(`^\d{8}T\d{6}Z-[0-9a-f]{6}$`).MatchString(name) {
		t.Errorf("default release name: got %q, want 20060102T150405Z-xxxxxx", name)
	}
}

// TestDeployNeverRemovesCurrent checks that --keep never prunes the release
// current points to, even when it is not among the newest.
func TestDeployNeverRemovesCurrent(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symbolic links in the package")
	}
	target := t.TempDir()
	for _, r := range []string{"a", "b", "c"} {
		if _, err := deploy(t, goodPkg(t, r), target, r, 5); err != nil {
			t.Fatal(err)
		}
	}
	// Roll back by hand to the oldest, then prune to one.
	if err := switchCurrent(target, "a", runtime.GOOS); err != nil {
		t.Fatal(err)
	}
	if err := pruneReleases(target, 1, runtime.GOOS); err != nil {
		t.Fatal(err)
	}
	if got, want := releaseNames(t, target), []string{"a", "c"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (the newest and the current)", got, want)
	}
}

// TestDeploySwitchIsAtomic reads current continuously while releases are
// deployed: it always names a complete release.
func TestDeploySwitchIsAtomic(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symbolic links in the package")
	}
	target := t.TempDir()
	if _, err := deploy(t, goodPkg(t, "0"), target, "r0", 2); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var failures atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			if _, err := os.Stat(filepath.Join(target, currentLink, "app.txt")); err != nil {
				// A release being pruned right after the switch away from it
				// is the one race a reader can see: re-resolving fixes it.
				if _, err2 := os.Stat(filepath.Join(target, currentLink, "app.txt")); err2 != nil {
					failures.Add(1)
				}
			}
		}
	})
	for i := 1; i <= 20; i++ {
		if _, err := deploy(t, goodPkg(t, "x"), target, "r"+strings.Repeat("x", i), 2); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("current did not resolve %d times, want always", n)
	}
}

func TestDeployWindowsCurrentFile(t *testing.T) {
	target := t.TempDir()
	pkg := writePkg(t, gz(tarOf(t, []pe{{name: "app.txt", body: "hi"}})))
	for _, r := range []string{"r1", "r2"} {
		if _, err := deployPackage(context.Background(), deployOptions{pkg: pkg, target: target, release: r, keep: 1, maxSize: maxPackageSize, goos: "windows"}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(target, currentFile))
	if err != nil || string(b) != "releases/r2\n" {
		t.Errorf("current.txt: got %q, %v; want releases/r2", b, err)
	}
	if got, want := releaseNames(t, target), []string{"r2"}; !slices.Equal(got, want) {
		t.Errorf("releases: got %v, want %v", got, want)
	}
}

func TestDeployRefusesUnsafePackages(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symbolic links in the package")
	}
	good := gz(tarOf(t, []pe{{name: "app.txt", body: "ok"}}))
	tests := []struct {
		name    string
		data    []byte
		maxSize int64
	}{
		{"dotdot", gz(tarOf(t, []pe{{name: "../evil", body: "x"}})), 0},
		{"inner dotdot", gz(tarOf(t, []pe{{name: "a/../../evil", body: "x"}})), 0},
		{"dotdot that cleans inside", gz(tarOf(t, []pe{{name: "a/../b", body: "x"}})), 0},
		{"absolute path", gz(tarOf(t, []pe{{name: "/tmp/evil", body: "x"}})), 0},
		{"backslash path", gz(tarOf(t, []pe{{name: `..\evil`, body: "x"}})), 0},
		{"symlink escaping", gz(tarOf(t, []pe{{name: "l", typ: tar.TypeSymlink, link: "../../etc/passwd"}})), 0},
		{"symlink escaping from a subfolder", gz(tarOf(t, []pe{{name: "a/l", typ: tar.TypeSymlink, link: "../../x"}})), 0},
		{"absolute symlink", gz(tarOf(t, []pe{{name: "l", typ: tar.TypeSymlink, link: "/etc/passwd"}})), 0},
		{"symlink with inner dotdot", gz(tarOf(t, []pe{{name: "l", typ: tar.TypeSymlink, link: "a/../.."}})), 0},
		{"write through a symlink", gz(tarOf(t, []pe{
			{name: "d", typ: tar.TypeDir, mode: 0o755},
			{name: "d/up", typ: tar.TypeSymlink, link: ".."},
			{name: "d/up/x", body: "x"},
		})), 0},
		{"write through a symlink in other case", gz(tarOf(t, []pe{
			{name: "d", typ: tar.TypeDir, mode: 0o755},
			{name: "d/UP", typ: tar.TypeSymlink, link: ".."},
			{name: "d/up/x", body: "x"},
		})), 0},
		{"hard link escaping", gz(tarOf(t, []pe{{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}})), 0},
		{"hard link to an absolute path", gz(tarOf(t, []pe{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}})), 0},
		{"hard link to a later file", gz(tarOf(t, []pe{{name: "h", typ: tar.TypeLink, link: "a"}, {name: "a", body: "x"}})), 0},
		{"hard link to a symlink", gz(tarOf(t, []pe{{name: "s", typ: tar.TypeSymlink, link: "a"}, {name: "h", typ: tar.TypeLink, link: "s"}})), 0},
		{"character device", gz(tarOf(t, []pe{{name: "c", typ: tar.TypeChar}})), 0},
		{"block device", gz(tarOf(t, []pe{{name: "b", typ: tar.TypeBlock}})), 0},
		{"fifo", gz(tarOf(t, []pe{{name: "f", typ: tar.TypeFifo}})), 0},
		{"duplicate file", gz(tarOf(t, []pe{{name: "a", body: "1"}, {name: "a", body: "2"}})), 0},
		{"over the size cap", gz(tarOf(t, []pe{{name: "a", body: strings.Repeat("a", 600)}, {name: "b", body: strings.Repeat("b", 600)}})), 1000},
		{"header claims more than the cap", gz(tarOf(t, []pe{{name: "big", size: 3 << 30}})), 0},
		{"decompression bomb", gz(append(tarOf(t, []pe{{name: "a", body: "x"}}), make([]byte, 4<<20)...)), 1000},
		{"truncated", good[:len(good)-6], 0},
		{"not gzip", []byte("plain text"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := t.TempDir()
			if _, err := deploy(t, goodPkg(t, "one"), target, "r1", 3); err != nil {
				t.Fatal(err)
			}
			max := tt.maxSize
			if max == 0 {
				max = maxPackageSize
			}
			_, err := deployPackage(context.Background(), deployOptions{pkg: writePkg(t, tt.data), target: target, release: "r2", keep: 3, maxSize: max, goos: runtime.GOOS})
			if err == nil {
				t.Fatal("got nil error, want the package refused")
			}
			t.Logf("refused: %v", err)
			if got := current(t, target); got != "r1" {
				t.Errorf("current: got %q, want r1", got)
			}
			if got, want := releaseNames(t, target), []string{"r1"}; !slices.Equal(got, want) {
				t.Errorf("releases: got %v, want %v", got, want)
			}
			var names []string
			entries, _ := os.ReadDir(target)
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if want := []string{currentLink, releasesDir}; !slices.Equal(names, want) {
				t.Errorf("target: got %v, want %v", names, want)
			}
		})
	}
	// Through the command: exit 1 and one line on stderr.
	target := t.TempDir()
	code, out, errOut := calamari(t, "", "deploy-package", "--package", writePkg(t, tests[0].data), "--target", target)
	if code != exitError || out != "" || !strings.HasPrefix(errOut, "calamari: deploy-package: ") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("got %d %q %q, want 1 and one line on stderr", code, out, errOut)
	}
}

func TestDeployAcceptsCommonPackages(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symbolic links in the package")
	}
	tests := []struct {
		name    string
		entries []pe
		check   string // a file that must exist after
	}{
		{"git archive global header", []pe{{name: "pax_global_header", typ: tar.TypeXGlobalHeader}, {name: "app/main.txt", body: "x"}}, "app/main.txt"},
		{"dot-slash names", []pe{{name: "./", typ: tar.TypeDir}, {name: "./a/b.txt", body: "x"}}, "a/b.txt"},
		{"symlink to a folder inside", []pe{{name: "v1/x.txt", body: "x"}, {name: "latest", typ: tar.TypeSymlink, link: "v1"}}, "latest/x.txt"},
		{"symlink climbing inside", []pe{{name: "a/b/x.txt", body: "x"}, {name: "a/c/l", typ: tar.TypeSymlink, link: "../b/x.txt"}}, "a/c/l"},
		{"dangling symlink inside", []pe{{name: "l", typ: tar.TypeSymlink, link: "later/file"}, {name: "x", body: "x"}}, "x"},
		{"folder after its files", []pe{{name: "d/x", body: "x"}, {name: "d/", typ: tar.TypeDir, mode: 0o755}}, "d/x"},
		{"empty package", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := t.TempDir()
			dir, err := deploy(t, writePkg(t, gz(tarOf(t, tt.entries))), target, "r1", 3)
			if err != nil {
				t.Fatalf("got %v, want nil", err)
			}
			if tt.check != "" {
				if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(tt.check))); err != nil {
					t.Errorf("%s: %v", tt.check, err)
				}
			}
		})
	}
}

func TestEntryName(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"a/b", "a/b", true},
		{"./a/b/", "a/b", true},
		{"./", ".", true},
		{"a//b", "a/b", true},
		{"", "", false},
		{"/a", "", false},
		{"../a", "", false},
		{"a/../b", "", false},
		{`a\b`, "", false},
		{"a\x00b", "", false},
	}
	for _, tt := range tests {
		got, err := entryName(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("entryName(%q): got %q, %v; want %q, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, errUnsafe) {
			t.Errorf("entryName(%q): got %v, want errUnsafe", tt.in, err)
		}
	}
}

func TestLinkTarget(t *testing.T) {
	tests := []struct {
		name, target string
		ok           bool
	}{
		{"l", "a", true},
		{"a/l", "../b", true},
		{"a/b/l", "../../c", true},
		{"a/l", "..", true},
		{"a/l", "./b", true},
		{"l", "..", false},
		{"l", "../x", false},
		{"a/l", "../../x", false},
		{"l", "a/../b", false},
		{"l", "/etc", false},
		{"l", `..\x`, false},
		{"l", "", false},
	}
	for _, tt := range tests {
		err := linkTarget(tt.name, tt.target)
		if (err == nil) != tt.ok {
			t.Errorf("linkTarget(%q, %q): got %v, want ok %v", tt.name, tt.target, err, tt.ok)
		}
	}
}

func TestResolvePackage(t *testing.T) {
	work, files := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(files, "app.tar.gz"), []byte("x"), 0o644)
	t.Chdir(work)
	os.WriteFile("local.tar.gz", []byte("x"), 0o644)
	abs := filepath.Join(files, "app.tar.gz")
	tests := []struct {
		pkg, files, want string
	}{
		{"app.tar.gz", files, abs},                  // pushed with the task
		{"local.tar.gz", files, "local.tar.gz"},     // in the working directory first
		{"app.tar.gz", "", "app.tar.gz"},            // not run by an agent
		{abs, files, abs},                           // absolute stays
		{"missing.tar.gz", files, "missing.tar.gz"}, // left for the error to name
	}
	for _, tt := range tests {
		if got := resolvePackage(tt.pkg, tt.files); got != tt.want {
			t.Errorf("resolvePackage(%q, %q): got %q, want %q", tt.pkg, tt.files, got, tt.want)
		}
	}
}
