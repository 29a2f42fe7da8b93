package bundle

import (
	"bytes"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// DefaultMaxAge is how long a Verifier trusts a file it hashed, while the
// file stays unchanged, before it reads the file again.
const DefaultMaxAge = time.Hour

// Verifier is Verify and Scan with a memory of what was hashed. A listed
// file whose size, modification time, change time and inode are what they
// were when its content last matched the manifest is not read again, for
// up to MaxAge. Antivirus quarantine, a partial delete, an overwrite, a
// chmod or a rename all change the change time or the inode, which no
// program can set back; the full re-read every MaxAge covers the rest.
//
// Before it, every health check and every task re-hashed every installed
// file: a task's start waited on hashing its Calamari bundle, and each
// health check cost agents CPU in proportion to what they had installed.
// On systems whose file information carries no change time and inode
// (Windows), a Verifier hashes every time, like Verify.
type Verifier struct {
	// MaxAge bounds how long a hashed file is trusted unread. 0 means
	// DefaultMaxAge.
	MaxAge time.Duration

	mu        sync.Mutex
	files     map[string]hashed        // by absolute path
	manifests map[string]knownManifest // by version folder
	now       func() time.Time         // tests move time
	reads     int                      // files hashed, for tests
	checks    int                      // signatures checked, for tests
}

// knownManifest is a version folder's manifest as its signature was
// checked and it was parsed: the same bytes, signed by the same key, need
// neither again. Every task verifies its Calamari version before it
// starts, and the signature check and parse were half of that (0.14 ms).
type knownManifest struct {
	key      string
	raw, sig []byte
	m        Manifest
}

// hashed is one file whose content matched the manifest.
type hashed struct {
	id     fileID
	sha256 string
	at     time.Time
}

// fileID is what changes when a file's content may have changed.
type fileID struct {
	size         int64
	mtime, ctime int64 // nanoseconds
	dev, ino     uint64
}

// Verify is Verify, skipping the hash of files known to be unchanged.
func (v *Verifier) Verify(dir, publicKeyHex string) (Manifest, error) {
	return verifyWith(dir, publicKeyHex, v)
}

// Scan is Scan, skipping the hash of files known to be unchanged.
func (v *Verifier) Scan(calamariDir, publicKeyHex string) []Status {
	return scanWith(calamariDir, publicKeyHex, v)
}

// fresh reports whether the file at path, as st describes it, was hashed
// with this content before, recently enough to trust.
func (v *Verifier) fresh(path string, st fs.FileInfo, sha256 string) bool {
	if v == nil {
		return false
	}
	id, ok := identify(st)
	if !ok {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	h, found := v.files[path]
	return found && h.id == id && h.sha256 == sha256 && v.clock().Sub(h.at) < v.maxAge()
}

// hashedFile counts a file read and remembers that its content, as st
// described it before the read, matched sha256.
func (v *Verifier) hashedFile(path string, st fs.FileInfo, sha256 string) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.reads++
	id, ok := identify(st)
	if !ok {
		return
	}
	if v.files == nil {
		v.files = make(map[string]hashed)
	}
	v.files[path] = hashed{id: id, sha256: sha256, at: v.clock()}
}

// learn remembers the files of m that Commit just installed into dir,
// hashed as they were written and identified by ids once synced: the
// Verify that follows an install (the coordinator's health check) need
// not read back what was just written and verified.
func (v *Verifier) learn(dir string, m Manifest, ids map[string]fileID) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.files == nil {
		v.files = make(map[string]hashed)
	}
	now := v.clock()
	for _, f := range m.Files {
		if id, ok := ids[f.Path]; ok {
			v.files[filepath.Join(dir, filepath.FromSlash(f.Path))] = hashed{id: id, sha256: f.SHA256, at: now}
		}
	}
}

// knownManifest returns the manifest of dir if raw and sig are the bytes
// whose signature by key was checked before.
func (v *Verifier) knownManifest(dir, key string, raw, sig []byte) (Manifest, bool) {
	if v == nil {
		return Manifest{}, false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	k, ok := v.manifests[dir]
	if !ok || k.key != key || !bytes.Equal(k.raw, raw) || !bytes.Equal(k.sig, sig) {
		return Manifest{}, false
	}
	return k.m.clone(), true
}

// learnManifest remembers the manifest of dir, its signature by key checked.
func (v *Verifier) learnManifest(dir, key string, raw, sig []byte, m Manifest) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.checks++
	if v.manifests == nil {
		v.manifests = make(map[string]knownManifest)
	}
	v.manifests[dir] = knownManifest{key: key, raw: slices.Clone(raw), sig: slices.Clone(sig), m: m.clone()}
}

// Forget drops what is known of the files under dir: a version that
// failed to verify, or was removed, is read whole next time.
func (v *Verifier) Forget(dir string) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.manifests, dir)
	prefix := dir + string(os.PathSeparator)
	for p := range v.files {
		if len(p) > len(prefix) && p[:len(prefix)] == prefix {
			delete(v.files, p)
		}
	}
}

func (v *Verifier) clock() time.Time {
	if v.now != nil {
		return v.now()
	}
	return time.Now()
}

func (v *Verifier) maxAge() time.Duration {
	if v.MaxAge > 0 {
		return v.MaxAge
	}
	return DefaultMaxAge
}

// clone is m with slices and maps of its own, so that a caller changing
// what it was given does not change what the Verifier remembers.
func (m Manifest) clone() Manifest {
	m.Entrypoints = maps.Clone(m.Entrypoints)
	m.Files = slices.Clone(m.Files)
	return m
}
