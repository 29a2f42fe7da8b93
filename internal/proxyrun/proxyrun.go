// Package proxyrun starts and stops the real proxies an agent reaches its
// coordinator through: Debian's tinyproxy (an HTTP CONNECT proxy) and
// nginx (a TLS-terminating reverse proxy passing WebSocket upgrades),
// each on a free loopback port with a configuration written for it in a
// folder of the caller's.
//
// Two kinds of caller need the same proxies: the tests, through
// internal/proxytest, which ties a proxy's life to a test, and
// `tendril-fleet bench-transfer`, which times agents behind them. This
// package is the part both share, with explicit Start and Close and
// errors instead of a *testing.T, so that a program can use it without
// linking in package testing or test-only code.
package proxyrun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ErrNotInstalled is returned, wrapped, when the proxy's program is not on
// PATH: the tests skip on it (scripts/deps.sh and scripts/bench-deps.sh
// install both programs), where any other failure is a failure.
var ErrNotInstalled = errors.New("not installed")

// startTimeout bounds the wait for a started proxy to listen.
const startTimeout = 10 * time.Second

// process is a proxy program running until Close.
type process struct {
	name    string
	cmd     *exec.Cmd
	out     *os.File
	logPath string
	exited  chan struct{}
	waitErr error // set before exited is closed
	once    sync.Once
	closed  error
}

// prepare finds the program name and makes dir, the folder it runs in,
// readable by the unprivileged user the program drops to when started as
// root.
func prepare(name, dir string) (bin string, err error) {
	bin, err = exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("start %s: %w (%v)", name, ErrNotInstalled, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("start %s: %w", name, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("start %s: %w", name, err)
	}
	return bin, nil
}

// serve starts cmd with its output in outPath and returns once it listens
// on addr; on failure the process is stopped. logPath is what to show if
// it fails: its output, or a log of its own.
func serve(ctx context.Context, cmd *exec.Cmd, addr, outPath, logPath string) (*process, error) {
	name := filepath.Base(cmd.Path)
	out, err := os.Create(outPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, out: out, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var d net.Dialer
	for {
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(dctx, "tcp", addr)
		dcancel()
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.exited:
			p.Close()
			return nil, fmt.Errorf("start %s: it exited: %v\n%s", name, p.waitErr, p.Log())
		case <-ctx.Done():
			p.Close()
			return nil, fmt.Errorf("start %s: not listening on %s after %s: %v\n%s", name, addr, startTimeout, err, p.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close stops the program and waits for it to be gone; later calls return
// the first one's result.
func (p *process) Close() error {
	p.once.Do(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if err := p.out.Close(); err != nil {
			p.closed = fmt.Errorf("stop %s: %w", p.name, err)
		}
	})
	return p.closed
}

// Exited says whether the program has ended, by Close or on its own: a
// proxy that died during a benchmark makes its figures meaningless.
func (p *process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Log is the program's log as far as it is written, for a failure's
// report.
func (p *process) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// freePort is a loopback port free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// checkConfWord refuses a value that would end or change the directive it
// is written into (whitespace, quotes, nginx's ; { } and #), instead of
// letting the proxy fail on, or worse accept, a different configuration.
func checkConfWord(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if i := strings.IndexFunc(s, func(r rune) bool {
		return r <= ' ' || r == 0x7f || strings.ContainsRune(`;{}#"'\`, r)
	}); i >= 0 {
		return fmt.Errorf("%s %q has a character a proxy configuration cannot hold unquoted (%q)", what, s, s[i])
	}
	return nil
}
