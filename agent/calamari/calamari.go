// Package calamari keeps the Calamari bundles of an agent in
// <home>/Calamari: it verifies installed versions, receives pushed bundles
// (resuming a transfer that a broken connection cut), installs them
// through package bundle, and prunes old versions.
//
// Nothing here trusts a folder because it exists: a version counts as
// installed only when bundle.Verify accepts it (marker, signature, every
// file's hash), and that is checked again before every use.
package calamari

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/agent/internal/keylock"
	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/protocol"
)

// DefaultKeep is how many versions Prune keeps when Config.Keep is 0.
const DefaultKeep = 3

// partialDir holds the bytes of pushes not yet complete, one file per
// bundle SHA-256. It is a dot-folder, which bundle.Scan skips.
const partialDir = ".partial"

// stalePartial is the age after which a partial push nobody resumed is
// removed: the coordinator resumes within minutes or has given up.
const stalePartial = 7 * 24 * time.Hour

// Errors that mean the request or the bundle is at fault rather than the
// agent; the coordinator gets them as bad requests. Bundle faults are the
// bundle package's sentinels (ErrBadSignature, ErrCorrupt, ...) and a
// transfer whose bytes do not match their header is protocol.ErrTransfer.
var (
	// ErrInvalidVersion means a version string that cannot name a folder.
	ErrInvalidVersion = errors.New("invalid Calamari version")
	// ErrInvalidTransfer means a transfer header that cannot be right.
	ErrInvalidTransfer = errors.New("invalid transfer header")
	// ErrVersionMismatch means the bundle's manifest names another version
	// than the push did.
	ErrVersionMismatch = errors.New("bundle version differs from the pushed version")
)

