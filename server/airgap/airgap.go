// Package airgap is the export file that carries agent packages and
// Calamari bundles to a coordinator with no network: one gzip-compressed
// tar holding manifest.json (every item: kind, version, platform, size,
// SHA-256 and the source coordinator's signature), manifest.sig (the
// source's signature over manifest.json) and the items' files.
//
// Reading checks everything before anything is handed on: the manifest's
// signature with the key it names (and the key the importer expects, if
// one is given), each file's size and SHA-256, each item's own signature,
// and gzip's checksum at the end. A truncated file or one byte changed
// anywhere is refused with ErrDamaged.
package airgap

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/kind"
)

// Format is the export format this package writes and reads.
const Format = 1

// Item kinds.
const (
	KindCalamari = "calamari"
	KindAgent    = "agent"
)

const (
	manifestName = "manifest.json"
	sigName      = "manifest.sig"
	// maxManifest bounds manifest.json; thousands of items fit.
	maxManifest = 4 << 20
)

// ErrDamaged means the file is not an intact export: truncated, changed,
// or not one at all.
var ErrDamaged = kind.Errorf(kind.ErrBadRequest, "export file is damaged")

// ErrUntrustedSource means the export was signed by another key than the
// one the importer expected.
var ErrUntrustedSource = kind.Errorf(kind.ErrBadRequest, "export file was signed by another coordinator than expected")

// Manifest describes an export.
type Manifest struct {
	Format  int       `json:"format"`
	Created time.Time `json:"created"`
	// SourceVersion is the exporting coordinator's version.
	SourceVersion string `json:"source_version"`
	// SigningKey is the exporting coordinator's public signing key (hex):
	// manifest.sig and every item's signature verify with it.
	SigningKey string `json:"signing_key"`
	Items      []Item `json:"items"`
}

// Item is one agent package or Calamari bundle.
type Item struct {
	Kind    string `json:"kind"`
	Version string `json:"version"`
	// OS and Arch are an agent package's platform; empty for Calamari.
	OS   string `json:"os,omitempty"`
	Arch string `json:"arch,omitempty"`
	// File is the entry holding the bytes.
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Signature is the source coordinator's: over the bundle's
	// manifest.json for Calamari, over protocol.AgentPackage's
	// SigningBytes for an agent package.
	Signature []byte `json:"signature"`
}

// Name says what an item is, for messages.
func (it Item) Name() string {
	if it.Kind == KindAgent {
		return fmt.Sprintf("agent %s for %s/%s", it.Version, it.OS, it.Arch)
	}
	return "Calamari " + it.Version
}

func (it Item) fileName() string {
	if it.Kind == KindAgent {
		return path.Join("agent", it.Version, it.OS+"-"+it.Arch)
	}
	return path.Join("calamari", it.Version+".tar.gz")
}

// Source is one item to export and where its bytes are.
type Source struct {
	Item
	// Open returns the item's bytes.
	Open func() (io.ReadCloser, error)
}

// Write writes an export of sources to w, signed with key.
func Write(ctx context.Context, w io.Writer, key *certs.SigningKey, sourceVersion string, sources []Source) error {
	m := Manifest{Format: Format, Created: time.Now().UTC(), SourceVersion: sourceVersion, SigningKey: key.Public()}
	for _, s := range sources {
		it := s.Item
		it.File = it.fileName()
		m.Items = append(m.Items, it)
	}
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("write export: %w", err)
	}
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	add := func(name string, size int64, r io.Reader, sum string) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: m.Created, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(tw, h), r)
		switch {
		case err != nil:
			return err
		case n != size:
			return fmt.Errorf("%s: got %d bytes, want %d", name, n, size)
		case sum != "" && hex.EncodeToString(h.Sum(nil)) != sum:
			// A damaged copy on this host: fail here, not at the site
			// that imports it.
			return fmt.Errorf("%s: the stored file does not match its SHA-256", name)
		}
		return nil
	}
	sig := key.Sign(raw)
	if err := add(manifestName, int64(len(raw)), bytes.NewReader(raw), ""); err != nil {
		return fmt.Errorf("write export: %w", err)
	}
	if err := add(sigName, int64(len(sig)), bytes.NewReader(sig), ""); err != nil {
		return fmt.Errorf("write export: %w", err)
	}
	for i, s := range sources {
		if ctx.Err() != nil {
			return fmt.Errorf("write export: %w", ctx.Err())
		}
		rc, err := s.Open()
		if err != nil {
			return fmt.Errorf("write export: %s: %w", s.Name(), err)
		}
		err = add(m.Items[i].File, s.Size, rc, s.SHA256)
		rc.Close()
		if err != nil {
			return fmt.Errorf("write export: %s: %w", s.Name(), err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write export: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("write export: %w", err)
	}
	return nil
}

// Read checks an export read from r and extracts its items into dir,
// one file each, returning the manifest and the path of each item's
// file, in the manifest's order. expectKey, if not "", is the signing key
// the export must carry. Nothing is returned unless everything checked.
func Read(ctx context.Context, r io.Reader, dir, expectKey string) (Manifest, []string, error) {
	damaged := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrDamaged, fmt.Sprintf(format, args...))
	}
	gz, err := gzip.NewReader(r)
	if err != nil {
		return Manifest{}, nil, damaged("not a gzip file (%v)", err)
	}
	tr := tar.NewReader(gz)
	next := func(want string) (*tar.Header, error) {
		hdr, err := tr.Next()
		if err != nil {
			return nil, damaged("truncated or corrupt (%v)", err)
		}
		if want != "" && hdr.Name != want {
			return nil, damaged("entry %q where %q belongs", hdr.Name, want)
		}
		return hdr, nil
	}
	hdr, err := next(manifestName)
	if err != nil {
		return Manifest{}, nil, err
	}
	if hdr.Size > maxManifest {
		return Manifest{}, nil, damaged("manifest is %d bytes", hdr.Size)
	}
	raw, err := io.ReadAll(tr)
	if err != nil {
		return Manifest{}, nil, damaged("truncated or corrupt (%v)", err)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return Manifest{}, nil, damaged("manifest: %v", err)
	}
	if m.Format != Format {
		return Manifest{}, nil, kind.Errorf(kind.ErrBadRequest, "export format %d: this coordinator reads format %d; export with a coordinator of its version", m.Format, Format)
	}
	if _, err := next(sigName); err != nil {
		return Manifest{}, nil, err
	}
	sig, err := io.ReadAll(io.LimitReader(tr, 1024))
	if err != nil {
		return Manifest{}, nil, damaged("truncated or corrupt (%v)", err)
	}
	if err := certs.Verify(m.SigningKey, raw, sig); err != nil {
		return Manifest{}, nil, damaged("the manifest's signature does not verify (%v)", err)
	}
	if expectKey != "" && expectKey != m.SigningKey {
		return Manifest{}, nil, fmt.Errorf("%w: signed by %s, expected %s", ErrUntrustedSource, m.SigningKey, expectKey)
	}
	if err := m.validate(); err != nil {
		return Manifest{}, nil, damaged("%v", err)
	}
	paths := make([]string, len(m.Items))
	for i, it := range m.Items {
		if ctx.Err() != nil {
			return Manifest{}, nil, fmt.Errorf("read export: %w", ctx.Err())
		}
		hdr, err := next(it.File)
		if err != nil {
			return Manifest{}, nil, err
		}
		if hdr.Size != it.Size {
			return Manifest{}, nil, damaged("%s is %d bytes, the manifest says %d", it.Name(), hdr.Size, it.Size)
		}
		p := filepath.Join(dir, fmt.Sprintf("item-%d", i))
		if err := extract(tr, p, it); err != nil {
			return Manifest{}, nil, damaged("%v", err)
		}
		if err := verifyItem(ctx, m.SigningKey, it, p); err != nil {
			return Manifest{}, nil, err
		}
		paths[i] = p
	}
	if _, err := tr.Next(); !errors.Is(err, io.EOF) {
		return Manifest{}, nil, damaged("entries beyond the manifest's")
	}
	// The tar ends before gzip's trailer: read on, so that a cut or
	// corrupt end is noticed by its checksum.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return Manifest{}, nil, damaged("truncated or corrupt (%v)", err)
	}
	return m, paths, nil
}

