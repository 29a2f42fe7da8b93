package bundle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// Install installs a bundle archive into calamariDir/<version>, verifying
// the manifest signature against publicKeyHex before writing anything and
// every file against the manifest while writing it.
//
// The archive is extracted into a temporary folder in calamariDir; only
// after every file is verified and synced, manifest.json and manifest.sig
// are written and Success.txt is written and synced, is the folder renamed
// to its version. A process killed at any point therefore never leaves a
// version folder that looks installed but does not verify; what it leaves
// is a temporary folder that Prune removes.
//
// If calamariDir/<version> already verifies, Install returns its manifest
// without touching it and without reading the rest of r. If it exists but
// does not verify (no Success.txt, files quarantined or changed), it is
// replaced. Otherwise r is read to its end: it must hold exactly one
// bundle, nothing after the gzip stream.
//
// Errors wrap ErrInvalidManifest, ErrBadSignature, ErrUnsafeArchive or
// ErrCorrupt for a bad bundle; an error from r or ctx is passed on as it is.
func Install(ctx context.Context, r io.Reader, calamariDir, publicKeyHex string, sig []byte, lim Limits) (Manifest, error) {
	a, err := openArchive(r, lim.withDefaults())
	if err != nil {
		return Manifest{}, fmt.Errorf("install bundle: %w", err)
	}
	m, raw, err := a.readManifest()
	if err != nil {
		return Manifest{}, fmt.Errorf("install bundle: %w", err)
	}
	if err := VerifySignature(publicKeyHex, raw, sig); err != nil {
		return Manifest{}, fmt.Errorf("install bundle %s %s: %w", m.Name, m.Version, err)
	}
	final := filepath.Join(calamariDir, m.Version)
	if have, err := Verify(final, publicKeyHex); err == nil {
		return have, nil
	}
	got, err := install(ctx, a, m, raw, sig, calamariDir, final, publicKeyHex)
	if err != nil {
		return Manifest{}, fmt.Errorf("install bundle %s %s into %s: %w", m.Name, m.Version, calamariDir, err)
	}
	return got, nil
}

func install(ctx context.Context, a *archive, m Manifest, raw, sig []byte, calamariDir, final, publicKeyHex string) (Manifest, error) {
	if err := os.MkdirAll(calamariDir, 0o755); err != nil {
		return Manifest{}, err
	}
	tmp, err := os.MkdirTemp(calamariDir, tempPrefix+m.Version+"-*")
	if err != nil {
		return Manifest{}, err
	}
	defer untrack(track(tmp))
	renamed := false
	defer func() {
		if !renamed {
			os.RemoveAll(tmp)
		}
	}()
	// MkdirTemp makes 0700; an installed bundle is readable like any program.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Manifest{}, err
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return Manifest{}, err
	}
	defer root.Close()
	s := &dirSink{root: root, dirs: make(map[string]bool)}
	if err := a.extract(ctx, m, s); err != nil {
		return Manifest{}, err
	}
	if err := ctx.Err(); err != nil {
		return Manifest{}, err
	}
	if err := writeSynced(root, ManifestName, raw); err != nil {
		return Manifest{}, err
	}
	if err := writeSynced(root, SignatureName, sig); err != nil {
		return Manifest{}, err
	}
	if err := s.syncDirs(); err != nil {
		return Manifest{}, err
	}
	// The marker goes last, and the rename only after it is durable: a
	// folder named after its version always holds verified files.
	marker := fmt.Sprintf("%s %s\ninstalled %s\n", m.Name, m.Version, time.Now().UTC().Format(time.RFC3339))
	if err := writeSynced(root, SuccessName, []byte(marker)); err != nil {
		return Manifest{}, err
	}
	if err := syncDir(root, "."); err != nil {
		return Manifest{}, err
	}
	// Windows cannot rename a folder while a handle to it is open.
	if err := root.Close(); err != nil {
		return Manifest{}, err
	}
	if have, done, err := replace(calamariDir, final, publicKeyHex); err != nil || done {
		return have, err
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another Install of the same version may have won the race.
		if have, verr := Verify(final, publicKeyHex); verr == nil {
			return have, nil
		}
		return Manifest{}, err
	}
	renamed = true
	if err := syncPath(calamariDir); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// replace clears the way for renaming a new install to final. If final
