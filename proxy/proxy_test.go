package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tendrildeploy/tendril/internal/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParse(t *testing.T) {
	env := Env{HTTPSProxy: "http://envproxy:3128"}
	tests := []struct {
		in      string
		want    string // the setting's String, "" when an error is wanted
		wantErr string
	}{
		{"", "from the environment", ""},
		{"none", "none", ""},
		{" none ", "none", ""},
		{"http://proxy.example:3128", "http://proxy.example:3128", ""},
		{"http://alice:s3cret@proxy.example:3128", "http://xxxxx@proxy.example:3128", ""},
		{"http://s3cret@proxy.example:3128", "http://xxxxx@proxy.example:3128", ""}, // a token as the user
		{"http://proxy.example", "http://proxy.example:80", ""},
		{"http://proxy.example:3128/", "http://proxy.example:3128", ""},
		{"https://proxy.example:3128", "", "want http://"},
		{"socks5://proxy.example:1080", "", "want http://"},
		{"proxy.example:3128", "", "want http://"},
		{"http://", "", "no host"},
		{"http://proxy.example:3128/some/path", "", "no path"},
		{"http://alice:s3cret@proxy.example:3128/?q=1", "", "no path"},
		{"http://alice:s3cret@proxy example:3128", "", "does not parse"},
		{"http//alice:s3cret@proxy.example:3128", "", "want http://"},
		{"::::", "", "does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s, err := Parse(tt.in, env)
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrBadURL) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want ErrBadURL saying %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil || s.String() != tt.want {
				t.Fatalf("got %q, %v; want %q", s.String(), err, tt.want)
			}
		})
	}
}

func TestParseEnvironment(t *testing.T) {
	if s, err := Parse("", Env{HTTPSProxy: "proxy.example:3128"}); err != nil || !s.FromEnv {
		t.Fatalf("HTTPS_PROXY without a scheme: got %v, %v; want it taken as http", s, err)
	}
	_, err := Parse("", Env{HTTPSProxy: "http://alice:s3%zzcret@proxy.example:3128"})
	if !errors.Is(err, ErrBadURL) || !strings.Contains(err.Error(), "HTTPS_PROXY") || strings.Contains(err.Error(), "s3") {
		t.Fatalf("a malformed HTTPS_PROXY: got %v, want ErrBadURL naming HTTPS_PROXY, without the password", err)
	}
	if _, err := Parse("none", Env{HTTPSProxy: "http://alice:s3%zzcret@proxy.example:3128"}); err != nil {
		t.Fatalf("--proxy none with a malformed HTTPS_PROXY: got %v, want the environment ignored", err)
	}
}

