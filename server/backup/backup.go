// Package backup writes and restores backups of a coordinator's data
// folder, running or not.
//
// A backup (format 1) is one gzip-compressed tar file:
//
//	tendril.db              consistent snapshot of the database (VACUUM INTO)
//	server.crt ...          the coordinator's certificates (public)
//	master.key.sealed ...   master.key and every private key (server*.key,
//	                        signing.key, admin.key), each sealed with
//	                        AES-256-GCM under a key derived from the
//	                        passphrase, the entry's name as additional data
//	calamari/ agent-packages/ files/
//	manifest.json           last, so entries are hashed as they stream:
//	                        versions, KDF parameters and salt, the size and
//	                        SHA-256 of every entry
//	manifest.mac            HMAC-SHA256 of manifest.json under a second key
//	                        derived from the passphrase
//
// The MAC makes the manifest, and through its hashes every entry,
// tamper-evident to whoever holds the passphrase; the hashes alone tell a
// damaged file from a wrong passphrase.
package backup

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/scrypt"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

// Format is the archive format this coordinator writes and the
// newest it reads.
const Format = 1

const (
	manifestName    = "manifest.json"
	manifestMACName = "manifest.mac"
	sealedSuffix    = ".sealed"
	// SnapshotPrefix names database snapshots taken into the data folder
	// for a backup; the dot keeps them apart from the coordinator's files.
	SnapshotPrefix = ".snapshot-"
	// maxSmallEntry bounds the entries read into memory: keys, manifest.
	maxSmallEntry = 4 << 20
)

// Errors of backup and restore, for errors.Is.
var (
	// ErrDamaged means the archive is truncated, corrupt, or not a
	// Tendril backup.
	ErrDamaged = errors.New("backup is damaged")
	// ErrWrongPassphrase means the passphrase does not open the backup.
	// A damaged manifest looks the same, hence the wording.
	ErrWrongPassphrase = errors.New("wrong passphrase or damaged backup")
)

var (
	// backupPlain are the data folder's public files, copied as they are.
	backupPlain = []string{datadir.CertFile, datadir.PrevCertFile, datadir.NextCertFile}
	// backupSecret are sealed under the passphrase: anyone holding them
	// could pose as the coordinator, sign packages, call the API or read
	// secrets at rest.
	backupSecret = []string{datadir.MasterFile, datadir.KeyFile, datadir.PrevKeyFile, datadir.NextKeyFile, datadir.SigningFile, api.AdminKeyFile, datadir.DatabaseFile}
	// backupRequired must be in every backup. The signing key is not: an
	// operator may keep it outside the data folder ("tendril-server
	// signing-key seal"), and then backs it up apart (Result says so).
	backupRequired = []string{datadir.DBFile, datadir.CertFile, datadir.KeyFile, datadir.MasterFile}
	// backupDirs are copied whole; their files are never changed once
	// written (each is named by version or hash), so a copy made while
	// the coordinator runs is consistent.
	backupDirs = []string{"calamari", "agent-packages", "files"}
)

// KDFParams says how the backup's keys are derived from the passphrase.
type KDFParams struct {
	Name string `json:"name"` // "scrypt"
	N    int    `json:"n"`
	R    int    `json:"r"`
	P    int    `json:"p"`
	Salt []byte `json:"salt"`
}

// backupKDF is scrypt's recommended interactive cost (about 100 ms and 32
// MiB): a stolen backup costs an attacker that per guess.
var backupKDF = KDFParams{Name: "scrypt", N: 1 << 15, R: 8, P: 1}

// Manifest describes a backup.
type Manifest struct {
	FormatVersion      int       `json:"format_version"`
	CoordinatorVersion string    `json:"coordinator_version"`
	SchemaVersion      int       `json:"schema_version"`
	CreatedAt          time.Time `json:"created_at"`
	KDF                KDFParams `json:"kdf"`
	Entries            []Entry   `json:"entries"`
}

// Entry is one file of a backup.
type Entry struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Sealed bool   `json:"sealed,omitempty"`
}

var snapshotNamePattern = regexp.MustCompile(`^\.snapshot-[0-9a-f-]{36}\.db$`)

