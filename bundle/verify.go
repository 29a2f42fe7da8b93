package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Bounds on the description files of an installed bundle. The manifest was
// within the install limits when installed; the bound here only keeps a
// replaced file from being read whole into memory.
const (
	maxInstalledManifest = 64 << 20
	maxSignature         = 4 << 10
)

// staleTempAge is how old a temporary folder must be before Prune removes
// it when no Install of this process is using it: an Install in another
// process (an agent being upgraded, say) may still be writing it.
const staleTempAge = time.Hour

// Verify checks an installed version folder, as the agent does before each
// use of it: Success.txt is present, manifest.sig is a valid signature of
// manifest.json by publicKeyHex, the folder is named after the manifest's
// version, and every listed file is a regular file (not a link) with the
// size, SHA-256 and (on Unix) no more than the mode of the manifest. This
// is what detects files that antivirus software quarantined or changed.
//
// Errors wrap ErrNotInstalled (no folder, or no Success.txt),
// ErrBadSignature, or ErrCorrupt (with the path and what differs).
func Verify(dir, publicKeyHex string) (Manifest, error) {
	return verifyWith(dir, publicKeyHex, nil)
}

// verifyWith is Verify, skipping files v knows to be unchanged (v may be
// nil: hash every file).
func verifyWith(dir, publicKeyHex string, v *Verifier) (Manifest, error) {
	m, err := verify(dir, publicKeyHex, v)
	if err != nil {
		v.Forget(dir)
		return Manifest{}, fmt.Errorf("verify bundle %s: %w", dir, err)
	}
	return m, nil
}

func verify(dir, publicKeyHex string, v *Verifier) (Manifest, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Manifest{}, fmt.Errorf("%w: no such folder", ErrNotInstalled)
		}
		if st, serr := os.Lstat(dir); serr == nil && !st.IsDir() {
			return Manifest{}, fmt.Errorf("%w: not a folder but a %s", ErrCorrupt, kind(st.Mode()))
		}
		return Manifest{}, err
	}
	defer root.Close()
	st, err := root.Lstat(SuccessName)
	if errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, fmt.Errorf("%w: no %s", ErrNotInstalled, SuccessName)
	}
	if err != nil {
		return Manifest{}, err
	}
	if !st.Mode().IsRegular() {
		return Manifest{}, fmt.Errorf("%w: %s is a %s", ErrCorrupt, SuccessName, kind(st.Mode()))
	}
	raw, err := readSmall(root, ManifestName, maxInstalledManifest)
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	sig, err := readSmall(root, SignatureName, maxSignature)
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	m, ok := v.knownManifest(dir, publicKeyHex, raw, sig)
	if !ok {
		// The signature is checked before the manifest is parsed, so the
		// parser only ever sees bytes the coordinator vouched for.
		if err := VerifySignature(publicKeyHex, raw, sig); err != nil {
			return Manifest{}, err
		}
		if m, err = ParseManifest(raw, noLimits); err != nil {
			return Manifest{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		v.learnManifest(dir, publicKeyHex, raw, sig, m)
	}
	if base := filepath.Base(dir); m.Version != base {
		return Manifest{}, fmt.Errorf("%w: the folder is named %s but holds version %s", ErrCorrupt, quote(base), m.Version)
	}
	for _, f := range m.Files {
		if err := verifyFile(root, f, v, filepath.Join(dir, filepath.FromSlash(f.Path))); err != nil {
			return Manifest{}, err
		}
	}
	return m, nil
}

func verifyFile(root *os.Root, f File, v *Verifier, path string) error {
	native := filepath.FromSlash(f.Path)
	st, err := root.Lstat(native)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s is missing", ErrCorrupt, f.Path)
	case err != nil:
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, f.Path, err)
	case !st.Mode().IsRegular():
		return fmt.Errorf("%w: %s is a %s, not a regular file", ErrCorrupt, f.Path, kind(st.Mode()))
	case st.Size() != f.Size:
		return fmt.Errorf("%w: %s is %d bytes, the manifest says %d", ErrCorrupt, f.Path, st.Size(), f.Size)
	}
	if runtime.GOOS != "windows" {
		perm, want := st.Mode().Perm(), fs.FileMode(f.Mode)
		if perm&^want != 0 {
			return fmt.Errorf("%w: %s has mode %#o, more than the manifest's %#o", ErrCorrupt, f.Path, perm, want)
		}
		if want&0o100 != 0 && perm&0o100 == 0 {
			return fmt.Errorf("%w: %s has mode %#o, it is no longer executable", ErrCorrupt, f.Path, perm)
		}
	}
	if v.fresh(path, st, f.SHA256) {
		return nil
	}
	fh, err := root.Open(native)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, f.Path, err)
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(fh, f.Size+1))
	if err != nil {
		return fmt.Errorf("verify %s: %w", f.Path, err)
	}
	if n != f.Size {
		return fmt.Errorf("%w: %s is %d bytes, the manifest says %d", ErrCorrupt, f.Path, n, f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("%w: %s has sha256 %s, the manifest says %s", ErrCorrupt, f.Path, got, f.SHA256)
	}
	// What was known before the read: a change during it shows next time.
	v.hashedFile(path, st, f.SHA256)
	return nil
}

