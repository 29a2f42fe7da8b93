package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/taskenv"

	"github.com/tendrildeploy/tendril/atomicfile"
)

// Layout of a deployment target folder:
//
//	DIR/releases/<name>/   one folder per deployed release
//	DIR/current            symbolic link to releases/<name> (Unix)
//	DIR/current.txt        "releases/<name>" (Windows, see switchCurrent)
const (
	releasesDir = "releases"
	currentLink = "current"
	currentFile = "current.txt"
	tmpPrefix   = ".tmp-"
)

// staleTemp is how old an unfinished extraction folder must be before a
// later deployment removes it (a concurrent deployment may own a new one).
const staleTemp = time.Hour

type deployOptions struct {
	pkg, target, release string
	keep                 int
	maxSize              int64
	goos                 string
}

func deployPackageCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("deploy-package")
	o := deployOptions{maxSize: maxPackageSize, goos: runtime.GOOS}
	fs.StringVar(&o.pkg, "package", "", "the package, a .tar.gz")
	fs.StringVar(&o.target, "target", "", "the target folder")
	fs.StringVar(&o.release, "release", "", "the release name (default: UTC time and a random suffix)")
	fs.IntVar(&o.keep, "keep", 3, "how many releases to keep, the current one included")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case o.pkg == "":
		return usagef("deploy-package: --package is required")
	case o.target == "":
		return usagef("deploy-package: --target is required")
	case o.keep < 1:
		return usagef("deploy-package: --keep %d: want at least 1", o.keep)
	case o.release != "" && !validRelease(o.release):
		return usagef("deploy-package: --release %q: want letters, digits, '.', '_' and '-', not starting with '.'", o.release)
	}
	o.pkg = resolvePackage(o.pkg, os.Getenv(taskenv.Files))
	dir, err := deployPackage(ctx, o)
	if err != nil {
		return fmt.Errorf("deploy-package: %w", err)
	}
	_, err = fmt.Fprintln(stdout, dir)
	return err
}

// resolvePackage finds a relative package path in the task's files folder
// when it is not in the working directory, so that
// "task run --file app.tar.gz -- deploy-package --package app.tar.gz" works.
func resolvePackage(pkg, filesDir string) string {
	if filepath.IsAbs(pkg) || filesDir == "" {
		return pkg
	}
	if _, err := os.Stat(pkg); err == nil {
		return pkg
	}
	if cand := filepath.Join(filesDir, pkg); fileExists(cand) {
		return cand
	}
	return pkg
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func validRelease(name string) bool {
	if name == "" || len(name) > 128 || name[0] == '.' || name[0] == '-' {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return filepath.IsLocal(name) // Windows device names (NUL, COM1) are not
}

// deployPackage extracts the package into a new release folder, switches
// current to it, prunes old releases and returns the release folder. The
// package is extracted into a temporary folder first and renamed into
// place, so a refused or broken package leaves the target as it was.
func deployPackage(ctx context.Context, o deployOptions) (string, error) {
	if o.release == "" {
		o.release = time.Now().UTC().Format("20060102T150405Z") + "-" + randomHex(3)
	}
	target, err := filepath.Abs(o.target)
	if err != nil {
		return "", err
	}
	releases := filepath.Join(target, releasesDir)
	final := filepath.Join(releases, o.release)
	if _, err := os.Lstat(final); err == nil {
		return "", fmt.Errorf("release %s already exists in %s", o.release, releases)
	}
	pkg, err := os.Open(o.pkg)
	if err != nil {
		return "", err
	}
	defer pkg.Close()
	if err := os.MkdirAll(releases, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(releases, tmpPrefix+o.release+"-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // nothing left after the rename
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := extractPackage(ctx, pkg, tmp, o.maxSize); err != nil {
		return "", fmt.Errorf("extract %s: %w", o.pkg, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", err
	}
	// Release age is the folder's modification time (see pruneReleases).
	now := time.Now()
	os.Chtimes(final, now, now)
	if err := switchCurrent(target, o.release, o.goos); err != nil {
		os.RemoveAll(final)
		return "", err
	}
	if err := pruneReleases(target, o.keep, o.goos); err != nil {
		return "", fmt.Errorf("deployed %s, but pruning old releases failed: %w", final, err)
	}
	return final, nil
}

// switchCurrent points current at releases/<name> atomically: readers see
// the old or the new release, never no release. On Unix it creates a new
// symbolic link and renames it over current. Windows needs privileges for
// symbolic links and cannot rename over a directory junction atomically, so
// there current.txt names the release, replaced by an atomic rename too.
func switchCurrent(target, name, goos string) error {
	rel := releasesDir + "/" + name
	if goos == "windows" {
		return atomicfile.Write(filepath.Join(target, currentFile), []byte(rel+"\n"), 0o644)
	}
	tmp := filepath.Join(target, ".current-"+randomHex(6))
	if err := os.Symlink(rel, tmp); err != nil {
		return fmt.Errorf("switch current: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(target, currentLink)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("switch current: %w", err)
	}
	if d, err := os.Open(target); err == nil {
		d.Sync() // make the switch durable; best effort
		d.Close()
	}
	return nil
}

// currentRelease returns the name of the release current points at, or ""
// if there is none.
func currentRelease(target, goos string) (string, error) {
	var rel string
	if goos == "windows" {
		b, err := os.ReadFile(filepath.Join(target, currentFile))
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		rel = strings.TrimSpace(string(b))
	} else {
		l, err := os.Readlink(filepath.Join(target, currentLink))
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		rel = l
	}
	name, ok := strings.CutPrefix(filepath.ToSlash(rel), releasesDir+"/")
	if !ok || !validRelease(name) {
		return "", fmt.Errorf("current points at %q, not at a release", rel)
	}
	return name, nil
}

// pruneReleases keeps the newest keep releases (by folder modification
// time, which deployPackage sets) and the current one, and removes the
// rest, along with unfinished extractions older than staleTemp.
func pruneReleases(target string, keep int, goos string) error {
	current, err := currentRelease(target, goos)
	if err != nil {
		return err
	}
	releases := filepath.Join(target, releasesDir)
	entries, err := os.ReadDir(releases)
	if err != nil {
		return err
	}
	type release struct {
		name string
		mod  time.Time
	}
	var rs []release
	var errs []error
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue
		}
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if time.Since(info.ModTime()) > staleTemp {
				errs = append(errs, os.RemoveAll(filepath.Join(releases, e.Name())))
			}
			continue
		}
		if e.IsDir() && validRelease(e.Name()) {
			rs = append(rs, release{e.Name(), info.ModTime()})
		}
	}
	slices.SortFunc(rs, func(a, b release) int {
		return cmp.Or(b.mod.Compare(a.mod), strings.Compare(b.name, a.name))
	})
	for i, r := range rs {
		if i < keep || r.name == current {
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(releases, r.name)))
	}
	return errors.Join(errs...)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails
	return hex.EncodeToString(b)
}
