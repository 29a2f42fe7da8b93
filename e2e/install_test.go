package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// releaseDir lays out what a release archive holds: the agent binary and
// install.sh side by side.
func releaseDir(t *testing.T, version string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tendril-agent-"+version+"-linux")
	copyFile(t, filepath.Join(binDir, "agent-"+version), filepath.Join(dir, "tendril-agent"))
	copyFile(t, filepath.Join(moduleRoot(), "scripts", "install.sh"), filepath.Join(dir, "install.sh"))
	return dir
}

func runInstall(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(dir, "install.sh"), args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestInstallScriptArguments(t *testing.T) {
	if out, err := exec.Command("sh", "-n", filepath.Join(moduleRoot(), "scripts", "install.sh")).CombinedOutput(); err != nil {
		t.Fatalf("sh -n install.sh: %v\n%s", err, out)
	}
	dir := releaseDir(t, "1.0.0")
	home := filepath.Join(t.TempDir(), "home")
	tests := []struct {
		name string
		args []string
		ok   bool
		want string
	}{
		{"help", []string{"--help"}, true, "Usage: install.sh --join"},
		{"unknown flag", []string{"--frobnicate"}, false, "unknown argument: --frobnicate"},
		{"flag without value", []string{"--join"}, false, "--join needs a value"},
		{"relative home", []string{"--join", "x", "--home", "rel/home", "--dry-run"}, false, "--home must be an absolute path"},
		{"no join for a new home", []string{"--home", home, "--dry-run"}, false, "--join is required"},
		{"dry run", []string{"--join", "tendril://h:1/?token=t", "--home", home, "--name", "svc-x", "--dry-run"}, true,
			"+ " + home + "/bin/tendril-agent register --home " + home + " --join tendril://h:1/?token=t"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runInstall(t, dir, tt.args...)
			if (err == nil) != tt.ok || !strings.Contains(out, tt.want) {
				t.Fatalf("got %v:\n%s\nwant ok=%v and %q", err, out, tt.ok, tt.want)
			}
		})
	}
	if _, err := os.Stat(home); err == nil {
		t.Fatal("a dry run or a refused run created the home")
	}
}

func TestInstallScriptFromRelease(t *testing.T) {
	needSysV(t)
	f := newFleet(t, "1.0.0")
	dir := releaseDir(t, "1.0.0")
	home := filepath.Join(t.TempDir(), "agent-home")
	name := serviceName(t)
	exe := filepath.Join(home, "bin", "tendril-agent")
	s := newAgentService(t, exe, home, name)
	t.Cleanup(func() { killHomeAgent(home) })
	out, err := runInstall(t, dir, "--join", f.join(), "--home", home, "--name", name, "--agent-name", "web-9")
	if err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	waitFor(t, "web-9 connected as a service", func() bool { return f.version("web-9") == "1.0.0" })
	s.wantStatus("running", 0)
	s.wantPIDRuns(exe)
	// Again: everything is in place, nothing changes, exit 0.
	if out, err := runInstall(t, dir, "--home", home, "--name", name); err != nil || !strings.Contains(out, "registered already") {
		t.Fatalf("install.sh again: %v\n%s", err, out)
	}
	s.wantStatus("running", 0)
}
