package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/certs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestMkbundle builds a bundle for the host platform only (to stay fast),
// checks it as the coordinator would, installs it as an agent would, and
// runs its entry point.
func TestMkbundle(t *testing.T) {
	ctx := context.Background()
	const version = "1.2.3-test.1"
	out := filepath.Join(t.TempDir(), "dist", "calamari-"+version+".tar.gz")
	host := platform{runtime.GOOS, runtime.GOARCH}
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"-version", version, "-out", out, "-platforms", host.String()}, &stdout, &stderr); err != nil {
		t.Fatalf("mkbundle: %v\n%s", err, stderr.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if got, want := stdout.String(), out+" sha256:"+hex.EncodeToString(sum[:]); !strings.HasPrefix(got, want+" ") {
		t.Errorf("output: got %q, want it to start with %q", got, want)
	}

	m, raw, err := bundle.Check(ctx, bytes.NewReader(data), bundle.Limits{})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if m.Name != "calamari" || m.Version != version {
		t.Errorf("manifest: got %s %s, want calamari %s", m.Name, m.Version, version)
	}
	if want := map[string]string{host.String(): host.entrypoint()}; !reflect.DeepEqual(m.Entrypoints, want) {
		t.Errorf("entry points: got %v, want %v", m.Entrypoints, want)
	}

	key, err := certs.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := bundle.Install(ctx, bytes.NewReader(data), dir, key.Public(), bundle.Sign(key, raw), bundle.Limits{}); err != nil {
		t.Fatalf("Install: %v", err)
	}
	ep, err := m.Entrypoint(runtime.GOOS, runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, version, filepath.FromSlash(ep))
	got, err := exec.Command(bin, "version").Output()
	if err != nil || string(got) != version+"\n" {
		t.Errorf("calamari version: got %q, %v; want %q", got, err, version+"\n")
	}
	got, err = exec.Command(bin, "version", "--json").Output()
	var v struct{ Version string }
	if err != nil || json.Unmarshal(got, &v) != nil || v.Version != version {
		t.Errorf("calamari version --json: got %q, %v; want version %s", got, err, version)
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args    []string
		wantOut string
		wantN   int
		wantErr bool
	}{
		{[]string{"-version", "1.2.3"}, filepath.Join("dist", "calamari-1.2.3.tar.gz"), 4, false},
		{[]string{"-version", "1.2.3", "-platforms", "linux/amd64", "-out", "x.tgz"}, "x.tgz", 1, false},
		{[]string{}, "", 0, true},
		{[]string{"-version", "v1.2.3"}, "", 0, true},
		{[]string{"-version", "1.2"}, "", 0, true},
		{[]string{"-version", "1.2.3", "-platforms", "linux"}, "", 0, true},
		{[]string{"-version", "1.2.3", "-platforms", "linux/amd64,linux/amd64"}, "", 0, true},
		{[]string{"-version", "1.2.3", "extra"}, "", 0, true},
	}
	for _, tt := range tests {
		c, err := parseArgs(tt.args)
		if (err != nil) != tt.wantErr || c.out != tt.wantOut || len(c.platforms) != tt.wantN {
			t.Errorf("parseArgs(%q): got %q %d platforms, %v; want %q %d, error %v", tt.args, c.out, len(c.platforms), err, tt.wantOut, tt.wantN, tt.wantErr)
		}
	}
}

func TestEntrypointNames(t *testing.T) {
	tests := []struct {
		p    platform
		want string
	}{
		{platform{"linux", "amd64"}, "linux-amd64/calamari"},
		{platform{"windows", "amd64"}, "windows-amd64/calamari.exe"},
		{platform{"darwin", "arm64"}, "darwin-arm64/calamari"},
	}
	for _, tt := range tests {
		if got := tt.p.entrypoint(); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.p, got, tt.want)
		}
	}
}
