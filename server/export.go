package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/server/airgap"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// Export writes every stored Calamari bundle and agent package to w as
// an export file (package airgap), signed with this coordinator's key,
// for a coordinator that cannot reach this one.
func (s *Server) Export(ctx context.Context, w io.Writer) error {
	bundles, err := s.store.Bundles(ctx)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	pkgs, err := s.store.AgentPackages(ctx)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	// Every file is opened (fetched from the database on a node that
	// lacks it) before the first byte goes out: a file that cannot be had
	// fails the export while it can still answer with an error.
	var sources []airgap.Source
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	add := func(it airgap.Item, f *os.File, err error) error {
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		files = append(files, f)
		sources = append(sources, airgap.Source{Item: it, Open: func() (io.ReadCloser, error) { return io.NopCloser(f), nil }})
		return nil
	}
	for _, b := range bundles {
		f, err := s.bundles.Open(ctx, b)
		if err := add(airgap.Item{Kind: airgap.KindCalamari, Version: b.Version, Size: b.Size, SHA256: b.SHA256, Signature: b.Signature}, f, err); err != nil {
			return err
		}
	}
	for _, p := range pkgs {
		f, err := s.rollouts.OpenAgentPackage(ctx, p)
		if err := add(airgap.Item{Kind: airgap.KindAgent, Version: p.Version, OS: p.OS, Arch: p.Arch, Size: p.Size, SHA256: p.SHA256, Signature: p.Signature}, f, err); err != nil {
			return err
		}
	}
	if err := airgap.Write(ctx, w, s.signing, s.cfg.Version, sources); err != nil {
		return err
	}
	s.log.Info("exported agent packages and Calamari bundles", zap.Int("calamari", len(bundles)), zap.Int("agent_packages", len(pkgs)))
	return nil
}

// Import checks an export file read from r (every signature with the
// source's key, every file's hash) and stores its items as if uploaded
// here: checked again and signed with this coordinator's key, which its
// agents pinned at enrollment and check again before using anything.
// Items older than what the fleet runs are refused unless
// opts.AllowDowngrade, which takes a backup snapshot first.
func (s *Server) Import(ctx context.Context, r io.Reader, opts api.ImportOptions) (api.ImportResult, error) {
	if opts.SourceKey == "" && !opts.TrustAnySource {
		// The manifest's own key proves only that the file is whole:
		// whoever changed it on its way could sign it anew.
		return api.ImportResult{}, kind.Errorf(kind.ErrBadRequest,
			"import: name the exporting coordinator's signing key (source key, from \"tendril-server info\" there), or say to trust any source")
	}
	removeStaleImports(s.cfg.DataDir)
	dir, err := os.MkdirTemp(s.cfg.DataDir, importPrefix+"*")
	if err != nil {
		return api.ImportResult{}, fmt.Errorf("import: %w", err)
	}
	defer os.RemoveAll(dir)
	m, paths, err := airgap.Read(ctx, r, dir, opts.SourceKey)
	if err != nil {
		return api.ImportResult{}, fmt.Errorf("import: %w", err)
	}
	res := api.ImportResult{SourceKey: m.SigningKey, SourceVersion: m.SourceVersion, SigningKey: s.signing.Public()}
	for _, as := range s.sessions.snapshot() {
		if s.pinsOtherKey(as) {
			res.Refusing = append(res.Refusing, as.name)
		}
	}
	slices.Sort(res.Refusing)
	older, conflicts, err := s.downgrades(ctx, m.Items)
	if err != nil {
		return api.ImportResult{}, fmt.Errorf("import: %w", err)
	}
	if len(conflicts) > 0 {
		return api.ImportResult{}, kind.Errorf(kind.ErrConflict,
			"import: stored here already with other content: %s; an import does not replace a stored version, and nothing was stored",
			strings.Join(conflicts, "; "))
	}
	if len(older) > 0 {
		if !opts.AllowDowngrade {
			return api.ImportResult{}, kind.Errorf(kind.ErrConflict,
				"import: older than what the fleet runs: %s; import with --allow-downgrade to store them anyway (a backup snapshot is taken first)",
				strings.Join(older, "; "))
		}
		keep, err := s.keepCopy(ctx, opts.BackedUp)
		if err != nil {
			return api.ImportResult{}, fmt.Errorf("import: back up before a downgrade: %w", err)
		}
		res.Snapshot = keep
	}
	for i, it := range m.Items {
		out := api.ImportedItem{Kind: it.Kind, Version: it.Version, OS: it.OS, Arch: it.Arch}
		created, err := s.importItem(ctx, it, paths[i])
		switch {
		case err != nil:
			out.Result, out.Error = "failed", err.Error()
		case created:
			out.Result = "imported"
		default:
			out.Result = "present"
		}
		res.Items = append(res.Items, out)
	}
	s.log.Info("imported agent packages and Calamari bundles", zap.String("source_key", m.SigningKey),
		zap.String("source_version", m.SourceVersion), zap.Int("items", len(m.Items)), zap.String("snapshot", res.Snapshot))
	return res, nil
}