// IsBadRequest reports whether err blames the request or the bundle
// rather than the agent: a wrong signature, an unsafe or corrupt archive,
// bytes that do not match their header, an invalid version.
func IsBadRequest(err error) bool {
	for _, target := range []error{
		ErrInvalidVersion, ErrInvalidTransfer, ErrVersionMismatch, protocol.ErrTransfer,
		bundle.ErrInvalidManifest, bundle.ErrBadSignature, bundle.ErrUnsafeArchive, bundle.ErrCorrupt,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// Config describes a Store.
type Config struct {
	// Dir is the Calamari folder, <home>/Calamari. Required.
	Dir string
	// SigningKey is the coordinator's hex Ed25519 public key that every
	// bundle must be signed with.
	SigningKey string
	// Keep is how many versions to keep when pruning after an install.
	// Default DefaultKeep.
	Keep int
	// InUse returns the versions running tasks use; they are never pruned.
	// Default: none.
	InUse func() []string
	// Logger receives what goes wrong outside a request's reply (a failed
	// prune); it is named "calamari". Default: discard.
	Logger *zap.Logger
}

// Store is the Calamari folder of an agent. Its methods are safe for
// concurrent use.
type Store struct {
	cfg Config
	log *zap.Logger
	// pushing serialises pushes per version and per bundle hash: one
	// receive per partial file, and one install per version folder.
	pushing keylock.Map
	// verifier re-hashes only files that changed since they last
	// verified (or every hour): every health check and every task start
	// verifies what it relies on.
	verifier bundle.Verifier
	// key is the signing key in force: Config.SigningKey until
	// SetSigningKey.
	key atomic.Pointer[string]
}

// New returns the store for cfg.Dir, creating the folder if missing.
func New(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("calamari store: no folder given")
	}
	if cfg.Keep < 0 {
		return nil, fmt.Errorf("calamari store: Keep is negative (%d)", cfg.Keep)
	}
	if cfg.Keep == 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.InUse == nil {
		cfg.InUse = func() []string { return nil }
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	// Calamari holds tools that deployments run, not secrets: readable by
	// others like any installed program.
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("calamari store: %w", err)
	}
	st := &Store{cfg: cfg, log: cfg.Logger.Named("calamari")}
	st.key.Store(&cfg.SigningKey)
	return st, nil
}

// SetSigningKey sets the key bundles are verified against from now on. A
// listening agent learns it from its coordinator's first Welcome, over
// the session whose certificate it pinned.
func (s *Store) SetSigningKey(key string) { s.key.Store(&key) }

// SigningKey is the key bundles are verified against now.
func (s *Store) SigningKey() string { return *s.key.Load() }

// ValidateVersion checks that v is a full semantic version without a
// leading "v", which is also what makes it a safe folder name: no path
// separators, no leading dot, nothing any system would alter.
func ValidateVersion(v string) error {
	if !bundle.ValidVersion(v) {
		return fmt.Errorf("%w %q: want a semantic version such as 1.2.3", ErrInvalidVersion, v)
	}
	return nil
}

func (s *Store) versionDir(v string) string { return filepath.Join(s.cfg.Dir, v) }

// Verify checks that version v is installed and intact, and returns its
// manifest.
func (s *Store) Verify(v string) (bundle.Manifest, error) {
	if err := ValidateVersion(v); err != nil {
		return bundle.Manifest{}, err
	}
	return s.verifier.Verify(s.versionDir(v), s.SigningKey())
}

// Check answers a CalamariCheck: whether v is installed and intact, and if
// not, why, in words fit for a task log.
func (s *Store) Check(v string) (protocol.CalamariState, error) {
	if err := ValidateVersion(v); err != nil {
		return protocol.CalamariState{}, err
	}
	st := protocol.CalamariState{Version: v, Installed: true}
	if _, err := s.Verify(v); err != nil {
		st.Installed = false
		st.Problem = s.problem(v, err)
	}
	return st, nil
}

// problem is the short reason a version is not usable, without the folder
// path every reader of the report already knows.
func (s *Store) problem(v string, err error) string {
	if errors.Is(err, bundle.ErrNotInstalled) {
		return "not installed"
	}
	return strings.TrimPrefix(err.Error(), "verify bundle "+s.versionDir(v)+": ")
}

// Scan verifies every version present: the usable ones newest first, and
// one line "version: reason" for each of the rest (what antivirus
// quarantine or a damaged disk leaves behind).
func (s *Store) Scan() (versions, problems []string) {
	versions = []string{} // "none" is an empty list on the wire, not null
	for _, st := range s.verifier.Scan(s.cfg.Dir, s.SigningKey()) {
		if st.Err == nil {
			versions = append(versions, st.Version)
			continue
		}
		problems = append(problems, st.Version+": "+s.problem(st.Version, st.Err))
	}
	return versions, problems
}

// Entrypoint verifies version v and returns the absolute path of its entry
// point for this machine's OS and architecture.
func (s *Store) Entrypoint(v string) (string, error) {
	m, err := s.Verify(v)
	if err != nil {
		return "", err
	}
	rel, err := m.Entrypoint(runtime.GOOS, runtime.GOARCH)
	if err != nil {
		return "", err
	}
	rel = filepath.FromSlash(rel)
	// The manifest was validated and signed, but a path that leaves the
	// version folder must never be run whatever vouched for it.
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("%w: entry point %q is not inside the bundle", bundle.ErrInvalidManifest, rel)
	}
	return filepath.Join(s.versionDir(v), rel), nil
}

// Push is one bundle push in progress. It holds the push's locks until
// Close.
type Push struct {
	s       *Store
	req     protocol.CalamariPush
	partial string
	unlock  []func()
	// Offset is where the sender resumes: the bytes of an earlier, cut
	// push of the same bundle already on disk.
	Offset int64
	// Done means the version is already installed and intact: no bytes
	// follow and there is nothing to do.
	Done bool
}

