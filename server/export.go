package server

import (
	"context"
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
	var sources []airgap.Source
	for _, b := range bundles {
		sources = append(sources, airgap.Source{
			Item: airgap.Item{Kind: airgap.KindCalamari, Version: b.Version, Size: b.Size, SHA256: b.SHA256, Signature: b.Signature},
			Open: func() (io.ReadCloser, error) { return s.bundles.Open(ctx, b) },
		})
	}
	for _, p := range pkgs {
		sources = append(sources, airgap.Source{
			Item: airgap.Item{Kind: airgap.KindAgent, Version: p.Version, OS: p.OS, Arch: p.Arch, Size: p.Size, SHA256: p.SHA256, Signature: p.Signature},
			Open: func() (io.ReadCloser, error) { return s.rollouts.OpenAgentPackage(ctx, p) },
		})
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
	dir, err := os.MkdirTemp(s.cfg.DataDir, ".import-*")
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
	older, err := s.downgrades(ctx, m.Items)
	if err != nil {
		return api.ImportResult{}, fmt.Errorf("import: %w", err)
	}
	if len(older) > 0 {
		if !opts.AllowDowngrade {
			return api.ImportResult{}, kind.Errorf(kind.ErrConflict,
				"import: older than what the fleet runs: %s; import with --allow-downgrade to store them anyway (a backup snapshot is taken first)",
				strings.Join(older, "; "))
		}
		snap, err := s.TakeSnapshot(ctx)
		if err != nil {
			return api.ImportResult{}, fmt.Errorf("import: back up before a downgrade: %w", err)
		}
		// Kept, unlike a backup command's snapshot, which is removed
		// once packed (or after an hour).
		keep := "pre-import-" + time.Now().UTC().Format("20060102T150405Z") + ".db"
		if err := os.Rename(filepath.Join(s.cfg.DataDir, snap.Name), filepath.Join(s.cfg.DataDir, keep)); err != nil {
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

// holds reports whether the item is stored here already.
func (s *Server) holds(ctx context.Context, it airgap.Item) bool {
	if it.Kind == airgap.KindAgent {
		p, err := s.store.AgentPackage(ctx, it.Version, it.OS, it.Arch)
		return err == nil && p.SHA256 == it.SHA256
	}
	b, err := s.store.Bundle(ctx, it.Version)
	return err == nil && b.SHA256 == it.SHA256
}

// downgrades lists the items older than what the fleet runs: an agent
// package older than the newest agent of its platform, a Calamari bundle
// older than the latest stored.
func (s *Server) downgrades(ctx context.Context, items []airgap.Item) ([]string, error) {
	latest, err := s.latestCalamari(ctx)
	if err != nil {
		return nil, err
	}
	agents, err := s.store.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	newest := map[string]string{} // "os/arch" -> newest agent version running
	for _, a := range agents {
		k := a.OS + "/" + a.Arch
		if a.Version != "" && bundle.ValidVersion(a.Version) && (newest[k] == "" || bundle.CompareVersions(a.Version, newest[k]) > 0) {
			newest[k] = a.Version
		}
	}
	var older []string
	for _, it := range items {
		if s.holds(ctx, it) {
			continue // stored already: importing it changes nothing
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
	return older, nil
}