// ValidSnapshotName reports whether name is one TakeSnapshot gives: a
// backup packs only such a file of the data folder, whatever a coordinator
// answers.
func ValidSnapshotName(name string) bool { return snapshotNamePattern.MatchString(name) }

// Snapshotter is a store that can copy itself while in use.
type Snapshotter interface {
	Backup(ctx context.Context, dest string) error
}

// TakeSnapshot writes a consistent copy of the database st into the data
// folder dataDir, for a backup command to pack and then delete. version is
// the coordinator's, recorded in the snapshot's description.
func TakeSnapshot(ctx context.Context, st Snapshotter, dataDir, version string) (api.Snapshot, error) {
	// A backup command that died leaves its snapshot behind; an hour is
	// far longer than packing one takes.
	removeStaleSnapshots(dataDir, time.Hour)
	name := SnapshotPrefix + uuid.NewString() + ".db"
	if err := st.Backup(ctx, filepath.Join(dataDir, name)); err != nil {
		return api.Snapshot{}, fmt.Errorf("take snapshot: %w", err)
	}
	return api.Snapshot{Name: name, SchemaVersion: sqlstore.SchemaVersion, Version: version}, nil
}

// RemoveLeftSnapshots removes the snapshots an earlier coordinator process
// left in the data folder dir: one killed while it took a snapshot, or
// before the backup command that asked for it removed it. A coordinator
// calls it as it starts, before it takes any of its own; a backup command
// still packing one holds it open, and finishes. It returns how many it
// removed.
func RemoveLeftSnapshots(dir string) int {
	return removeStaleSnapshots(dir, 0)
}

func removeStaleSnapshots(dir string, age time.Duration) int {
	n := 0
	ms, _ := filepath.Glob(filepath.Join(dir, SnapshotPrefix+"*"))
	for _, m := range ms {
		if st, err := os.Stat(m); err == nil && time.Since(st.ModTime()) >= age && os.Remove(m) == nil {
			n++
		}
	}
	return n
}

// RunningCoordinator reports whether a coordinator is running with data
// folder dir: its run file is there and names a live process.
func RunningCoordinator(dir string) (api.RunInfo, bool) {
	ri, err := api.ReadRunInfo(dir)
	if err != nil || ri.PID <= 0 {
		return api.RunInfo{}, false
	}
	return ri, processAlive(ri.PID)
}

// Options configures Backup.
type Options struct {
	DataDir    string
	Out        string // the archive to write; must not exist
	Passphrase []byte
	// Version is this program's version, recorded when Backup takes the
	// snapshot itself.
	Version string
	// Snapshot asks the coordinator running with DataDir for a snapshot.
	// nil means none runs: Backup opens the database itself.
	Snapshot func(ctx context.Context) (api.Snapshot, error)
}

// Result describes a written backup.
type Result struct {
	Out      string   `json:"out"`
	Size     int64    `json:"size"`
	Manifest Manifest `json:"manifest"`
	// NoSigningKey is true when the data folder holds no signing key (it
	// is kept elsewhere): the backup does not hold it either.
	NoSigningKey bool `json:"no_signing_key,omitempty"`
}

// Backup writes one archive of the coordinator in DataDir, running or
// not. The database snapshot is taken first and the folders copied after:
// every bundle, package or file the snapshot refers to was stored before
// its record, so it is in the archive.
func Backup(ctx context.Context, opts Options) (Result, error) {
	res, err := backup(ctx, opts)
	if err != nil {
		return Result{}, fmt.Errorf("back up %s: %w", opts.DataDir, err)
	}
	return res, nil
}

