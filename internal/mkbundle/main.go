// Command mkbundle builds the Calamari bundle: it cross-builds cmd/calamari
// for each platform, stamped with the version, and packs the binaries with
// bundle.Pack into a .tar.gz whose manifest names each platform's entry
// point. The bundle is unsigned; the coordinator signs it at upload.
//
//	go run ./internal/mkbundle -version V [-out dist/calamari-V.tar.gz]
//	    [-platforms linux/amd64,linux/arm64,windows/amd64,darwin/arm64]
//
// It prints the bundle's path, SHA-256 and size.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/tendrildeploy/tendril/bundle"
)

const (
	defaultPlatforms = "linux/amd64,linux/arm64,windows/amd64,darwin/arm64"
	bundleName       = "calamari"
	versionVar       = "github.com/tendrildeploy/tendril/version.Version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkbundle: %v\n", err)
		os.Exit(1)
	}
}

type config struct {
	version   string
	out       string
	platforms []platform
	pkg       string
	goCmd     string
}

type platform struct{ goos, goarch string }

func (p platform) String() string { return p.goos + "/" + p.goarch }

// dir is the platform's folder in the bundle, e.g. "linux-amd64".
func (p platform) dir() string { return p.goos + "-" + p.goarch }

// entrypoint is the slash path of the platform's binary in the bundle.
func (p platform) entrypoint() string {
	exe := bundleName
	if p.goos == "windows" {
		exe += ".exe"
	}
	return p.dir() + "/" + exe
}

func parseArgs(args []string) (config, error) {
	fs := flag.NewFlagSet("mkbundle", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c config
	var platforms string
	fs.StringVar(&c.version, "version", "", "the version to stamp and name the bundle with (required)")
	fs.StringVar(&c.out, "out", "", "the bundle to write (default dist/calamari-VERSION.tar.gz)")
	fs.StringVar(&platforms, "platforms", defaultPlatforms, "comma-separated os/arch list")
	fs.StringVar(&c.pkg, "pkg", "./cmd/calamari", "the package to build, relative to the module root")
	fs.StringVar(&c.goCmd, "go", "go", "the go command")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if !bundle.ValidVersion(c.version) {
		return config{}, fmt.Errorf("-version %q: want a semantic version without a leading v, like 1.2.3", c.version)
	}
	if c.out == "" {
		c.out = filepath.Join("dist", bundleName+"-"+c.version+".tar.gz")
	}
	seen := map[string]bool{}
	for _, s := range strings.Split(platforms, ",") {
		s = strings.TrimSpace(s)
		goos, goarch, ok := strings.Cut(s, "/")
		if !ok || goos == "" || goarch == "" || strings.Contains(goarch, "/") {
			return config{}, fmt.Errorf("-platforms: %q is not os/arch", s)
		}
		if seen[s] {
			return config{}, fmt.Errorf("-platforms: %s is listed twice", s)
		}
		seen[s] = true
		c.platforms = append(c.platforms, platform{goos, goarch})
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseArgs(args)
	if err != nil {
		return err
	}
	root, err := moduleRoot(ctx, c.goCmd)
	if err != nil {
		return err
	}
	src, err := os.MkdirTemp("", "mkbundle-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	eps := make(map[string]string, len(c.platforms))
	for _, p := range c.platforms {
		bin := filepath.Join(src, filepath.FromSlash(p.entrypoint()))
		if err := build(ctx, c, root, p, bin); err != nil {
			return err
		}
		eps[p.String()] = p.entrypoint()
	}
	sum, size, err := writeBundle(ctx, c, src, eps)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s sha256:%s %d bytes\n", c.out, sum, size)
	return err
}

// moduleRoot finds the folder of go.mod, so the tool works from any
// folder of the module (the tests run it from their own).
func moduleRoot(ctx context.Context, goCmd string) (string, error) {
	out, err := exec.CommandContext(ctx, goCmd, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the tendril module")
	}
	return filepath.Dir(gomod), nil
}

// build cross-builds one platform's binary. -s -w drops the symbol table
// and DWARF, halving the bundle every agent downloads; panics still name
// their functions.
func build(ctx context.Context, c config, root string, p platform, bin string) error {
	cmd := exec.CommandContext(ctx, c.goCmd, "build", "-trimpath",
		"-ldflags", "-s -w -X "+versionVar+"="+c.version, "-o", bin, c.pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.goos, "GOARCH="+p.goarch)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s for %s: %w\n%s", c.pkg, p, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// writeBundle packs src into c.out, atomically (a temporary file renamed
// into place), and checks the result with bundle.Check as an agent's
// coordinator will. It returns the bundle's SHA-256 and size.
func writeBundle(ctx context.Context, c config, src string, eps map[string]string) (string, int64, error) {
	if err := os.MkdirAll(filepath.Dir(c.out), 0o755); err != nil {
		return "", 0, err
	}
	f, err := os.CreateTemp(filepath.Dir(c.out), "."+filepath.Base(c.out)+".tmp-*")
	if err != nil {
		return "", 0, err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	if _, err := bundle.Pack(ctx, cw, bundleName, c.version, src, eps); err != nil {
		f.Close()
		return "", 0, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return "", 0, err
	}
	if _, _, err := bundle.Check(ctx, f, bundle.Limits{}); err != nil {
		f.Close()
		return "", 0, fmt.Errorf("the bundle written does not check: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", 0, err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp, c.out); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
