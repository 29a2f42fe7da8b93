package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/tendrildeploy/tendril/bundle/tartype"
)

// maxPackageSize bounds the file content a package may expand to.
const maxPackageSize = 2 << 30

// streamCap is how many bytes the decompressed tar stream may hold for
// maxSize bytes of files: an eighth more for headers and padding, plus 1
// MiB. Generous for any real package, and still a hard stop for a
// decompression bomb whatever its headers claim.
func streamCap(maxSize int64) int64 { return maxSize + maxSize/8 + 1<<20 }

// errUnsafe marks a package refused for what it contains rather than for
// an I/O failure.
var errUnsafe = errors.New("unsafe package")

// capReader stops a stream after max bytes, so a decompression bomb ends
// at the cap whatever the tar headers claim.
type capReader struct {
	r      io.Reader
	n, max int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.n >= c.max {
		return 0, fmt.Errorf("%w: it expands to more than %d bytes", errUnsafe, c.max)
	}
	if int64(len(p)) > c.max-c.n {
		p = p[:c.max-c.n]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// extractPackage extracts a .tar.gz into dest, an empty folder, refusing
// anything that could reach outside it: absolute paths, "..", links whose
// target leaves dest, entries below a symbolic link, devices and fifos, and
// more than maxSize bytes of file content. Symbolic links inside dest and
// hard links to files extracted before are kept, as packages use them.
// Every write goes through an os.Root on dest as a second line of defence.
func extractPackage(ctx context.Context, r io.Reader, dest string, maxSize int64) error {
	root, err := os.OpenRoot(dest)
	if err != nil {
		return err
	}
	defer root.Close()
	zr, err := gzip.NewReader(bufio.NewReader(r))
	if err != nil {
		return fmt.Errorf("read package: %w", err)
	}
	stream := &capReader{r: zr, max: streamCap(maxSize)}
	x := extractor{root: root, tr: tar.NewReader(stream), maxSize: maxSize,
		symlinks: map[string]bool{}, files: map[string]bool{}}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := x.tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read package: %w", err)
		}
		if err := x.entry(hdr); err != nil {
			return err
		}
	}
	// Read to the end so gzip checks its checksum: a truncated package is
	// refused even when the tar stream looked complete.
	if _, err := io.Copy(io.Discard, stream); err != nil {
		return fmt.Errorf("read package: %w", err)
	}
	return x.checkLinks(dest)
}

// checkLinks resolves every symbolic link that resolves and checks that it
// lands inside dest: a check on what the file system actually did, behind
// the checks on names, in case the file system folds or normalizes names
// in a way they missed.
func (x *extractor) checkLinks(dest string) error {
	if len(x.links) == 0 {
		return nil
	}
	top, err := filepath.EvalSymlinks(dest)
	if err != nil {
		return err
	}
	for _, l := range x.links {
		real, err := filepath.EvalSymlinks(filepath.Join(dest, l))
		if err != nil {
			continue // dangling: the name checks are all there is to check
		}
		if rel, err := filepath.Rel(top, real); err != nil || !filepath.IsLocal(rel) {
			return fmt.Errorf("%w: symbolic link %s resolves outside the release", errUnsafe, filepath.ToSlash(l))
		}
	}
	return nil
}

type extractor struct {
	root     *os.Root
	tr       *tar.Reader
	maxSize  int64
	total    int64
	symlinks map[string]bool // extracted symbolic links, lower-case
	links    []string        // the same, as created
	files    map[string]bool // extracted regular files: what hard links may point at
}

