package servertest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/tendrildeploy/tendril/version"
)

// agentStubs holds the agent stand-ins built in this test binary's run,
// by version, platform and tag: each is built once, by its first caller.
var agentStubs struct {
	sync.Mutex
	m map[string]*agentStub
}

type agentStub struct {
	once sync.Once
	b    []byte
	err  error
}

// AgentBinary returns a stand-in for tendril-agent stamped as version for
// goos/goarch: testdata/agentstub, a small real Go program built with
// -trimpath and -ldflags "-X github.com/tendrildeploy/tendril/version.Version=VERSION",
// as release builds are. The coordinator reads the version and platform
// built into an agent package and refuses one that differs from what the
// upload says, so tests cannot pose a byte string as an executable. A tag
// is built in too when given, to make another binary of the same version.
//
// Each binary is built once per test binary run and kept in memory, so
// that tests pushing packages stay fast; Go's build cache makes the first
// build of a platform short after the first run on a machine.
func AgentBinary(t testing.TB, ver, goos, goarch string, tag ...string) []byte {
	t.Helper()
	key := strings.Join(append([]string{ver, goos, goarch}, tag...), " ")
	agentStubs.Lock()
	if agentStubs.m == nil {
		agentStubs.m = make(map[string]*agentStub)
	}
	s := agentStubs.m[key]
	if s == nil {
		s = &agentStub{}
		agentStubs.m[key] = s
	}
	agentStubs.Unlock()
	s.once.Do(func() { s.b, s.err = buildAgentStub(ver, goos, goarch, strings.Join(tag, "")) })
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.b
}

func buildAgentStub(ver, goos, goarch, tag string) ([]byte, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return nil, fmt.Errorf("build agent stub: cannot locate package servertest")
	}
	dir, err := os.MkdirTemp("", "tendril-agentstub-")
	if err != nil {
		return nil, fmt.Errorf("build agent stub: %w", err)
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "tendril-agent")
	// -w drops DWARF to keep the binary small; the symbol table, which
	// the version is read through, stays, as in release builds.
	ldflags := "-w -X " + version.Symbol + "=" + ver
	if tag != "" {
		ldflags += " -X main.tag=" + tag
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "./testdata/agentstub")
	cmd.Dir = filepath.Dir(self)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build agent stub %s for %s/%s: %v\n%s", ver, goos, goarch, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("build agent stub: %w", err)
	}
	return b, nil
}
