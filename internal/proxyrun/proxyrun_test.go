package proxyrun

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTinyproxyConf(t *testing.T) {
	tests := []struct {
		name      string
		o         TinyproxyOptions
		want      []string
		wantNot   []string
		wantError string
	}{
		{"no credentials", TinyproxyOptions{}, []string{"Port 3128", "Listen 127.0.0.1", "Allow 127.0.0.1"}, []string{"BasicAuth", "ConnectPort"}, ""},
		{"credentials", TinyproxyOptions{User: "alice", Password: "s3cret"}, []string{"BasicAuth alice s3cret"}, nil, ""},
		{"token-like credentials", TinyproxyOptions{User: "bench", Password: "a1-b2.c3_d4"}, []string{"BasicAuth bench a1-b2.c3_d4"}, nil, ""},
		{"networks and ports", TinyproxyOptions{Allow: []string{"192.0.2.0/24"}, ConnectPorts: []int{443, 10943}},
			[]string{"Allow 192.0.2.0/24", "ConnectPort 443", "ConnectPort 10943"}, []string{"Allow 127.0.0.1"}, ""},
		{"space in a password", TinyproxyOptions{User: "alice", Password: "two words"}, nil, nil, "letters, digits"},
		{"newline in a user", TinyproxyOptions{User: "alice\nAllow 0.0.0.0/0", Password: "x"}, nil, nil, "letters, digits"},
		{"user without password", TinyproxyOptions{User: "alice"}, nil, nil, "letters, digits"},
		{"directive in a network", TinyproxyOptions{Allow: []string{"10.0.0.0/8\nAllow 0.0.0.0/0"}}, nil, nil, "cannot hold"},
		{"port out of range", TinyproxyOptions{ConnectPorts: []int{0}}, nil, nil, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := tinyproxyConf(3128, tt.o)
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantError)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			lines := strings.Split(conf, "\n")
			for _, w := range tt.want {
				if !slices.Contains(lines, w) {
					t.Errorf("config lacks the line %q; got:\n%s", w, conf)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(conf, w) {
					t.Errorf("config has %q; got:\n%s", w, conf)
				}
			}
		})
	}
}

func TestNginxConf(t *testing.T) {
	conf, err := nginxConf("/tmp/x", 8443, "/tmp/x/cert.pem", "/tmp/x/key.pem", "/agent", "127.0.0.1:10980")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"listen 127.0.0.1:8443 ssl;", "ssl_certificate /tmp/x/cert.pem;", "location = /agent {",
		"proxy_pass http://127.0.0.1:10980;", `proxy_set_header Connection "upgrade";`, "access_log /tmp/x/access.log;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q; got:\n%s", want, conf)
		}
	}
	for _, bad := range []struct{ name, dir, path, upstream, want string }{
		{"space in the folder", "/tmp/a b", "/agent", "127.0.0.1:1", "cannot hold"},
		{"brace in the folder", "/tmp/{x}", "/agent", "127.0.0.1:1", "cannot hold"},
		{"directive in the path", "/tmp/x", "/agent; return 200", "127.0.0.1:1", "cannot hold"},
		{"relative path", "/tmp/x", "agent", "127.0.0.1:1", "does not start with /"},
		{"upstream without port", "/tmp/x", "/agent", "127.0.0.1", "not host:port"},
	} {
		if _, err := nginxConf(bad.dir, 8443, "/tmp/c", "/tmp/k", bad.path, bad.upstream); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: got error %v, want one containing %q", bad.name, err, bad.want)
		}
	}
}

// TestServeExits: a program that exits instead of listening is reported
// with its output, and nothing of it is left.
func TestServeExits(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.log")
	_, err := serve(context.Background(), exec.Command("/bin/sh", "-c", "echo bad config; exit 3"), "127.0.0.1:1", out, out)
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "bad config") {
		t.Fatalf("got error %v, want one saying it exited, with its output", err)
	}
}

func TestStartTinyproxy(t *testing.T) {
	needs(t, "tinyproxy")
	p, err := StartTinyproxy(context.Background(), filepath.Join(t.TempDir(), "tp"), TinyproxyOptions{User: "alice", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	target, stop := echoServer(t)
	defer stop()
	if got := connect(t, p.Addr, target, ""); got != http.StatusUnauthorized && got != http.StatusProxyAuthRequired {
		t.Errorf("CONNECT without credentials: got %d, want 401 or 407", got)
	}
	if got := connect(t, p.Addr, target, "alice:s3cret"); got != http.StatusOK {
		t.Errorf("CONNECT with credentials: got %d, want 200", got)
	}
	if n := p.Tunnels(target); n != 2 {
		t.Errorf("got %d tunnels logged for %s, want 2\n%s", n, target, p.Log())
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() {
		t.Error("tinyproxy still runs after Close")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
		c.Close()
		t.Error("something still listens on the proxy's address after Close")
	}
}

func TestStartNginx(t *testing.T) {
	needs(t, "nginx")
	p, err := StartNginx(context.Background(), filepath.Join(t.TempDir(), "nginx"), "127.0.0.1:1", "/agent")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}
	resp, err := cl.Get("https://" + p.Addr + "/elsewhere")
	if err != nil {
		t.Fatalf("GET over TLS: %v\n%s", err, p.Log())
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /elsewhere: got %d, want 404", resp.StatusCode)
	}
	cl.CloseIdleConnections()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() {
		t.Error("nginx still runs after Close")
	}
}

func TestStartNotInstalled(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := StartTinyproxy(context.Background(), t.TempDir(), TinyproxyOptions{}); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("tinyproxy not on PATH: got %v, want ErrNotInstalled", err)
	}
	if _, err := StartNginx(context.Background(), t.TempDir(), "127.0.0.1:1", "/agent"); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("nginx not on PATH: got %v, want ErrNotInstalled", err)
	}
}

func needs(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed; scripts/deps.sh installs it", name)
		}
		t.Skipf("%s is not installed (make test installs it)", name)
	}
}

// echoServer accepts connections on loopback and closes them: a CONNECT
// target.
func echoServer(t *testing.T) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String(), func() { ln.Close(); <-done }
}

// connect sends CONNECT target through the proxy, with Basic credentials
// if given, and returns the status.
func connect(t *testing.T, proxyAddr, target, userPass string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if userPass != "" {
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(userPass)) + "\r\n"
	}
	if _, err := c.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("read the proxy's answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