func backup(ctx context.Context, opts Options) (Result, error) {
	if len(opts.Passphrase) == 0 {
		return Result{}, kind.Errorf(kind.ErrBadRequest, "the passphrase is empty")
	}
	if _, err := datadir.LoadIdentity(opts.DataDir); err != nil {
		return Result{}, err
	}
	if _, err := os.Lstat(opts.Out); err == nil {
		return Result{}, kind.Errorf(kind.ErrConflict, "%s already exists; give a new file name", opts.Out)
	}
	m := Manifest{FormatVersion: Format, CreatedAt: time.Now().UTC().Truncate(time.Second), KDF: backupKDF}
	var snapPath string
	if opts.Snapshot != nil {
		sn, err := opts.Snapshot(ctx)
		if err != nil {
			return Result{}, err
		}
		if !ValidSnapshotName(sn.Name) {
			return Result{}, fmt.Errorf("the coordinator named its snapshot %q, which is not a snapshot file name", sn.Name)
		}
		snapPath = filepath.Join(opts.DataDir, sn.Name)
		m.SchemaVersion, m.CoordinatorVersion = sn.SchemaVersion, sn.Version
	} else {
		st, err := sqlstore.OpenSQLite(ctx, filepath.Join(opts.DataDir, datadir.DBFile))
		if err != nil {
			return Result{}, err
		}
		snapPath = filepath.Join(opts.DataDir, SnapshotPrefix+uuid.NewString()+".db")
		err = st.Backup(ctx, snapPath)
		st.Close()
		if err != nil {
			return Result{}, err
		}
		m.SchemaVersion, m.CoordinatorVersion = sqlstore.SchemaVersion, opts.Version
	}
	defer os.Remove(snapPath)

	m.KDF.Salt = make([]byte, 16)
	rand.Read(m.KDF.Salt)
	keys, err := deriveBackupKeys(opts.Passphrase, m.KDF)
	if err != nil {
		return Result{}, err
	}

	tmp, err := os.CreateTemp(filepath.Dir(opts.Out), "."+filepath.Base(opts.Out)+".tmp-*")
	if err != nil {
		return Result{}, err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	defer tmp.Close()
	if err := tmp.Chmod(0o600); err != nil {
		return Result{}, err
	}
	gz, _ := gzip.NewWriterLevel(tmp, gzip.BestSpeed) // bundles are compressed already
	w := &archiveWriter{tw: tar.NewWriter(gz), mtime: m.CreatedAt}

	if err := w.addFile(datadir.DBFile, snapPath); err != nil {
		return Result{}, err
	}
	for _, name := range backupPlain {
		if err := w.addFile(name, filepath.Join(opts.DataDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Result{}, err
		}
	}
	for _, name := range backupSecret {
		b, err := os.ReadFile(filepath.Join(opts.DataDir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return Result{}, err
		}
		if err := w.addBytes(name+sealedSuffix, keys.seal(b, name+sealedSuffix), true); err != nil {
			return Result{}, err
		}
	}
	for _, d := range backupDirs {
		if err := w.addDir(ctx, opts.DataDir, d); err != nil {
			return Result{}, err
		}
	}
	names := map[string]bool{}
	for _, e := range w.entries {
		names[e.Name] = true
	}
	for _, r := range backupRequired {
		if !names[r] && !names[r+sealedSuffix] {
			return Result{}, fmt.Errorf("%s is missing from the data folder", r)
		}
	}
	noSigningKey := !names[datadir.SigningFile+sealedSuffix]
	m.Entries = w.entries
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Result{}, err
	}
	if err := w.addBytes(manifestName, mb, false); err != nil {
		return Result{}, err
	}
	if err := w.addBytes(manifestMACName, []byte(hex.EncodeToString(keys.mac(mb))+"\n"), false); err != nil {
		return Result{}, err
	}
	if err := w.tw.Close(); err != nil {
		return Result{}, err
	}
	if err := gz.Close(); err != nil {
		return Result{}, err
	}
	if err := tmp.Sync(); err != nil {
		return Result{}, err
	}
	st, err := tmp.Stat()
	if err != nil {
		return Result{}, err
	}
	if err := tmp.Close(); err != nil {
		return Result{}, err
	}
	if err := os.Rename(tmp.Name(), opts.Out); err != nil {
		return Result{}, err
	}
	syncDir(filepath.Dir(opts.Out))
	m.Entries = w.entries
	return Result{Out: opts.Out, Size: st.Size(), Manifest: m, NoSigningKey: noSigningKey}, nil
}

// archiveWriter adds entries to the tar and records them for the manifest.
type archiveWriter struct {
	tw      *tar.Writer
	mtime   time.Time
	entries []Entry
}

func (w *archiveWriter) header(name string, size int64) error {
	return w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: w.mtime, Format: tar.FormatPAX})
}