func TestFor(t *testing.T) {
	env := Env{HTTPSProxy: "http://alice:pw@envproxy:3128", NoProxy: "inside.example,.corp.example"}
	explicit, _ := url.Parse("http://given:8080")
	tests := []struct {
		name    string
		setting Setting
		addr    string
		want    string // proxy host:port, "" for direct
	}{
		{"explicit wins", Setting{URL: explicit, FromEnv: true, Env: env}, "coordinator.example:10943", "given:8080"},
		{"environment", Setting{FromEnv: true, Env: env}, "coordinator.example:10943", "envproxy:3128"},
		{"no_proxy host", Setting{FromEnv: true, Env: env}, "inside.example:10943", ""},
		{"no_proxy domain", Setting{FromEnv: true, Env: env}, "coord.corp.example:10943", ""},
		{"loopback is never proxied", Setting{FromEnv: true, Env: env}, "127.0.0.1:10943", ""},
		{"none", Setting{}, "coordinator.example:10943", ""},
		{"empty environment", Setting{FromEnv: true}, "coordinator.example:10943", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := tt.setting.For(tt.addr)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if u != nil {
				got = u.Host
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// listen serves each connection to a loopback listener with handle, one
// at a time, until the test ends, and returns the listener's address.
func listen(t *testing.T, handle func(c net.Conn)) string {
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
			handle(c)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// echoServer echoes what it reads: the coordinator at the far end of a
// tunnel.
func echoServer(t *testing.T) string {
	t.Helper()
	return listen(t, func(c net.Conn) { io.Copy(c, c) })
}

func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("through the tunnel: got %q, %v; want ping", line, err)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := parseURL(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestDialThroughTinyproxy tunnels through Debian's tinyproxy asking for
// Basic credentials: the right ones open the tunnel, none or wrong ones
// are refused with 407, and a proxy that does not serve this client or
// this port refuses with 403. (tinyproxy answers a missing or wrong
// password with 401 or 407, where HTTP says 407; both read as wanting
// credentials.)
func TestDialThroughTinyproxy(t *testing.T) {
	target := echoServer(t)
	authed := proxytest.Tinyproxy(t, proxytest.Options{User: "alice", Password: "s3cret"}).Addr
	ctx := context.Background()

	c, err := Dial(ctx, mustURL(t, "http://alice:s3cret@"+authed), target, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	c.Close()

	denied := proxytest.Tinyproxy(t, proxytest.Options{Allow: []string{"192.0.2.0/24"}}).Addr
	otherPort := proxytest.Tinyproxy(t, proxytest.Options{ConnectPorts: []int{443}}).Addr
	tests := []struct {
		name   string
		proxy  string
		status []int
		hint   string
	}{
		{"no credentials", "http://" + authed, []int{401, 407}, "wants credentials"},
		{"wrong password", "http://alice:wrong@" + authed, []int{401, 407}, "wants credentials"},
		{"client not allowed", "http://" + denied, []int{403}, "does not allow"},
		{"port not allowed", "http://" + otherPort, []int{403}, "does not allow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Dial(ctx, mustURL(t, tt.proxy), target, 10*time.Second)
			var pe *Error
			if !errors.As(err, &pe) || !slices.Contains(tt.status, pe.Status) || !strings.Contains(err.Error(), tt.hint) {
				t.Fatalf("got %v, want a %v refusal saying %q", err, tt.status, tt.hint)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "wrong") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

// fakeProxy answers every connection with answer(request line): what a
// proxy that misbehaves does. It is used only for answers a real proxy
// cannot be made to give on purpose.
func fakeProxy(t *testing.T, answer func(c net.Conn, req *http.Request)) string {
	t.Helper()
	return listen(t, func(c net.Conn) {
		if req, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			answer(c, req)
		}
	})
}

// TestDialRefusals: each way a proxy can refuse or fail a CONNECT is an
// error that says what happened, never with the password.
func TestDialRefusals(t *testing.T) {
	ctx := context.Background()
	var gotAuth string
	status := func(line string) func(net.Conn, *http.Request) {
		return func(c net.Conn, req *http.Request) {
			gotAuth = req.Header.Get("Proxy-Authorization")
			io.WriteString(c, "HTTP/1.1 "+line+"\r\nContent-Length: 5\r\n\r\nnope\n")
		}
	}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()
	tests := []struct {
		name   string
		proxy  string
		status int
		want   string
	}{
		{"407", fakeProxy(t, status("407 Proxy Authentication Required")), 407, "wants credentials"},
		{"403", fakeProxy(t, status("403 Forbidden")), 403, "does not allow"},
		{"502", fakeProxy(t, status("502 Bad Gateway")), 502, "could not reach the coordinator"},
		{"closes mid-CONNECT", fakeProxy(t, func(net.Conn, *http.Request) {}), 0, "the proxy closed or answered no HTTP"},
		{"answers garbage", fakeProxy(t, func(c net.Conn, _ *http.Request) { io.WriteString(c, "SSH-2.0-OpenSSH\r\n") }), 0, "answered no HTTP"},
		{"speaks before the coordinator", fakeProxy(t, func(c net.Conn, _ *http.Request) {
			io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\nunexpected")
		}), 0, "before the coordinator could speak"},
		{"unreachable", closedAddr, 0, "dial proxy " + closedAddr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Dial(ctx, mustURL(t, "http://bob:hunter2@"+tt.proxy), "coordinator.example:10943", 5*time.Second)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
			var pe *Error
			if tt.status != 0 && (!errors.As(err, &pe) || pe.Status != tt.status) {
				t.Fatalf("got %v, want proxy.Error %d", err, tt.status)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
	if want := "Basic Ym9iOmh1bnRlcjI="; gotAuth != want {
		t.Errorf("Proxy-Authorization: got %q, want %q", gotAuth, want)
	}
}

// TestDialTunnelOpens: a 2xx answer opens the tunnel even when it carries
// a Content-Length, which a CONNECT answer must not have and a client
// must ignore: the bytes after it are the tunnel's.
func TestDialTunnelOpens(t *testing.T) {
	for _, answer := range []string{
		"HTTP/1.1 200 Connection established\r\n\r\n",
		"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
	} {
		addr := fakeProxy(t, func(c net.Conn, _ *http.Request) {
			io.WriteString(c, answer)
			io.Copy(c, c) // then echo, as the far end of the tunnel
		})
		c, err := Dial(context.Background(), mustURL(t, "http://"+addr), "coordinator.example:10943", 5*time.Second)
		if err != nil {
			t.Fatalf("answer %q: got %v, want the tunnel open", answer, err)
		}
		roundTrip(t, c)
		c.Close()
	}
}

// TestDialCancelled: cancelling the dial's context ends it at once, even
// with a proxy that says nothing.
func TestDialCancelled(t *testing.T) {
	hold := make(chan struct{})
	addr := fakeProxy(t, func(net.Conn, *http.Request) { <-hold })
	defer close(hold)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := Dial(ctx, mustURL(t, "http://"+addr), "coordinator.example:10943", time.Minute)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want %v", err, context.Canceled)
	}
}

// TestDialSilentProxy: a proxy that accepts and never answers cannot hold
// the agent beyond the timeout.
func TestDialSilentProxy(t *testing.T) {
	hold := make(chan struct{})
	addr := fakeProxy(t, func(net.Conn, *http.Request) { <-hold })
	defer close(hold)
	_, err := Dial(context.Background(), mustURL(t, "http://"+addr), "coordinator.example:10943", 200*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v, want a timeout", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "none", "http://a:b@h:1", "http://h", "https://h", "h:1", "http://h/p", "%zz", "http://[::1]:3128"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := Parse(s, Env{})
		if err != nil {
			return
		}
		if st.URL != nil && (st.URL.Scheme != "http" || st.URL.Port() == "" || st.URL.Hostname() == "") {
			t.Fatalf("Parse(%q) accepted %v", s, st.URL)
		}
	})
}