// validate checks what the manifest says before any file is read.
func (m Manifest) validate() error {
	seen := map[string]bool{}
	var total int64
	for _, it := range m.Items {
		switch it.Kind {
		case KindCalamari:
			if it.OS != "" || it.Arch != "" {
				return fmt.Errorf("%s: a Calamari bundle has no platform", it.Name())
			}
		case KindAgent:
			if it.OS == "" || it.Arch == "" {
				return fmt.Errorf("%s: an agent package needs a platform", it.Name())
			}
		default:
			return fmt.Errorf("item kind %q", it.Kind)
		}
		if !bundle.ValidVersion(it.Version) {
			return fmt.Errorf("%s: not a semantic version", it.Name())
		}
		if it.File != it.fileName() {
			return fmt.Errorf("%s: file %q, want %q", it.Name(), it.File, it.fileName())
		}
		if seen[it.File] {
			return fmt.Errorf("%s appears twice", it.Name())
		}
		seen[it.File] = true
		// Bounded before anything is written: the compressed file is
		// bounded, what it inflates to must be too.
		limit := int64(api.MaxBundleSize)
		if it.Kind == KindAgent {
			limit = api.MaxAgentPackageSize
		}
		if it.Size < 0 || it.Size > limit {
			return fmt.Errorf("%s: size %d, want 0 to %d", it.Name(), it.Size, limit)
		}
		if total += it.Size; total > api.MaxExportSize {
			return fmt.Errorf("the items add up to more than %d bytes", int64(api.MaxExportSize))
		}
	}
	return nil
}

// extract writes one item's bytes to p and checks their SHA-256.
func extract(r io.Reader, p string, it Item) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: truncated or corrupt (%v)", it.Name(), err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != it.SHA256 {
		return fmt.Errorf("%s does not match its SHA-256", it.Name())
	}
	return nil
}

// verifyItem checks an item's own signature with the source's key.
func verifyItem(ctx context.Context, key string, it Item, p string) error {
	switch it.Kind {
	case KindAgent:
		desc := protocol.AgentPackage{Version: it.Version, OS: it.OS, Arch: it.Arch, SHA256: it.SHA256, Size: it.Size}
		if err := certs.Verify(key, desc.SigningBytes(), it.Signature); err != nil {
			return kind.Errorf(kind.ErrBadRequest, "%s: its signature does not verify: %v", it.Name(), err)
		}
	case KindCalamari:
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		bm, manifest, err := bundle.Check(ctx, f, bundle.Limits{})
		if err != nil {
			return kind.Errorf(kind.ErrBadRequest, "%s: not a valid Calamari bundle: %v", it.Name(), err)
		}
		if bm.Version != it.Version {
			return kind.Errorf(kind.ErrBadRequest, "%s: the bundle says it is %s", it.Name(), bm.Version)
		}
		if err := bundle.VerifySignature(key, manifest, it.Signature); err != nil {
			return kind.Errorf(kind.ErrBadRequest, "%s: %v", it.Name(), err)
		}
	}
	return nil
}
