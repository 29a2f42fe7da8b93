package rollout

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
	stamp "github.com/tendrildeploy/tendril/version"
)

func agentPackageView(p store.AgentPackage, created bool) api.AgentPackageView {
	return api.AgentPackageView{Version: p.Version, OS: p.OS, Arch: p.Arch, SHA256: p.SHA256, Size: p.Size,
		UploadedAt: p.UploadedAt, Created: created}
}

func (e *Engine) agentPackagesDir() string { return filepath.Join(e.cfg.DataDir, "agent-packages") }

// agentPackagePath is where the binary of a package lives.
func (e *Engine) agentPackagePath(version, goos, goarch string) string {
	name := "tendril-agent"
	if goos == "windows" {
		name += ".exe"
	}
	return filepath.Join(e.agentPackagesDir(), version, goos+"-"+goarch, name)
}

// executableMagic reports whether head starts like an executable for goos:
// a cheap guard against uploading the wrong file (a script, an archive),
// not a validation of the binary, which the agent smoke-tests.
func executableMagic(goos string, head []byte) bool {
	switch goos {
	case "linux":
		return bytes.HasPrefix(head, []byte("\x7fELF"))
	case "windows":
		return bytes.HasPrefix(head, []byte("MZ"))
	case "darwin":
		for _, m := range [][]byte{
			{0xfe, 0xed, 0xfa, 0xce}, {0xce, 0xfa, 0xed, 0xfe}, // 32-bit, either byte order
			{0xfe, 0xed, 0xfa, 0xcf}, {0xcf, 0xfa, 0xed, 0xfe}, // 64-bit
			{0xca, 0xfe, 0xba, 0xbe}, // universal
		} {
			if bytes.HasPrefix(head, m) {
				return true
			}
		}
	}
	return false
}

// checkBuiltIn refuses a binary whose built-in version or platform is not
// what the upload says. It is read from the file (Go's build information
// and the stamped variable), never by running it: the coordinator does
// not run what it is sent. The agent's smoke test would catch a
// mismatch only on every agent of a rollout, after the package is signed;
// an agent that reported another version than the package's would also
// leave its rollout waiting for a version that never connects.
func checkBuiltIn(f io.ReaderAt, version, goos, goarch string) error {
	b, err := stamp.ReadBinary(f)
	if err != nil {
		return kind.Errorf(kind.ErrBadRequest, "the agent package's built-in version cannot be read: %v; push the tendril-agent binary as built (make build or a release archive)", err)
	}
	if b.OS != goos || b.Arch != goarch {
		return kind.Errorf(kind.ErrBadRequest, "the binary is built for %s/%s but --os and --arch say %s/%s; push it with --os %s --arch %s, or push the %s/%s binary",
			b.OS, b.Arch, goos, goarch, b.OS, b.Arch, goos, goarch)
	}
	if strings.TrimPrefix(b.Version, "v") != version {
		return kind.Errorf(kind.ErrBadRequest, "the binary says it is %s but --version is %s; push it with --version %s, or rebuild it with -ldflags \"-X %s=%s\"",
			b.Version, version, b.Version, stamp.Symbol, version)
	}
	return nil
}