func (w *archiveWriter) addBytes(name string, b []byte, sealed bool) error {
	if err := w.header(name, int64(len(b))); err != nil {
		return err
	}
	if _, err := w.tw.Write(b); err != nil {
		return err
	}
	if name != manifestName && name != manifestMACName {
		sum := sha256.Sum256(b)
		w.entries = append(w.entries, Entry{Name: name, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:]), Sealed: sealed})
	}
	return nil
}

// addFile streams one file, hashing it on the way. The size is taken from
// the open file, so a file replaced meanwhile (by rename) is still read
// whole.
func (w *archiveWriter) addFile(name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := w.header(name, st.Size()); err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(w.tw, h), f, st.Size()); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	w.entries = append(w.entries, Entry{Name: name, Size: st.Size(), SHA256: hex.EncodeToString(h.Sum(nil))})
	return nil
}

// addDir adds every regular file under root/dir, skipping dot files:
// uploads in progress and temporary files.
func (w *archiveWriter) addDir(ctx context.Context, root, dir string) error {
	err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		return w.addFile(filepath.ToSlash(rel), p)
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing uploaded yet
	}
	return err
}

// backupKeys are derived from the passphrase: one seals the secrets, the
// other authenticates the manifest.
type backupKeys struct {
	aead   cipher.AEAD
	macKey []byte
}

func deriveBackupKeys(passphrase []byte, p KDFParams) (*backupKeys, error) {
	// Bounds keep a crafted manifest from asking for gigabytes of memory.
	if p.Name != "scrypt" || p.N < 2 || p.N > 1<<20 || p.N&(p.N-1) != 0 || p.R < 1 || p.R > 32 || p.P < 1 || p.P > 16 || len(p.Salt) < 8 {
		return nil, kind.Errorf(ErrDamaged, "%v: key derivation parameters %s N=%d r=%d p=%d are not ones Tendril writes", ErrDamaged, p.Name, p.N, p.R, p.P)
	}
	k, err := scrypt.Key(passphrase, p.Salt, p.N, p.R, p.P, 64)
	if err != nil {
		return nil, fmt.Errorf("derive backup key: %w", err)
	}
	block, err := aes.NewCipher(k[:32])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &backupKeys{aead: aead, macKey: k[32:]}, nil
}

// seal returns nonce || ciphertext. The entry's name is authenticated
// too, so sealed entries cannot be swapped for one another.
func (k *backupKeys) seal(plain []byte, name string) []byte {
	nonce := make([]byte, k.aead.NonceSize())
	rand.Read(nonce)
	return k.aead.Seal(nonce, nonce, plain, []byte(name))
}

func (k *backupKeys) open(sealed []byte, name string) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(sealed) < ns {
		return nil, kind.Errorf(ErrWrongPassphrase, "%v (%s is too short)", ErrWrongPassphrase, name)
	}
	plain, err := k.aead.Open(nil, sealed[:ns], sealed[ns:], []byte(name))
	if err != nil {
		return nil, kind.Errorf(ErrWrongPassphrase, "%v (%s does not open)", ErrWrongPassphrase, name)
	}
	return plain, nil
}

func (k *backupKeys) mac(b []byte) []byte {
	m := hmac.New(sha256.New, k.macKey)
	m.Write(b)
	return m.Sum(nil)
}

// RestoreOptions configures Restore.
type RestoreOptions struct {
	In         string
	DataDir    string
	Passphrase []byte
	// Force replaces a folder that is not empty. A running coordinator's
	// folder is refused regardless.
	Force bool
}

// RestoreResult describes a restored coordinator.
type RestoreResult struct {
	DataDir    string   `json:"data_dir"`
	Thumbprint string   `json:"thumbprint"`
	Manifest   Manifest `json:"manifest"`
}

// Restore unpacks a backup into DataDir. Everything is written and checked
// in a temporary folder beside DataDir, which is renamed into place last,
// so a restore that fails leaves DataDir as it was.
func Restore(ctx context.Context, opts RestoreOptions) (RestoreResult, error) {
	res, err := restore(ctx, opts)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore %s into %s: %w", opts.In, opts.DataDir, err)
	}
	return res, nil
}

// restoredEntry is an entry as read from the archive.
type restoredEntry struct {
	size int64
	sum  string
	data []byte // small entries (sealed, manifest) are kept in memory
}