// hashRE is a lower-case hex SHA-256; the hash names the partial file.
var hashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// BeginPush validates a push and waits (bounded by ctx) until no other
// push of the same version or the same bytes runs. The caller answers the
// sender with the returned Push's Offset and Done, calls Receive unless
// Done, and always calls Close.
func (s *Store) BeginPush(ctx context.Context, req protocol.CalamariPush) (*Push, error) {
	if err := ValidateVersion(req.Version); err != nil {
		return nil, err
	}
	if !hashRE.MatchString(req.Bundle.SHA256) || req.Bundle.Size <= 0 {
		return nil, fmt.Errorf("%w: want a size above 0 and a lower-case hex SHA-256, got %d and %q", ErrInvalidTransfer, req.Bundle.Size, req.Bundle.SHA256)
	}
	if len(req.Signature) == 0 {
		return nil, fmt.Errorf("push Calamari %s: %w: no signature", req.Version, bundle.ErrBadSignature)
	}
	p := &Push{s: s, req: req, partial: filepath.Join(s.cfg.Dir, partialDir, req.Bundle.SHA256+".part")}
	// Always version first, then hash, so two pushes never wait on each
	// other in opposite orders.
	for _, key := range []string{"version:" + req.Version, "sha256:" + req.Bundle.SHA256} {
		unlock, err := s.pushing.Lock(ctx, key)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("push Calamari %s: %w", req.Version, err)
		}
		p.unlock = append(p.unlock, unlock)
	}
	if _, err := s.Verify(req.Version); err == nil {
		p.Done = true
		return p, nil
	}
	if err := os.MkdirAll(filepath.Dir(p.partial), 0o700); err != nil {
		p.Close()
		return nil, fmt.Errorf("push Calamari %s: %w", req.Version, err)
	}
	p.Offset = protocol.PartialSize(p.partial)
	if p.Offset > req.Bundle.Size {
		// Not this transfer's bytes after all; ReceiveBulk would discard
		// them too, but the sender must not be told to resume past the end.
		os.Remove(p.partial)
		p.Offset = 0
	}
	return p, nil
}

// Receive reads the rest of the bundle from r, installs it and prunes old
// versions. When r fails (a broken connection) the bytes that arrived are
// kept so the next push resumes; when the bundle is bad, they are removed
// and nothing is installed.
//
// The bundle is extracted while it arrives: every byte, those a resumed
// push already held first, goes to the partial file and through a pipe to
// bundle.Stage, which checks the signature before writing any file and
// each file against the manifest as it lands. The install is committed
// (renamed to its version) only once both the extraction and the receive
// succeeded. Unless the push says ManifestOnly, the receive also hashes
// the whole bundle and succeeds only if its SHA-256 is the header's.
func (p *Push) Receive(ctx context.Context, r io.Reader) (protocol.CalamariInstalled, error) {
	v := p.req.Version
	if p.Done {
		return protocol.CalamariInstalled{Version: v}, nil
	}
	st, err := p.receive(ctx, r)
	if err != nil {
		return protocol.CalamariInstalled{}, err
	}
	before := p.s.present()
	m, err := st.Commit(&p.s.verifier)
	if err != nil {
		return protocol.CalamariInstalled{}, fmt.Errorf("install Calamari %s: %w", v, err)
	}
	os.Remove(p.partial)
	if m.Version != v {
		// bundle.Stage put it where its manifest says. Remove it unless
		// that version was there before this push (then it is not ours to
		// take away).
		if !before[m.Version] {
			p.s.verifier.Forget(p.s.versionDir(m.Version))
			os.RemoveAll(p.s.versionDir(m.Version))
		}
		return protocol.CalamariInstalled{}, fmt.Errorf("install Calamari %s: %w: the bundle is %s", v, ErrVersionMismatch, m.Version)
	}
	return protocol.CalamariInstalled{Version: v, Pruned: p.s.prune(v, p.req.Keep)}, nil
}