// UploadAgentPackage stores an agent binary for one version and platform,
// read from r, and signs its description with the coordinator's key so
// agents can verify it. The same binary again is a no-op; another binary
// under a stored version and platform is a conflict.
func (e *Engine) UploadAgentPackage(ctx context.Context, version, goos, goarch string, r io.Reader) (api.AgentPackageView, error) {
	if !bundle.ValidVersion(version) {
		return api.AgentPackageView{}, kind.Errorf(kind.ErrBadRequest, "version %q is not a semantic version such as 1.2.3", version)
	}
	if !slices.Contains(api.PackageOSes, goos) {
		return api.AgentPackageView{}, kind.Errorf(kind.ErrBadRequest, "os %q: want one of %v", goos, api.PackageOSes)
	}
	if !slices.Contains(api.PackageArches, goarch) {
		return api.AgentPackageView{}, kind.Errorf(kind.ErrBadRequest, "arch %q: want one of %v", goarch, api.PackageArches)
	}
	dest := e.agentPackagePath(version, goos, goarch)
	if err := os.MkdirAll(filepath.Dir(dest), 0o700); err != nil {
		return api.AgentPackageView{}, fmt.Errorf("upload agent package: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dest), ".upload-*")
	if err != nil {
		return api.AgentPackageView{}, fmt.Errorf("upload agent package: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	defer tmp.Close()
	h := sha256.New()
	head := &headWriter{max: 8}
	n, err := io.Copy(io.MultiWriter(tmp, h, head), io.LimitReader(r, api.MaxAgentPackageSize+1))
	if err != nil {
		return api.AgentPackageView{}, fmt.Errorf("upload agent package: receive: %w", err)
	}
	switch {
	case n == 0:
		return api.AgentPackageView{}, kind.Errorf(kind.ErrBadRequest, "the agent package is empty")
	case n > api.MaxAgentPackageSize:
		return api.AgentPackageView{}, kind.Errorf(kind.ErrBadRequest, "the agent package is larger than %d bytes", int64(api.MaxAgentPackageSize))
	case !executableMagic(goos, head.b):
		return api.AgentPackageView{}, kind.Errorf(kind.ErrBadRequest, "file is not a %s executable", goos)
	}
	if err := checkBuiltIn(tmp, version, goos, goarch); err != nil {
		return api.AgentPackageView{}, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if existing, err := e.st.AgentPackage(ctx, version, goos, goarch); err == nil {
		if existing.SHA256 == sum {
			if err := tmp.Chmod(0o700); err != nil {
				return api.AgentPackageView{}, fmt.Errorf("upload agent package: %w", err)
			}
			if err := cluster.KeepCopy(tmp, dest); err != nil {
				return api.AgentPackageView{}, fmt.Errorf("upload agent package: %w", err)
			}
			if err := e.cfg.Uploads.Share(ctx, cluster.AgentPackageBlob(version, goos, goarch), dest, sum, n); err != nil {
				return api.AgentPackageView{}, fmt.Errorf("upload agent package: %w", err)
			}
			return agentPackageView(existing, false), nil
		}
		return api.AgentPackageView{}, kind.Errorf(kind.ErrConflict, "agent %s for %s/%s is already stored with other content; give the new binary a new version", version, goos, goarch)
	} else if !errors.Is(err, store.ErrNotFound) {
		return api.AgentPackageView{}, fmt.Errorf("upload agent package: %w", err)
	}
	if err := tmp.Chmod(0o700); err != nil {
		return api.AgentPackageView{}, fmt.Errorf("upload agent package: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return api.AgentPackageView{}, fmt.Errorf("upload agent package: %w", err)
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return api.AgentPackageView{}, fmt.Errorf("upload agent package: %w", err)
	}
	// Before the record: a node that sees it can fetch the package.
	if err := e.cfg.Uploads.Share(ctx, cluster.AgentPackageBlob(version, goos, goarch), dest, sum, n); err != nil {
		return api.AgentPackageView{}, fmt.Errorf("upload agent package: %w", err)
	}
	desc := protocol.AgentPackage{Version: version, OS: goos, Arch: goarch, SHA256: sum, Size: n}
	p := store.AgentPackage{Version: version, OS: goos, Arch: goarch, SHA256: sum, Size: n,
		Signature: e.cfg.Signing.Sign(desc.SigningBytes()), UploadedAt: time.Now().UTC()}
	if err := e.st.AddAgentPackage(ctx, p); err != nil {
		if errors.Is(err, store.ErrExists) {
			// A concurrent upload of the same key won; its file is the
			// one just replaced only if the content was the same.
			return api.AgentPackageView{}, kind.Errorf(kind.ErrConflict, "agent %s for %s/%s was uploaded at the same time; try again", version, goos, goarch)
		}
		return api.AgentPackageView{}, fmt.Errorf("upload agent package: %w", err)
	}
	e.log.Info("agent package stored", zap.String("version", version), zap.String("os", goos), zap.String("arch", goarch),
		zap.String("sha256", sum), zap.Int64("size", n))
	return agentPackageView(p, true), nil
}

// OpenAgentPackage opens a stored package's binary, fetched from the
// database first on a node that lacks it.
func (e *Engine) OpenAgentPackage(ctx context.Context, p store.AgentPackage) (*os.File, error) {
	path := e.agentPackagePath(p.Version, p.OS, p.Arch)
	if err := e.cfg.Uploads.Fetch(ctx, cluster.AgentPackageBlob(p.Version, p.OS, p.Arch), path, p.SHA256); err != nil {
		return nil, fmt.Errorf("agent package %s %s/%s: %w", p.Version, p.OS, p.Arch, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("agent package %s %s/%s: %w", p.Version, p.OS, p.Arch, err)
	}
	return f, nil
}

// headWriter keeps the first max bytes written to it.
type headWriter struct {
	b   []byte
	max int
}

func (w *headWriter) Write(p []byte) (int, error) {
	if room := w.max - len(w.b); room > 0 {
		w.b = append(w.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// AgentPackages lists the stored agent packages, newest version first.
func (e *Engine) AgentPackages(ctx context.Context) ([]api.AgentPackageView, error) {
	all, err := e.st.AgentPackages(ctx)
	if err != nil {
		return nil, err
	}
	sortPackages(all)
	out := make([]api.AgentPackageView, len(all))
	for i, p := range all {
		out[i] = agentPackageView(p, false)
	}
	return out, nil
}

// sortPackages orders packages newest version first, then by platform.
func sortPackages(ps []store.AgentPackage) {
	slices.SortFunc(ps, func(a, b store.AgentPackage) int {
		if c := bundle.CompareVersions(b.Version, a.Version); c != 0 {
			return c
		}
		if c := strings.Compare(a.OS, b.OS); c != 0 {
			return c
		}
		return strings.Compare(a.Arch, b.Arch)
	})
}

// NewestPackages maps "os/arch" to the newest package version stored for
// it.
func NewestPackages(ps []store.AgentPackage) map[string]string {
	out := make(map[string]string)
	for _, p := range ps {
		k := p.OS + "/" + p.Arch
		if cur, ok := out[k]; !ok || bundle.CompareVersions(p.Version, cur) > 0 {
			out[k] = p.Version
		}
	}
	return out
}