func (x *extractor) entry(hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // metadata only (git archive writes the commit here)
	}
	name, err := entryName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "." {
		return nil // the archive's own top folder, "./"
	}
	// Writing below a symbolic link would land wherever the link points;
	// refusing it keeps every link target check true.
	// Compared case-insensitively: on Windows and macOS "A" and "a" are one
	// name.
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if x.symlinks[strings.ToLower(d)] {
			return fmt.Errorf("%w: %s is below the symbolic link %s", errUnsafe, name, d)
		}
	}
	native := filepath.FromSlash(name)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := x.root.MkdirAll(native, 0o755); err != nil {
			return fmt.Errorf("extract %s: %w", name, err)
		}
	case tar.TypeReg:
		return x.file(name, native, hdr)
	case tar.TypeSymlink:
		if err := linkTarget(name, hdr.Linkname); err != nil {
			return err
		}
		if err := x.parent(native); err != nil {
			return err
		}
		if err := x.root.Symlink(filepath.FromSlash(hdr.Linkname), native); err != nil {
			return fmt.Errorf("extract %s: %w", name, err)
		}
		x.symlinks[strings.ToLower(name)] = true
		x.links = append(x.links, native)
	case tar.TypeLink:
		target, err := entryName(hdr.Linkname)
		if err != nil || !x.files[target] {
			return fmt.Errorf("%w: hard link %s -> %s does not point at a file extracted before it", errUnsafe, name, hdr.Linkname)
		}
		if err := x.parent(native); err != nil {
			return err
		}
		if err := x.root.Link(filepath.FromSlash(target), native); err != nil {
			return fmt.Errorf("extract %s: %w", name, err)
		}
	default:
		return fmt.Errorf("%w: %s is a %s", errUnsafe, name, tartype.Name(hdr.Typeflag))
	}
	return nil
}

func (x *extractor) file(name, native string, hdr *tar.Header) error {
	if hdr.Size < 0 || hdr.Size > x.maxSize-x.total {
		return fmt.Errorf("%w: more than %d bytes of files (at %s)", errUnsafe, x.maxSize, name)
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return fmt.Errorf("%w: %s is a sparse file", errUnsafe, name)
		}
	}
	x.total += hdr.Size
	if err := x.parent(native); err != nil {
		return err
	}
	// Permission bits only: never setuid, setgid or sticky. The umask
	// applies as for any unpacking.
	f, err := x.root.OpenFile(native, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fs.FileMode(hdr.Mode)&fs.ModePerm)
	if err != nil {
		return fmt.Errorf("extract %s: %w", name, err)
	}
	if _, err := io.Copy(f, x.tr); err != nil {
		f.Close()
		return fmt.Errorf("extract %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("extract %s: %w", name, err)
	}
	if !hdr.ModTime.IsZero() {
		x.root.Chtimes(native, hdr.ModTime, hdr.ModTime) // cosmetic; failure is harmless
	}
	x.files[name] = true
	return nil
}

func (x *extractor) parent(native string) error {
	if dir := filepath.Dir(native); dir != "." {
		if err := x.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("extract %s: %w", filepath.ToSlash(native), err)
		}
	}
	return nil
}

// entryName checks a tar entry name and returns it clean, slash-separated
// and relative ("." for the top folder). "./" prefixes and trailing slashes
// are fine; absolute paths, "..", backslashes and (on Windows) drive
// letters and device names are not.
func entryName(raw string) (string, error) {
	bad := func(why string) error { return fmt.Errorf("%w: entry %q: %s", errUnsafe, raw, why) }
	switch {
	case raw == "":
		return "", bad("empty name")
	case strings.HasPrefix(raw, "/"):
		return "", bad("absolute path")
	case strings.ContainsAny(raw, "\\\x00"):
		return "", bad("backslash or NUL in the name")
	}
	for _, e := range strings.Split(raw, "/") {
		if e == ".." {
			return "", bad(`".." in the path`)
		}
	}
	name := path.Clean(raw)
	if name != "." && !filepath.IsLocal(filepath.FromSlash(name)) {
		return "", bad("not a local path on this system")
	}
	return name, nil
}

// linkTarget checks that a symbolic link at name pointing at target stays
// inside the folder. The target must be relative, may only climb ("..")
// at its start, and must land inside the folder from the link's own
// folder; since nothing is extracted below a link, that holds however
// links chain.
func linkTarget(name, target string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: symbolic link %s -> %s: %s", errUnsafe, name, target, why)
	}
	switch {
	case target == "":
		return bad("empty target")
	case strings.HasPrefix(target, "/") || filepath.IsAbs(filepath.FromSlash(target)) || filepath.VolumeName(filepath.FromSlash(target)) != "":
		return bad("absolute target")
	case strings.ContainsAny(target, "\\\x00"):
		return bad("backslash or NUL in the target")
	}
	climbing := true
	for _, e := range strings.Split(target, "/") {
		switch {
		case e == "" || e == ".":
		case e == "..":
			if !climbing {
				return bad(`".." after the start of the target`)
			}
		default:
			climbing = false
		}
	}
	if resolved := path.Join(path.Dir(name), target); resolved == ".." || strings.HasPrefix(resolved, "../") {
		return bad("it points outside the release")
	}
	return nil
}
