// Package proxytest runs real proxies for tests: Debian's tinyproxy (an
// HTTP CONNECT proxy) and nginx (a TLS-terminating reverse proxy),
// each started on a free loopback port with a configuration of the test's
// and stopped when the test ends. Without the program installed a test
// skips, or, when the environment variable CI is set, fails: make test
// installs both, so there they must run.
//
// Starting and stopping them is internal/proxyrun's, which the transfer
// benchmark uses too; this package ties a proxy's life to a test.
package proxytest

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/tendrildeploy/tendril/internal/proxyrun"
)

// Options configure a tinyproxy.
type Options = proxyrun.TinyproxyOptions

// Proxy is a running tinyproxy: Addr is its host:port, and Tunnels
// counts the CONNECT requests it received for a target.
type Proxy = proxyrun.Tinyproxy

// ReverseProxy is a running nginx: Addr is its host:port, and Upgrades
// counts the WebSocket upgrades it passed on and that have ended.
type ReverseProxy = proxyrun.Nginx

// Tinyproxy starts a tinyproxy for t.
func Tinyproxy(t testing.TB, o Options) *Proxy {
	t.Helper()
	p, err := proxyrun.StartTinyproxy(context.Background(), t.TempDir(), o)
	check(t, "tinyproxy", err)
	stopAtEnd(t, "tinyproxy", p.Close, p.Log)
	return p
}

// Nginx starts Debian's nginx as a TLS-terminating reverse proxy on a free
// loopback port for t, passing WebSocket upgrades at path to the plain
// HTTP upstream (host:port), as a load balancer on port 443 would. Its
// certificate is self-signed, made for the test. It skips or fails
// without nginx as Tinyproxy does.
func Nginx(t testing.TB, upstream, path string) *ReverseProxy {
	t.Helper()
	p, err := proxyrun.StartNginx(context.Background(), t.TempDir(), upstream, path)
	check(t, "nginx", err)
	stopAtEnd(t, "nginx", p.Close, p.Log)
	return p
}

// check skips the test when the program is not installed (fails it under
// CI, where make test installs it) and fails it on any other error.
func check(t testing.TB, name string, err error) {
	t.Helper()
	switch {
	case err == nil:
	case errors.Is(err, proxyrun.ErrNotInstalled) && os.Getenv("CI") == "":
		t.Skip(name + " is not installed (make test installs it)")
	case errors.Is(err, proxyrun.ErrNotInstalled):
		t.Fatal(name + " is not installed; scripts/deps.sh installs it")
	default:
		t.Fatal(err)
	}
}

// stopAtEnd stops the proxy when the test ends and shows its log if the
// test failed.
func stopAtEnd(t testing.TB, name string, stop func() error, log func() string) {
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, log())
		}
	})
}
