// Package proxytest runs real proxies for tests: Debian's tinyproxy (an
// HTTP CONNECT proxy) and nginx (a TLS-terminating reverse proxy),
// each started on a free loopback port with a configuration of the test's
// and stopped when the test ends. Without the program installed a test
// skips, or, when the environment variable CI is set, fails: make test
// installs both, so there they must run.
package proxytest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Options configure a tinyproxy.
type Options struct {
	// User and Password, if User is set, are the only credentials the
	// proxy accepts (Basic); without them it asks for none.
	User, Password string
	// Allow is the client networks the proxy serves; nil means loopback.
	// A client outside them is refused with 403.
	Allow []string
	// ConnectPorts, if set, are the only ports CONNECT may reach; others
	// are refused with 403.
	ConnectPorts []int
}

// Proxy is a running tinyproxy.
type Proxy struct {
	// Addr is its host:port.
	Addr string
	log  string
}

// Tunnels counts the CONNECT requests for target the proxy received, from
// its log: proof that a connection went through it.
func (p *Proxy) Tunnels(target string) int {
	b, _ := os.ReadFile(p.log)
	return strings.Count(string(b), "CONNECT "+target+" ")
}

// Tinyproxy starts a tinyproxy for t.
func Tinyproxy(t testing.TB, o Options) *Proxy {
	t.Helper()
	bin, dir := prepare(t, "tinyproxy")
	port := freePort(t)
	var conf strings.Builder
	fmt.Fprintf(&conf, "User nobody\nGroup nogroup\nPort %d\nListen 127.0.0.1\nTimeout 60\nMaxClients 64\nLogLevel Info\n", port)
	allow := o.Allow
	if allow == nil {
		allow = []string{"127.0.0.1"}
	}
	for _, a := range allow {
		fmt.Fprintf(&conf, "Allow %s\n", a)
	}
	for _, p := range o.ConnectPorts {
		fmt.Fprintf(&conf, "ConnectPort %d\n", p)
	}
	if o.User != "" {
		fmt.Fprintf(&conf, "BasicAuth %s %s\n", o.User, o.Password)
	}
	path := filepath.Join(dir, "tinyproxy.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logPath := filepath.Join(dir, "tinyproxy.log")
	serve(t, exec.Command(bin, "-d", "-c", path), addr, logPath, logPath)
	return &Proxy{Addr: addr, log: logPath}
}

// prepare finds the program name, skipping the test without it (failing
// it under CI, where make test installs it), and makes the folder it
// runs in, readable by the unprivileged user the program drops to.
func prepare(t testing.TB, name string) (bin, dir string) {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip(name + " is not installed (make test installs it)")
		}
		t.Fatal(name + " is not installed; scripts/deps.sh installs it")
	}
	dir = t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, dir
}

// serve starts cmd with its output in outPath, stops it when the test
// ends, and returns once it listens on addr. logPath is what to show if
// it fails: its output, or a log of its own.
func serve(t testing.TB, cmd *exec.Cmd, addr, outPath, logPath string) {
	t.Helper()
	name := filepath.Base(cmd.Path)
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		out.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s's log:\n%s", name, b)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("%s exited: %v\n%s", name, err, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not listening on %s after 10s: %v", name, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