func restore(ctx context.Context, opts RestoreOptions) (RestoreResult, error) {
	if len(opts.Passphrase) == 0 {
		return RestoreResult{}, kind.Errorf(kind.ErrBadRequest, "the passphrase is empty")
	}
	target, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return RestoreResult{}, err
	}
	if ri, running := RunningCoordinator(target); running {
		return RestoreResult{}, kind.Errorf(kind.ErrConflict, "a coordinator (PID %d) is running with data folder %s; stop the coordinator first", ri.PID, opts.DataDir)
	}
	existing, err := os.ReadDir(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return RestoreResult{}, err
	case len(existing) > 0 && !opts.Force:
		return RestoreResult{}, kind.Errorf(kind.ErrConflict, "%s is not empty; restore into an empty or new folder, or give --force to replace what is in it", opts.DataDir)
	}
	parent := filepath.Dir(target)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return RestoreResult{}, err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(target)+".restore-*")
	if err != nil {
		return RestoreResult{}, err
	}
	defer os.RemoveAll(tmp) // after the rename, a no-op

	got, err := unpack(ctx, opts.In, tmp)
	if err != nil {
		return RestoreResult{}, err
	}
	m, keys, err := checkManifest(got, opts.Passphrase)
	if err != nil {
		return RestoreResult{}, err
	}
	for _, e := range m.Entries {
		if !e.Sealed {
			continue
		}
		plain, err := keys.open(got[e.Name].data, e.Name)
		if err != nil {
			return RestoreResult{}, err
		}
		if err := writeSynced(filepath.Join(tmp, strings.TrimSuffix(e.Name, sealedSuffix)), plain); err != nil {
			return RestoreResult{}, err
		}
	}
	thumb, err := datadir.ReadThumbprint(tmp)
	if err != nil {
		return RestoreResult{}, kind.Errorf(ErrDamaged, "%v: its certificate and key do not load: %v", ErrDamaged, err)
	}
	syncDir(tmp)
	if err := replaceDir(target, tmp, len(existing) > 0); err != nil {
		return RestoreResult{}, err
	}
	return RestoreResult{DataDir: opts.DataDir, Thumbprint: thumb, Manifest: m}, nil
}

// unpack extracts the archive into dir, keeping small entries in memory,
// and returns what it read. Nothing is trusted yet.
func unpack(ctx context.Context, in, dir string) (map[string]*restoredEntry, error) {
	f, err := os.Open(in)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	damaged := func(format string, args ...any) error {
		return kind.Errorf(ErrDamaged, "%v: %s", ErrDamaged, fmt.Sprintf(format, args...))
	}
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, damaged("not a gzip file (%v)", err)
	}
	tr := tar.NewReader(gz)
	got := map[string]*restoredEntry{}
	for {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, damaged("truncated or corrupt (%v)", err)
		}
		name := hdr.Name
		if hdr.Typeflag != tar.TypeReg || !allowedEntry(name) {
			return nil, damaged("unexpected entry %q", name)
		}
		if got[name] != nil {
			return nil, damaged("entry %q appears twice", name)
		}
		e := &restoredEntry{size: hdr.Size}
		h := sha256.New()
		if small := strings.HasSuffix(name, sealedSuffix) || name == manifestName || name == manifestMACName; small {
			if hdr.Size > maxSmallEntry {
				return nil, damaged("entry %q is %d bytes", name, hdr.Size)
			}
			if e.data, err = io.ReadAll(tr); err != nil {
				return nil, damaged("truncated or corrupt (%v)", err)
			}
			h.Write(e.data)
		} else if err := extract(tr, filepath.Join(dir, filepath.FromSlash(name)), h); err != nil {
			return nil, damaged("truncated or corrupt (%v)", err)
		}
		e.sum = hex.EncodeToString(h.Sum(nil))
		got[name] = e
	}
	// The tar ends before gzip's trailer: read on, so that a cut or
	// corrupt end is noticed by its checksum.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return nil, damaged("truncated or corrupt (%v)", err)
	}
	return got, nil
}

