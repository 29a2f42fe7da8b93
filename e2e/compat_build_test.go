package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// oldestVersion stamps the binaries of the oldest supported release: below
// every version the other tests give (1.0.0, 2.x and testVersion), so an
// upgrade from it goes forward.
const oldestVersion = "0.9.0"

// release is a pair of binaries built from another tree than this one.
type release struct {
	commit string
	server string // tendril-server
	agent  string // tendril-agent
}

var oldest struct {
	once sync.Once
	rel  release
	err  error
}

// oldestRelease builds tendril-server and tendril-agent at the commit
// compat/OLDEST names, stamped oldestVersion, once per user: the binaries
// are kept under the user's cache folder. The agent is also put in binDir
// as agent-<oldestVersion>, where fleet.addAgent finds agents.
func oldestRelease(t *testing.T) release {
	t.Helper()
	oldest.once.Do(func() {
		start := time.Now()
		var built bool
		oldest.rel, built, oldest.err = buildOldest()
		if oldest.err == nil {
			oldest.err = copyBinary(oldest.rel.agent, filepath.Join(binDir, "agent-"+oldestVersion))
		}
		if built {
			t.Logf("built the oldest supported release %s in %s", oldest.rel.commit, time.Since(start).Round(100*time.Millisecond))
		}
	})
	if oldest.err != nil {
		t.Fatal(oldest.err)
	}
	return oldest.rel
}

// buildOldest returns the binaries of compat/OLDEST's commit, building
// them first (built) unless the cache has them.
func buildOldest() (rel release, built bool, err error) {
	root := moduleRoot()
	commit, err := readOldest(filepath.Join(root, "compat", "OLDEST"))
	if err != nil {
		return release{}, false, err
	}
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", commit+"^{commit}").CombinedOutput(); err != nil {
		return release{}, false, fmt.Errorf("compat/OLDEST names commit %s, which this clone does not have (%v: %s): the compatibility tests build it from git history; fetch the full history (git fetch --unshallow, or clone without --depth)",
			commit, err, bytes.TrimSpace(out))
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	// The recipe is in the name: another stamp is another build.
	dir := filepath.Join(cache, "tendril-compat", commit+"-"+oldestVersion)
	bin := filepath.Join(dir, "bin")
	rel = release{commit: commit, server: filepath.Join(bin, "tendril-server"), agent: filepath.Join(bin, "tendril-agent")}
	if isFile(rel.server) && isFile(rel.agent) {
		return rel, false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return release{}, false, err
	}
	// Everything is made in folders of its own and moved into place whole
	// at the end, so that a build cut short or running twice at once
	// leaves no half a release behind.
	src, err := os.MkdirTemp(dir, "src-")
	if err != nil {
		return release{}, false, err
	}
	defer os.RemoveAll(src)
	if err := gitArchive(root, commit, src); err != nil {
		return release{}, false, err
	}
	tmp, err := os.MkdirTemp(dir, "bin-")
	if err != nil {
		return release{}, false, err
	}
	defer os.RemoveAll(tmp)
	// Only the module proxy is needed: GOCACHE and GOMODCACHE are the
	// user's, shared with the build of this tree, so most of it is cached.
	build := exec.Command("go", "build", "-buildvcs=false", "-o", tmp+string(filepath.Separator),
		"-ldflags", "-X github.com/tendrildeploy/tendril/version.Version="+oldestVersion,
		"./cmd/tendril-server", "./cmd/tendril-agent")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		return release{}, false, fmt.Errorf("build the oldest supported release %s: %v\n%s", commit, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil && !(isFile(rel.server) && isFile(rel.agent)) {
		return release{}, false, fmt.Errorf("keep the oldest supported release's binaries: %w", err)
	}
	return rel, true, nil
}

var fullHash = regexp.MustCompile(`^[0-9a-f]{40}$`)

// readOldest reads compat/OLDEST: comment lines (#) and a full commit hash.
func readOldest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var commits []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			commits = append(commits, line)
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if len(commits) != 1 || !fullHash.MatchString(commits[0]) {
		return "", fmt.Errorf("%s: want one full commit hash (40 hex digits) besides # comments, got %q", path, commits)
	}
	return commits[0], nil
}

// gitArchive writes the tree of commit into dir.
func gitArchive(repo, commit, dir string) error {
	cmd := exec.Command("git", "-C", repo, "archive", "--format=tar", commit)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("git archive %s: %w", commit, err)
	}
	xerr := untar(out, dir)
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git archive %s: %v: %s", commit, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if xerr != nil {
		return fmt.Errorf("git archive %s: %w", commit, xerr)
	}
	return nil
}

// untar extracts the folders, files and symbolic links of a tar stream
// into dir.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.FromSlash(h.Name)
		if !filepath.IsLocal(name) {
			return fmt.Errorf("entry %q is outside the tree", h.Name)
		}
		path := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(path, 0o755)
		case tar.TypeReg:
			err = writeFile(path, tr, os.FileMode(h.Mode).Perm())
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, path)
		}
		if err != nil {
			return err
		}
	}
}

func writeFile(path string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o200)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// copyBinary copies an executable to a new path.
func copyBinary(from, to string) error {
	r, err := os.Open(from)
	if err != nil {
		return err
	}
	defer r.Close()
	return writeFile(to, r, 0o755)
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}
