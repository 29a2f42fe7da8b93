// Package calamari is the coordinator's library of Calamari bundles:
// uploads checked against their manifest and signed with the
// coordinator's key, kept in the data folder (and, for the other nodes,
// in the database), listed newest first. Delivering them to agents is the
// coordinator core's, which holds the sessions.
package calamari

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/semver"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// Store is the part of the store about bundles.
type Store interface {
	AddBundle(ctx context.Context, b store.Bundle) error
	Bundle(ctx context.Context, version string) (store.Bundle, error)
	Bundles(ctx context.Context) ([]store.Bundle, error)
}

// Config configures a Library. Every field but Logger is required.
type Config struct {
	Store   Store
	Uploads *cluster.Uploads
	// Signing signs each bundle's manifest; agents check it against the
	// coordinator key they pinned.
	Signing *certs.SigningKey
	// DataDir is the coordinator's data folder.
	DataDir string
	Logger  *zap.Logger
}

// Library is the stored Calamari bundles.
type Library struct {
	cfg Config
	log *zap.Logger
}

// New returns the library over cfg.
func New(cfg Config) *Library {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Library{cfg: cfg, log: cfg.Logger}
}

// dir is where uploaded bundles are kept, one file per version.
func (l *Library) dir() string { return filepath.Join(l.cfg.DataDir, datadir.Calamari) }

// Path is where the bundle of a version is kept in this node's data
// folder.
func (l *Library) Path(version string) string {
	return filepath.Join(l.dir(), "calamari-"+version+".tar.gz")
}

// Open opens a stored bundle's archive, fetched from the database first on
// a node that lacks it.
func (l *Library) Open(ctx context.Context, b store.Bundle) (*os.File, error) {
	if err := l.cfg.Uploads.Fetch(ctx, cluster.CalamariBlob(b.Version), l.Path(b.Version), b.SHA256); err != nil {
		return nil, fmt.Errorf("calamari %s: %w", b.Version, err)
	}
	f, err := os.Open(l.Path(b.Version))
	if err != nil {
		return nil, fmt.Errorf("calamari %s: %w", b.Version, err)
	}
	return f, nil
}

// Upload stores a bundle read from r: it is written to disk,
// checked against its manifest (paths, sizes, hashes, limits), and its
// manifest is signed with the coordinator's key. Uploading the same bundle
// again is a no-op; another bundle with a stored version is a conflict.
func (l *Library) Upload(ctx context.Context, r io.Reader) (api.BundleView, error) {
	if err := os.MkdirAll(l.dir(), 0o700); err != nil {
		return api.BundleView{}, fmt.Errorf("upload calamari: %w", err)
	}
	tmp, err := os.CreateTemp(l.dir(), ".upload-*")
	if err != nil {
		return api.BundleView{}, fmt.Errorf("upload calamari: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, api.MaxBundleSize+1))
	if err != nil {
		return api.BundleView{}, fmt.Errorf("upload calamari: receive: %w", err)
	}
	if n > api.MaxBundleSize {
		return api.BundleView{}, kind.Errorf(kind.ErrBadRequest, "bundle is larger than %d bytes", int64(api.MaxBundleSize))
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return api.BundleView{}, fmt.Errorf("upload calamari: %w", err)
	}
	m, manifest, err := bundle.Check(ctx, tmp, bundle.Limits{})
	if err != nil {
		return api.BundleView{}, kind.Errorf(kind.ErrBadRequest, "not a valid Calamari bundle: %v", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if existing, err := l.cfg.Store.Bundle(ctx, m.Version); err == nil {
		if existing.SHA256 == sum {
			if err := cluster.KeepCopy(tmp, l.Path(m.Version)); err != nil {
				return api.BundleView{}, fmt.Errorf("upload calamari: %w", err)
			}
			if err := l.cfg.Uploads.Share(ctx, cluster.CalamariBlob(m.Version), l.Path(m.Version), sum, n); err != nil {
				return api.BundleView{}, fmt.Errorf("upload calamari: %w", err)
			}
			return l.view(ctx, existing, false)
		}
		return api.BundleView{}, kind.Errorf(kind.ErrConflict, "Calamari %s is already stored with other content; give the new bundle a new version", m.Version)
	}
	if err := tmp.Sync(); err != nil {
		return api.BundleView{}, fmt.Errorf("upload calamari: %w", err)
	}
	if err := os.Rename(tmp.Name(), l.Path(m.Version)); err != nil {
		return api.BundleView{}, fmt.Errorf("upload calamari: %w", err)
	}
	// Before the record: a node that sees it can fetch the bundle.
	if err := l.cfg.Uploads.Share(ctx, cluster.CalamariBlob(m.Version), l.Path(m.Version), sum, n); err != nil {
		return api.BundleView{}, fmt.Errorf("upload calamari: %w", err)
	}
	b := store.Bundle{
		Version: m.Version, SHA256: sum, Size: n, Manifest: manifest,
		Signature: bundle.Sign(l.cfg.Signing, manifest), UploadedAt: time.Now().UTC(),
	}
	if err := l.cfg.Store.AddBundle(ctx, b); err != nil {
		return api.BundleView{}, fmt.Errorf("upload calamari: %w", err)
	}
	l.log.Info("calamari bundle stored", zap.String("version", m.Version), zap.String("sha256", sum), zap.Int64("size", n))
	return l.view(ctx, b, true)
}

func (l *Library) view(ctx context.Context, b store.Bundle, created bool) (api.BundleView, error) {
	latest, err := l.Latest(ctx)
	if err != nil {
		return api.BundleView{}, err
	}
	v := api.BundleView{Version: b.Version, SHA256: b.SHA256, Size: b.Size, UploadedAt: b.UploadedAt,
		Latest: latest.Version == b.Version, Created: created}
	if m, err := bundle.ParseManifest(b.Manifest, bundle.Limits{}); err == nil {
		for p := range m.Entrypoints {
			v.Platforms = append(v.Platforms, p)
		}
		slices.Sort(v.Platforms)
	}
	return v, nil
}

// List lists the stored bundles, newest version first.
func (l *Library) List(ctx context.Context) ([]api.BundleView, error) {
	all, err := l.cfg.Store.Bundles(ctx)
	if err != nil {
		return nil, err
	}
	sortBundles(all)
	out := make([]api.BundleView, 0, len(all))
	for i, b := range all {
		v, err := l.view(ctx, b, false)
		if err != nil {
			return nil, err
		}
		v.Latest = i == 0
		out = append(out, v)
	}
	return out, nil
}

func sortBundles(bs []store.Bundle) {
	slices.SortFunc(bs, func(a, b store.Bundle) int { return semver.Compare("v"+b.Version, "v"+a.Version) })
}

// Latest returns the newest stored bundle, or a zero Bundle if none
// was uploaded.
func (l *Library) Latest(ctx context.Context) (store.Bundle, error) {
	all, err := l.cfg.Store.Bundles(ctx)
	if err != nil || len(all) == 0 {
		return store.Bundle{}, err
	}
	sortBundles(all)
	return all[0], nil
}

// Current reports whether an agent with these verified versions
// has the latest bundle (vacuously true when none was uploaded).
func Current(latest string, have []string) bool {
	return latest == "" || slices.Contains(have, latest)
}