// already verifies (a concurrent Install finished first), it reports done
// with that manifest; if final exists but does not verify, it moves it
// aside under a temporary name and removes it.
func replace(calamariDir, final, publicKeyHex string) (Manifest, bool, error) {
	if _, err := os.Lstat(final); errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, false, nil
	} else if err != nil {
		return Manifest{}, false, err
	}
	if have, err := Verify(final, publicKeyHex); err == nil {
		return have, true, nil
	}
	aside := filepath.Join(calamariDir, tempPrefix+filepath.Base(final)+"-old-"+randomSuffix())
	defer untrack(track(aside))
	if err := os.Rename(final, aside); err != nil {
		return Manifest{}, false, fmt.Errorf("move aside the broken %s: %w", final, err)
	}
	// A failure to remove only leaves a temporary folder for Prune.
	os.RemoveAll(aside)
	return Manifest{}, false, nil
}

// dirSink writes extracted files under an os.Root, which refuses any path
// that leads outside the temporary folder, links included.
type dirSink struct {
	root *os.Root
	dirs map[string]bool // created, synced before Success.txt is written
}

func (s *dirSink) mkdir(dir string) error {
	native := filepath.FromSlash(dir)
	if !filepath.IsLocal(native) { // the manifest rules make this impossible
		return fmt.Errorf("%w: %s leaves the bundle folder", ErrUnsafeArchive, quote(dir))
	}
	if err := s.root.MkdirAll(native, 0o755); err != nil {
		return fmt.Errorf("create folder %s: %w", dir, err)
	}
	for d := dir; d != "." && !s.dirs[d]; d = path.Dir(d) {
		s.dirs[d] = true
	}
	return nil
}

func (s *dirSink) create(f File) (io.WriteCloser, error) {
	if dir := path.Dir(f.Path); dir != "." {
		if err := s.mkdir(dir); err != nil {
			return nil, err
		}
	}
	native := filepath.FromSlash(f.Path)
	if !filepath.IsLocal(native) { // the manifest rules make this impossible
		return nil, fmt.Errorf("%w: %s leaves the bundle folder", ErrUnsafeArchive, quote(f.Path))
	}
	mode := fs.FileMode(f.Mode)
	fh, err := s.root.OpenFile(native, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", f.Path, err)
	}
	// The umask may have removed bits; set exactly the manifest mode, which
	// is never more than 0755.
	if err := fh.Chmod(mode); err != nil {
		fh.Close()
		return nil, fmt.Errorf("create %s: %w", f.Path, err)
	}
	return syncCloser{fh}, nil
}

// syncDirs syncs every created folder, deepest first, so their entries are
// durable before the marker is written.
func (s *dirSink) syncDirs() error {
	dirs := make([]string, 0, len(s.dirs))
	for d := range s.dirs {
		dirs = append(dirs, d)
	}
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, d := range dirs {
		if err := syncDir(s.root, filepath.FromSlash(d)); err != nil {
			return err
		}
	}
	return nil
}

type syncCloser struct{ f *os.File }

func (s syncCloser) Write(p []byte) (int, error) { return s.f.Write(p) }

func (s syncCloser) Close() error {
	if err := s.f.Sync(); err != nil {
		s.f.Close()
		return err
	}
	return s.f.Close()
}

func writeSynced(root *os.Root, name string, data []byte) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := (syncCloser{f}).Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// syncDir makes a folder's entries durable. Windows cannot sync a folder
// and does not need to: NTFS journals its metadata.
func syncDir(root *os.Root, name string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := root.Open(name)
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", name, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", name, err)
	}
	return nil
}

func syncPath(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

func randomSuffix() string {
	var b [6]byte
	rand.Read(b[:]) // never fails (crypto/rand panics rather than return short)
	return hex.EncodeToString(b[:])
}

// active holds the temporary folders Installs of this process are working
// in, so that a concurrent Prune never removes one.
var active struct {
	sync.Mutex
	m map[string]int
}

func activeKey(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return filepath.Clean(p)
}

func track(p string) string {
	k := activeKey(p)
	active.Lock()
	defer active.Unlock()
	if active.m == nil {
		active.m = make(map[string]int)
	}
	active.m[k]++
	return k
}

func untrack(k string) {
	active.Lock()
	defer active.Unlock()
	if active.m[k]--; active.m[k] <= 0 {
		delete(active.m, k)
	}
}

func isActive(p string) bool {
	active.Lock()
	defer active.Unlock()
	return active.m[activeKey(p)] > 0
}