// receive receives the bundle into the partial file while a goroutine of
// its own stages it (through a bufPipe), and returns the staged bundle once both are done and
// the bundle's SHA-256 matched. On error nothing is staged, and the
// partial file is kept unless the bytes are at fault.
func (p *Push) receive(ctx context.Context, r io.Reader) (*bundle.Staged, error) {
	v := p.req.Version
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pipe := newBufPipe()
	type result struct {
		st  *bundle.Staged
		err error
	}
	staged := make(chan result, 1)
	go func() {
		st, err := bundle.Stage(sctx, pipe, p.s.cfg.Dir, p.s.SigningKey(), p.req.Signature, bundle.Limits{})
		// A Stage that returned early (a bad bundle, or its version
		// already installed) takes no more bytes: the receive goes on
		// into the partial file alone.
		pipe.CloseRead(errStaged)
		staged <- result{st, err}
	}()
	receive := protocol.ReceiveBulkTee
	if p.req.ManifestOnly {
		// The whole-bundle SHA-256 was a second hash of every byte (a
		// third of the agent's CPU in a push), and adds nothing to what
		// Stage checks against the signed manifest (see
		// protocol.CalamariPush.ManifestOnly): a push whose bytes, fresh
		// or resumed, do not make the signed bundle fails in Stage, which
		// is a bad request and removes the partial file below.
		receive = protocol.ReceiveBulkTeeUnhashed
	}
	rerr := receive(r, p.partial, p.req.Bundle, pipe)
	if rerr != nil {
		cancel()
	}
	pipe.CloseWrite(rerr) // nil: the end of the bundle
	res := <-staged
	if rerr != nil {
		if res.err == nil {
			res.st.Abort()
		}
		return nil, fmt.Errorf("receive Calamari %s: %w", v, rerr)
	}
	if res.err != nil {
		if IsBadRequest(res.err) {
			// The same bytes would fail again: the next push starts over.
			os.Remove(p.partial)
		}
		return nil, fmt.Errorf("install Calamari %s: %w", v, res.err)
	}
	return res.st, nil
}

// errStaged ends the tee into a Stage that has returned.
var errStaged = errors.New("bundle staged")

// Close releases the push's locks. It is idempotent.
func (p *Push) Close() {
	for i := len(p.unlock) - 1; i >= 0; i-- {
		p.unlock[i]()
	}
}

// present is the set of version folders on disk right now.
func (s *Store) present() map[string]bool {
	set := map[string]bool{}
	entries, _ := os.ReadDir(s.cfg.Dir) // unreadable: nothing known present, which only makes Receive more careful
	for _, e := range entries {
		if e.IsDir() {
			set[e.Name()] = true
		}
	}
	return set
}

// prune removes old versions beyond the newest keep (Config.Keep if keep
// is 0 or less: a coordinator without a machine policy), never one a task
// uses, one being pushed, or justInstalled (the coordinator installed it
// because a task is about to need it, however old it is). A failed prune
// does not fail the push that triggered it: it is logged and tried again
// after the next install.
func (s *Store) prune(justInstalled string, keepN int) []string {
	if keepN <= 0 {
		keepN = s.cfg.Keep
	}
	keep := map[string]bool{justInstalled: true}
	for _, v := range s.cfg.InUse() {
		keep[v] = true
	}
	for _, k := range s.pushing.Held() {
		if v, ok := strings.CutPrefix(k, "version:"); ok {
			keep[v] = true
		}
	}
	pruned, err := bundle.Prune(s.cfg.Dir, keepN, func(v string) bool { return keep[v] })
	for _, v := range pruned {
		s.verifier.Forget(s.versionDir(v))
	}
	if err != nil {
		s.log.Warn("could not prune old Calamari versions", zap.Strings("pruned", pruned), zap.Error(err))
	}
	s.sweepPartials()
	slices.Sort(pruned)
	return pruned
}

// sweepPartials removes partial pushes nobody resumed for stalePartial;
// otherwise every abandoned push would hold its bytes forever.
func (s *Store) sweepPartials() {
	dir := filepath.Join(s.cfg.Dir, partialDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	held := map[string]bool{}
	for _, k := range s.pushing.Held() {
		if h, ok := strings.CutPrefix(k, "sha256:"); ok {
			held[h+".part"] = true
		}
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || held[e.Name()] || time.Since(info.ModTime()) < stalePartial {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			s.log.Warn("could not remove an abandoned partial push", zap.String("file", e.Name()), zap.Error(err))
		}
	}
}
