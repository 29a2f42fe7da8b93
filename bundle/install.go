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
//
// Install is Stage followed by Commit.
func Install(ctx context.Context, r io.Reader, calamariDir, publicKeyHex string, sig []byte, lim Limits) (Manifest, error) {
	s, err := Stage(ctx, r, calamariDir, publicKeyHex, sig, lim)
	if err != nil {
		return Manifest{}, err
	}
	defer s.Abort()
	return s.Commit(nil)
}

// Staged is a bundle that Stage extracted, verified and synced into a
// temporary folder (Success.txt included) but did not install yet: Commit
// renames it to its version, Abort removes it. It lets a receiver extract
// a bundle while its bytes arrive and install it only once the bytes as a
// whole proved to be the ones announced.
type Staged struct {
	m                       Manifest
	calamariDir, final, tmp string
	publicKeyHex            string
	// have is set when the version already verified: Commit returns it.
	have    bool
	tracked string // the temporary folder's key in active
	// ids is what each written file was when synced, by path inside the
	// version folder, for a Verifier to trust without reading it back.
	ids  map[string]fileID
	done bool
}

// Stage is Install up to, and not including, the rename that installs the
// bundle: it reads r to its end (unless the version already verifies, see
// Install), checks the signature before any file is written and every
// file as it is written, and leaves a synced temporary folder. The caller
// calls Commit or Abort (Abort after Commit does nothing). Errors are
// Install's.
func Stage(ctx context.Context, r io.Reader, calamariDir, publicKeyHex string, sig []byte, lim Limits) (*Staged, error) {
	a, err := openArchive(r, lim.withDefaults())
	if err != nil {
		return nil, fmt.Errorf("install bundle: %w", err)
	}
	m, raw, err := a.readManifest()
	if err != nil {
		return nil, fmt.Errorf("install bundle: %w", err)
	}
	if err := VerifySignature(publicKeyHex, raw, sig); err != nil {
		return nil, fmt.Errorf("install bundle %s %s: %w", m.Name, m.Version, err)
	}
	s := &Staged{m: m, calamariDir: calamariDir, final: filepath.Join(calamariDir, m.Version), publicKeyHex: publicKeyHex}
	if have, err := Verify(s.final, publicKeyHex); err == nil {
		s.m, s.have = have, true
		return s, nil
	}
	if err := s.stage(ctx, a, raw, sig); err != nil {
		s.Abort()
		return nil, fmt.Errorf("install bundle %s %s into %s: %w", m.Name, m.Version, calamariDir, err)
	}
	return s, nil
}

// Manifest is the staged bundle's manifest, its signature verified.
func (s *Staged) Manifest() Manifest { return s.m }

func (s *Staged) stage(ctx context.Context, a *archive, raw, sig []byte) error {
	m := s.m
	if err := os.MkdirAll(s.calamariDir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(s.calamariDir, tempPrefix+m.Version+"-*")
	if err != nil {
		return err
	}
	s.tmp, s.tracked = tmp, track(tmp)
	// MkdirTemp makes 0700; an installed bundle is readable like any program.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return err
	}
	defer root.Close()
	ds := &dirSink{root: root, dirs: make(map[string]bool), ids: make(map[string]fileID)}
	if err := a.extract(ctx, m, ds); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := writeSynced(root, ManifestName, raw); err != nil {
		return err
	}
	if err := writeSynced(root, SignatureName, sig); err != nil {
		return err
	}
	if err := ds.syncDirs(); err != nil {
		return err
	}
	// The marker goes last, and the rename only after it is durable: a
	// folder named after its version always holds verified files.
	marker := fmt.Sprintf("%s %s\ninstalled %s\n", m.Name, m.Version, time.Now().UTC().Format(time.RFC3339))
	if err := writeSynced(root, SuccessName, []byte(marker)); err != nil {
		return err
	}
	if err := syncDir(root, "."); err != nil {
		return err
	}
	// Windows cannot rename a folder while a handle to it is open.
	if err := root.Close(); err != nil {
		return err
	}
	s.ids = ds.ids
	return nil
}

// Commit installs the staged bundle: it renames the temporary folder to
// the version (replacing a folder of that version that does not verify)
// and returns the manifest. If v is not nil, it learns the files just
// written and verified, so that its next Verify of this version does not
// read them back. After Commit, with or without error, the Staged is
// spent.
func (s *Staged) Commit(v *Verifier) (Manifest, error) {
	if s.done {
		return Manifest{}, errors.New("install bundle: already committed or aborted")
	}
	if s.have {
		s.done = true
		return s.m, nil
	}
	m, err := s.commit(v)
	s.Abort()
	if err != nil {
		return Manifest{}, fmt.Errorf("install bundle %s %s into %s: %w", s.m.Name, s.m.Version, s.calamariDir, err)
	}
	return m, nil
}

func (s *Staged) commit(v *Verifier) (Manifest, error) {
	if have, done, err := replace(s.calamariDir, s.final, s.publicKeyHex); err != nil || done {
		return have, err
	}
	if err := os.Rename(s.tmp, s.final); err != nil {
		// Another Install of the same version may have won the race.
		if have, verr := Verify(s.final, s.publicKeyHex); verr == nil {
			return have, nil
		}
		return Manifest{}, err
	}
	s.tmp = "" // installed: nothing left to remove
	v.learn(s.final, s.m, s.ids)
	if err := syncPath(s.calamariDir); err != nil {
		return Manifest{}, err
	}
	return s.m, nil
}

// Abort removes the temporary folder of a bundle not committed. It is
// idempotent, and does nothing after Commit.
func (s *Staged) Abort() {
	s.done = true
	if s.tmp != "" {
		os.RemoveAll(s.tmp)
		s.tmp = ""
	}
	if s.tracked != "" {
		untrack(s.tracked)
		s.tracked = ""
	}
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
	// ids is what each file was once synced, by manifest path: Commit
	// hands them to a Verifier.
	ids map[string]fileID
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
	return &extractFile{f: fh, path: f.Path, ids: s.ids}, nil
}

// writebackEvery is how many written bytes of an extracted file are handed
// to the disk at a time while the rest still arrives (see startWriteback).
const writebackEvery = 8 << 20

// extractFile is one file being extracted. It starts writing its bytes to
// disk as they come, so that the sync at Close, which the install waits
// for, finds little left to write; Close syncs and records the file's
// identity for Commit.
type extractFile struct {
	f          *os.File
	path       string
	ids        map[string]fileID
	n, flushed int64
}

func (e *extractFile) Write(p []byte) (int, error) {
	n, err := e.f.Write(p)
	e.n += int64(n)
	if e.n-e.flushed >= writebackEvery {
		startWriteback(e.f, e.flushed, e.n-e.flushed)
		e.flushed = e.n
	}
	return n, err
}

func (e *extractFile) Close() error {
	if err := e.f.Sync(); err != nil {
		e.f.Close()
		return err
	}
	// What the file is once synced: only a change after this, which
	// changes its change time, makes a Verifier read it again.
	if st, err := e.f.Stat(); err == nil {
		if id, ok := identify(st); ok {
			e.ids[e.path] = id
		}
	}
	return e.f.Close()
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