// importPrefix names the folders imports extract into, in the data
// folder (the same file system as the stores they are renamed into).
const importPrefix = ".import-"

// removeStaleImports removes what imports a crash interrupted left; an
// hour is far longer than checking an export takes.
func removeStaleImports(dataDir string) {
	ms, _ := filepath.Glob(filepath.Join(dataDir, importPrefix+"*"))
	for _, m := range ms {
		if st, err := os.Stat(m); err == nil && time.Since(st.ModTime()) > time.Hour {
			os.RemoveAll(m)
		}
	}
}

// keepCopy copies the database into the data folder before a downgrade,
// under a name no other copy has; kept, unlike a backup command's
// snapshot. A database this coordinator cannot copy (PostgreSQL) is the
// operator's to back up: backedUp says they did.
func (s *Server) keepCopy(ctx context.Context, backedUp bool) (string, error) {
	snap, err := s.TakeSnapshot(ctx)
	if err != nil {
		if backedUp && errors.Is(err, kind.ErrConflict) {
			return "", nil
		}
		if errors.Is(err, kind.ErrConflict) {
			return "", fmt.Errorf("%w; once it is backed up, import again with --backed-up", err)
		}
		return "", err
	}
	keep := "pre-import-" + time.Now().UTC().Format("20060102T150405.000000000Z") + ".db"
	dst := filepath.Join(s.cfg.DataDir, keep)
	if _, err := os.Lstat(dst); err == nil {
		return "", fmt.Errorf("%s exists already", keep)
	}
	if err := os.Rename(filepath.Join(s.cfg.DataDir, snap.Name), dst); err != nil {
		return "", err
	}
	return keep, nil
}

// importItem stores one checked item through the upload path.
func (s *Server) importItem(ctx context.Context, it airgap.Item, path string) (created bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if it.Kind == airgap.KindAgent {
		v, err := s.rollouts.UploadAgentPackage(ctx, it.Version, it.OS, it.Arch, f)
		return v.Created, err
	}
	v, err := s.bundles.Upload(ctx, f)
	return v.Created, err
}

// stored says whether the item is stored here already (same), or a
// version of it with other content is (other).
func (s *Server) stored(ctx context.Context, it airgap.Item) (same, other bool, err error) {
	var sum string
	if it.Kind == airgap.KindAgent {
		p, err := s.store.AgentPackage(ctx, it.Version, it.OS, it.Arch)
		if errors.Is(err, store.ErrNotFound) {
			return false, false, nil
		}
		if err != nil {
			return false, false, err
		}
		sum = p.SHA256
	} else {
		b, err := s.store.Bundle(ctx, it.Version)
		if errors.Is(err, store.ErrNotFound) {
			return false, false, nil
		}
		if err != nil {
			return false, false, err
		}
		sum = b.SHA256
	}
	return sum == it.SHA256, sum != it.SHA256, nil
}

// downgrades lists the items older than what the fleet runs (an agent
// package older than the newest agent of its platform, a Calamari bundle
// older than the latest stored), and those stored here with other
// content, which an import cannot store.
func (s *Server) downgrades(ctx context.Context, items []airgap.Item) (older, conflicts []string, err error) {
	latest, err := s.latestCalamari(ctx)
	if err != nil {
		return nil, nil, err
	}
	agents, err := s.store.ListAgents(ctx)
	if err != nil {
		return nil, nil, err
	}
	newest := map[string]string{} // "os/arch" -> newest agent version running
	for _, a := range agents {
		k := a.OS + "/" + a.Arch
		if a.Version != "" && bundle.ValidVersion(a.Version) && (newest[k] == "" || bundle.CompareVersions(a.Version, newest[k]) > 0) {
			newest[k] = a.Version
		}
	}
	for _, it := range items {
		same, other, err := s.stored(ctx, it)
		switch {
		case err != nil:
			return nil, nil, err
		case same:
			continue // importing it changes nothing
		case other:
			conflicts = append(conflicts, it.Name())
			continue
		}
		switch {
		case it.Kind == airgap.KindCalamari && latest.Version != "" && bundle.CompareVersions(it.Version, latest.Version) < 0:
			older = append(older, fmt.Sprintf("%s (latest stored: %s)", it.Name(), latest.Version))
		case it.Kind == airgap.KindAgent:
			if n := newest[it.OS+"/"+it.Arch]; n != "" && bundle.CompareVersions(it.Version, n) < 0 {
				older = append(older, fmt.Sprintf("%s (agents run %s)", it.Name(), n))
			}
		}
	}
	return older, conflicts, nil
}
