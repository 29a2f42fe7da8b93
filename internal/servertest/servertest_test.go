package servertest

import (
	"context"
	"go/parser"
	"go/token"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server"
	"github.com/tendrildeploy/tendril/server/datadir"
)

func TestCalamariScript(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the script needs /bin/sh")
	}
	out, err := exec.Command("/bin/sh", "-c", Calamari, "calamari", "run-script", "--inline", "echo hello; exit 3").Output()
	if string(out) != "hello\n" || exitCode(err) != 3 {
		t.Errorf("run-script: got %q, exit %d, want %q, exit 3", out, exitCode(err), "hello\n")
	}
	out, err = exec.Command("/bin/sh", "-c", Calamari, "calamari", "deploy").CombinedOutput()
	if string(out) != "calamari: unknown command deploy\n" || exitCode(err) != 2 {
		t.Errorf("unknown command: got %q, exit %d, want a complaint and exit 2", out, exitCode(err))
	}
}

func exitCode(err error) int {
	if xe, ok := err.(*exec.ExitError); ok {
		return xe.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestCalamariBundle(t *testing.T) {
	for _, filler := range []int{0, 100_000} {
		path := CalamariBundle(t, "1.2.0", filler)
		if got, want := filepath.Base(path), "calamari-1.2.0.tar.gz"; got != want {
			t.Errorf("file name: got %q, want %q", got, want)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		m, _, err := bundle.Check(context.Background(), f, bundle.DefaultLimits())
		f.Close()
		if err != nil {
			t.Fatalf("filler %d: %v", filler, err)
		}
		if m.Version != "1.2.0" {
			t.Errorf("filler %d: got version %q, want 1.2.0", filler, m.Version)
		}
		info, _ := os.Stat(path)
		if filler > 0 && info.Size() < int64(filler) {
			t.Errorf("filler %d: bundle of %d bytes, want the filler not compressed away", filler, info.Size())
		}
	}
}

func TestCopyDir(t *testing.T) {
	from, to := t.TempDir(), filepath.Join(t.TempDir(), "copy")
	os.MkdirAll(filepath.Join(from, "sub"), 0o700)
	os.WriteFile(filepath.Join(from, "admin.key"), []byte("secret"), 0o600)
	os.WriteFile(filepath.Join(from, "sub", "cert.pem"), []byte("cert"), 0o644)
	CopyDir(t, from, to)
	for name, want := range map[string]string{"admin.key": "secret", filepath.Join("sub", "cert.pem"): "cert"} {
		if b, err := os.ReadFile(filepath.Join(to, name)); err != nil || string(b) != want {
			t.Errorf("%s: got %q (%v), want %q", name, b, err, want)
		}
	}
	if runtime.GOOS != "windows" {
		info, err := os.Stat(filepath.Join(to, "admin.key"))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("admin.key: got %v (%v), want mode 0600 kept", info.Mode().Perm(), err)
		}
	}
}

func TestFreeAddr(t *testing.T) {
	addr := FreeAddr(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	ln.Close()
	if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
		t.Errorf("got host %q, want 127.0.0.1", host)
	}
}

// fatalTB records Fatalf instead of failing the test that runs it.
type fatalTB struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = format
	f.mu.Unlock()
	runtime.Goexit()
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, time.Minute, "the third check", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("got %d checks, want 3", n)
	}

	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		WaitFor(tb, 50*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	if tb.msg == "" {
		t.Fatal("WaitFor returned for a condition never true, want the test failed")
	}
	if waited := time.Since(start); waited < 50*time.Millisecond || waited > 10*time.Second {
		t.Errorf("failed after %s, want just after 50ms", waited)
	}
}

func TestStartAgent(t *testing.T) {
	bg := context.Background()
	dir := t.TempDir()
	if _, err := datadir.Init(bg, dir); err != nil {
		t.Fatal(err)
	}
	s, err := server.New(bg, server.Config{DataDir: dir, Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0",
		HealthInterval: time.Hour, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	tok, err := s.CreateToken(bg, "Test", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := protocol.ParseJoin(tok.Join)
	if err != nil {
		t.Fatal(err)
	}
	// The first server named is not listening: the agent tries the next.
	StartAgent(t, Agent{Name: "web-1", Join: j, Servers: []string{FreeAddr(t), s.AgentAddr()},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	WaitFor(t, 20*time.Second, "web-1 connected", func() bool {
		agents, err := s.Agents(bg)
		return err == nil && len(agents) == 1 && agents[0].Name == "web-1" && agents[0].Connected && agents[0].Version == agentVersion
	})
}

// TestOnlyTestsImport: servertest starts agents and packs bundles from
// code meant for tests; no program may link it in.
func TestOnlyTestsImport(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	const path = `"github.com/tendrildeploy/tendril/internal/servertest"`
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			if imp.Path.Value == path {
				t.Errorf("%s imports servertest; only tests may", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