// allowedEntry accepts only names a backup contains, so that no entry can
// write outside the folder or over something it should not.
func allowedEntry(name string) bool {
	if !fs.ValidPath(name) || strings.Contains(name, `\`) || path.Clean(name) != name {
		return false
	}
	switch name {
	case datadir.DBFile, manifestName, manifestMACName:
		return true
	}
	for _, n := range backupPlain {
		if name == n {
			return true
		}
	}
	for _, n := range backupSecret {
		if name == n+sealedSuffix {
			return true
		}
	}
	for _, d := range backupDirs {
		if rest, ok := strings.CutPrefix(name, d+"/"); ok && rest != "" {
			for _, part := range strings.Split(rest, "/") {
				if strings.HasPrefix(part, ".") {
					return false
				}
			}
			return true
		}
	}
	return false
}

func extract(r io.Reader, dest string, h hash.Hash) error {
	if err := os.MkdirAll(filepath.Dir(dest), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.MultiWriter(f, h), r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkManifest authenticates the manifest with the passphrase, refuses
// what this coordinator cannot run, and matches every entry against it.
func checkManifest(got map[string]*restoredEntry, passphrase []byte) (Manifest, *backupKeys, error) {
	damaged := func(format string, args ...any) error {
		return kind.Errorf(ErrDamaged, "%v: %s", ErrDamaged, fmt.Sprintf(format, args...))
	}
	me, mace := got[manifestName], got[manifestMACName]
	if me == nil || mace == nil {
		return Manifest{}, nil, damaged("it has no %s (truncated, or not a Tendril backup)", manifestName)
	}
	var m Manifest
	if err := json.Unmarshal(me.data, &m); err != nil {
		return Manifest{}, nil, damaged("%s: %v", manifestName, err)
	}
	keys, err := deriveBackupKeys(passphrase, m.KDF)
	if err != nil {
		return Manifest{}, nil, err
	}
	want, err := hex.DecodeString(strings.TrimSpace(string(mace.data)))
	if err != nil || !hmac.Equal(want, keys.mac(me.data)) {
		return Manifest{}, nil, kind.Errorf(ErrWrongPassphrase, "%v", ErrWrongPassphrase)
	}
	if m.FormatVersion > Format {
		return Manifest{}, nil, kind.Errorf(kind.ErrConflict, "backup format %d is newer than this coordinator reads (%d); restore it with a newer coordinator", m.FormatVersion, Format)
	}
	if m.SchemaVersion > sqlstore.SchemaVersion {
		return Manifest{}, nil, kind.Errorf(store.ErrSchemaTooNew, "backup is from a newer coordinator (schema %d > %d); restore it with version %s or newer",
			m.SchemaVersion, sqlstore.SchemaVersion, m.CoordinatorVersion)
	}
	listed := map[string]bool{}
	for _, e := range m.Entries {
		g := got[e.Name]
		if g == nil {
			return Manifest{}, nil, damaged("entry %s is missing (truncated?)", e.Name)
		}
		if g.size != e.Size || g.sum != e.SHA256 {
			return Manifest{}, nil, damaged("entry %s does not match its SHA-256 in the manifest", e.Name)
		}
		if e.Sealed != strings.HasSuffix(e.Name, sealedSuffix) {
			return Manifest{}, nil, damaged("entry %s is marked wrongly as sealed or not", e.Name)
		}
		listed[e.Name] = true
	}
	for name := range got {
		if !listed[name] && name != manifestName && name != manifestMACName {
			return Manifest{}, nil, damaged("entry %s is not in the manifest", name)
		}
	}
	for _, r := range backupRequired {
		if !listed[r] && !listed[r+sealedSuffix] {
			return Manifest{}, nil, damaged("%s is missing", r)
		}
	}
	return m, keys, nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// replaceDir puts the folder staged at tmp in target's place. A target
// with content (--force) is moved aside first and put back if the rename
// fails, then removed.
func replaceDir(target, tmp string, hasContent bool) error {
	var aside string
	if _, err := os.Lstat(target); err == nil {
		if hasContent {
			aside = tmp + ".old"
			if err := os.Rename(target, aside); err != nil {
				return err
			}
		} else if err := os.Remove(target); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, target); err != nil {
		if aside != "" {
			os.Rename(aside, target)
		}
		return err
	}
	syncDir(filepath.Dir(target))
	if aside != "" {
		os.RemoveAll(aside)
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: not every system syncs folders
		d.Close()
	}
}
