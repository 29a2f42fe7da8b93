package version_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/version"
)

// build builds the agent stand-in used by the coordinator's tests (a
// real Go program that imports this package) with the given flags, for a
// platform, and returns its path.
func build(t *testing.T, goos, goarch string, flags ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "agent")
	args := append(append([]string{"build"}, flags...), "-o", out, "./internal/servertest/testdata/agentstub")
	cmd := exec.Command("go", args...)
	cmd.Dir = ".." // the module root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

func stampFlag(v string) string { return "-X " + version.Symbol + "=" + v }

func readBinary(t *testing.T, path string) (version.Binary, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return version.ReadBinary(f)
}

func TestReadBinary(t *testing.T) {
	tests := []struct {
		name         string
		goos, goarch string
		flags        []string
		want         string
	}{
		// As make build and scripts/dist.sh build releases: -trimpath
		// keeps -ldflags out of the build information, so the version is
		// read through the symbol table.
		{"release linux/amd64", "linux", "amd64", []string{"-trimpath", "-ldflags", stampFlag("1.2.3")}, "1.2.3"},
		{"release linux/arm64", "linux", "arm64", []string{"-trimpath", "-ldflags", stampFlag("1.2.3-rc.1")}, "1.2.3-rc.1"},
		{"release linux/386", "linux", "386", []string{"-trimpath", "-ldflags", stampFlag("1.2.3")}, "1.2.3"},
		{"release linux/arm", "linux", "arm", []string{"-trimpath", "-ldflags", stampFlag("1.2.3")}, "1.2.3"},
		{"release windows/amd64", "windows", "amd64", []string{"-trimpath", "-ldflags", stampFlag("1.2.3")}, "1.2.3"},
		{"release windows/386", "windows", "386", []string{"-trimpath", "-ldflags", stampFlag("1.2.3")}, "1.2.3"},
		{"release darwin/arm64", "darwin", "arm64", []string{"-trimpath", "-ldflags", stampFlag("1.2.3")}, "1.2.3"},
		{"release darwin/amd64", "darwin", "amd64", []string{"-trimpath", "-ldflags", stampFlag("1.2.3")}, "1.2.3"},
		// As the compatibility suite builds the oldest release and the
		// end-to-end tests build theirs: no -trimpath.
		{"test build", "linux", "amd64", []string{"-ldflags", stampFlag("1.0.0")}, "1.0.0"},
		// Stripped: only the recorded -ldflags say it.
		{"stripped, no -trimpath", "linux", "amd64", []string{"-ldflags", "-s -w " + stampFlag("2.0.0")}, "2.0.0"},
		{"stripped windows, no -trimpath", "windows", "amd64", []string{"-ldflags", "-s -w " + stampFlag("2.0.0")}, "2.0.0"},
		// Stamped twice: the linker uses the last.
		{"stamped twice", "linux", "amd64", []string{"-trimpath", "-ldflags", stampFlag("1.0.0") + " " + stampFlag("1.0.1")}, "1.0.1"},
		{"not stamped", "linux", "amd64", []string{"-trimpath"}, "0.0.0-dev"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readBinary(t, build(t, tt.goos, tt.goarch, tt.flags...))
			if err != nil {
				t.Fatal(err)
			}
			want := version.Binary{Version: tt.want, OS: tt.goos, Arch: tt.goarch}
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestReadBinaryRefusals(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A Go program that is not Tendril's: its own module, no version
	// package.
	other := filepath.Join(dir, "other")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	write("other/go.mod", []byte("module example.com/other\n\ngo 1.26\n"))
	write("other/main.go", []byte("package main\n\nfunc main() { println(\"hello\") }\n"))
	cmd := exec.Command("go", "build", "-trimpath", "-o", "other", ".")
	cmd.Dir = other
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build another Go program: %v\n%s", err, b)
	}
	tests := []struct {
		name    string
		path    string
		wantErr error
		want    string
	}{
		{"ELF that is not Go", write("elf", append([]byte("\x7fELF\x02\x01\x01\x00"), bytes.Repeat([]byte("x"), 4096)...)),
			version.ErrNotGo, "read build information: the file is not a Go program"},
		{"script", write("script", []byte("#!/bin/sh\necho 1.2.0\n")), version.ErrNotGo, "not a Go program"},
		{"empty", write("empty", nil), version.ErrNotGo, "not a Go program"},
		{"another Go program", filepath.Join(other, "other"), version.ErrNoVersion,
			"has no " + version.Symbol + "; is it tendril-agent?"},
		{"stripped and -trimpath", build(t, "linux", "amd64", "-trimpath", "-ldflags", "-s -w "+stampFlag("1.2.3")), version.ErrNoVersion,
			"no symbol table (built with -ldflags -s) and no recorded -ldflags (built with -trimpath), so its version cannot be read; rebuild it without -s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readBinary(t, tt.path)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %+v, %v; want %v containing %q", got, err, tt.wantErr, tt.want)
			}
		})
	}
}