// readSmall reads a regular file of at most max bytes.
func readSmall(root *os.Root, name string, max int64) ([]byte, error) {
	st, err := root.Lstat(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s is missing", name)
		}
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is a %s", name, kind(st.Mode()))
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s is %d bytes, more than %d", name, st.Size(), max)
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is more than %d bytes", name, max)
	}
	return b, nil
}

func kind(m fs.FileMode) string {
	switch t := m.Type(); {
	case t == 0:
		return "regular file"
	case t&fs.ModeSymlink != 0:
		return "symbolic link"
	case t&fs.ModeDir != 0:
		return "folder"
	case t&fs.ModeNamedPipe != 0:
		return "named pipe"
	case t&fs.ModeDevice != 0:
		return "device"
	default:
		return "special file (" + t.String() + ")"
	}
}

// Status is the state of one version folder of a Calamari folder.
type Status struct {
	// Version is the folder's name, a valid version.
	Version string
	// Err is nil when the folder verifies; otherwise it wraps
	// ErrNotInstalled, ErrCorrupt or ErrBadSignature (or is an I/O error).
	Err error
}

// Scan verifies every version folder of calamariDir (folders whose name is
// a valid version; temporary folders and anything else are ignored) and
// returns their states sorted newest version first. A missing or
// unreadable calamariDir has no versions.
func Scan(calamariDir, publicKeyHex string) []Status {
	return scanWith(calamariDir, publicKeyHex, nil)
}

func scanWith(calamariDir, publicKeyHex string, vr *Verifier) []Status {
	var out []Status
	for _, v := range versionFolders(calamariDir) {
		_, err := verifyWith(filepath.Join(calamariDir, v), publicKeyHex, vr)
		out = append(out, Status{Version: v, Err: err})
	}
	return out
}

// versionFolders returns the names in dir that are valid versions, newest
// first.
func versionFolders(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var vs []string
	for _, e := range entries {
		if ValidVersion(e.Name()) {
			vs = append(vs, e.Name())
		}
	}
	slices.SortFunc(vs, func(a, b string) int { return CompareVersions(b, a) })
	return vs
}

// Prune keeps the newest keep installed versions of calamariDir (those
// with Success.txt; Prune has no key to verify more) and removes every
// other version folder, installed or not, except those inUse reports
// (inUse may be nil). It also removes temporary folders that no Install of
// this process is using and that have not changed for an hour. It returns
// the removed versions, newest first, and every removal error joined.
func Prune(calamariDir string, keep int, inUse func(version string) bool) ([]string, error) {
	if keep < 0 {
		return nil, fmt.Errorf("prune %s: keep %d: want 0 or more", calamariDir, keep)
	}
	entries, err := os.ReadDir(calamariDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("prune %s: %w", calamariDir, err)
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(calamariDir, e.Name())
		if !strings.HasPrefix(e.Name(), tempPrefix) || isActive(p) {
			continue
		}
		if st, err := e.Info(); err != nil || time.Since(st.ModTime()) < staleTempAge {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("prune %s: %w", calamariDir, err))
		}
	}
	var removed []string
	kept := 0
	for _, v := range versionFolders(calamariDir) {
		p := filepath.Join(calamariDir, v)
		if st, err := os.Lstat(filepath.Join(p, SuccessName)); err == nil && st.Mode().IsRegular() && kept < keep {
			kept++
			continue
		}
		if inUse != nil && inUse(v) {
			continue
		}
		// Renamed away first, so the version disappears at once rather than
		// file by file; a removal that fails halfway leaves a temporary
		// folder, not a damaged version.
		gone := filepath.Join(calamariDir, tempPrefix+v+"-pruned-"+randomSuffix())
		if err := os.Rename(p, gone); err != nil {
			errs = append(errs, fmt.Errorf("prune %s: %w", calamariDir, err))
			continue
		}
		removed = append(removed, v)
		if err := os.RemoveAll(gone); err != nil {
			errs = append(errs, fmt.Errorf("prune %s: %w", calamariDir, err))
		}
	}
	return removed, errors.Join(errs...)
}
