// Package proxy dials through an HTTP proxy with CONNECT, for agents whose
// only way out is a company proxy. The proxy sees only the CONNECT line
// and, when it asks for them, the credentials; the mutually authenticated
// TLS session to the coordinator runs end to end through the tunnel.
//
// A Setting says which proxy to use: one given explicitly (a URL, with
// optional user and password), none at all, or the one the environment
// names (HTTPS_PROXY, bypassed for the hosts NO_PROXY lists). The caller
// reads the environment and hands it over as Env; this package reads no
// variable itself.
package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// None is the Setting text that turns every proxy off, the environment's
// too.
const None = "none"

// Env is what the process environment says about proxies: HTTPS_PROXY
// and NO_PROXY (or their lower-case forms), as the caller read them.
type Env struct {
	HTTPSProxy string
	NoProxy    string
}

// Setting is which proxy to dial through. The zero value uses no proxy.
type Setting struct {
	// URL is the proxy to use for every address, nil for none. Its user
	// information, if any, is sent as Basic credentials.
	URL *url.URL
	// FromEnv means: use Env's proxy for the addresses NO_PROXY does not
	// exclude. It is what an agent given no --proxy does.
	FromEnv bool
	// Env is the environment FromEnv reads.
	Env Env
}

// ErrBadURL means a proxy setting is neither a proxy URL nor "none".
var ErrBadURL = errors.New("not a proxy URL")

// Parse reads a proxy setting as an operator writes it: "" for the
// environment's, "none" for no proxy, or a URL such as
// http://user:password@proxy.example:3128 (http only: the CONNECT request
// itself goes in clear to the proxy, which is how HTTP proxies work; the
// session inside the tunnel is TLS). env is used when s is "".
func Parse(s string, env Env) (Setting, error) {
	switch strings.TrimSpace(s) {
	case "":
		if v := env.HTTPSProxy; v != "" {
			// A proxy URL without a scheme is an http one, as curl and
			// Go's net/http read HTTPS_PROXY.
			if !strings.Contains(v, "://") {
				v = "http://" + v
			}
			if _, err := parseURL(v); err != nil {
				return Setting{}, fmt.Errorf("HTTPS_PROXY: %w", err)
			}
		}
		return Setting{FromEnv: true, Env: env}, nil
	case None:
		return Setting{}, nil
	}
	u, err := parseURL(s)
	if err != nil {
		return Setting{}, err
	}
	return Setting{URL: u}, nil
}

func parseURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		// url's error quotes the input, password included.
		return nil, fmt.Errorf("proxy %q: %w: it does not parse as a URL", Redact(s), ErrBadURL)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("proxy %s: %w: want http://[user:password@]host:port, or %q", Redact(s), ErrBadURL, None)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("proxy %s: %w: no host", Redact(s), ErrBadURL)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("proxy %s: %w: a proxy URL has no path, query or fragment", Redact(s), ErrBadURL)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "80")
	}
	u.Path = ""
	return u, nil
}

// Redact returns a proxy URL fit for logs and errors: its credentials,
// user and password alike (some proxies take a token as the user), shown
// as "xxxxx". Text that does not parse is reduced to a placeholder, and
// whatever stands before an "@" in text that is no URL with a user is
// hidden, since a mistyped URL still holds its credentials.
func Redact(s string) string {
	s = strings.TrimSpace(s)
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable proxy URL)"
	}
	if u.User == nil {
		if i := strings.LastIndexByte(s, '@'); i >= 0 {
			return "(hidden)" + s[i:]
		}
		return u.String()
	}
	return redacted(u)
}

// redacted is u with its user information hidden.
func redacted(u *url.URL) string {
	if u.User == nil {
		return u.String()
	}
	c := *u
	c.User = url.User("xxxxx")
	return c.String()
}

// String describes the setting without its credentials.
func (s Setting) String() string {
	switch {
	case s.URL != nil:
		return redacted(s.URL)
	case s.FromEnv:
		return "from the environment"
	}
	return None
}

// For returns the proxy to use for the coordinator address addr
// (host:port), or nil to dial it directly. Like net/http, the environment
// is never used for loopback addresses.
func (s Setting) For(addr string) (*url.URL, error) {
	if s.URL != nil {
		return s.URL, nil
	}
	if !s.FromEnv || s.Env.HTTPSProxy == "" {
		return nil, nil
	}
	cfg := httpproxy.Config{HTTPSProxy: s.Env.HTTPSProxy, NoProxy: s.Env.NoProxy}
	u, err := cfg.ProxyFunc()(&url.URL{Scheme: "https", Host: addr})
	if err != nil || u == nil {
		if err != nil {
			return nil, fmt.Errorf("HTTPS_PROXY %s: %w", Redact(s.Env.HTTPSProxy), err)
		}
		return nil, nil
	}
	return parseURL(u.String())
}

// Error is a proxy's refusal of a CONNECT: its status and reason. 407
// means it wants (other) credentials (tinyproxy says 401), 403 that it
// does not allow the destination, 502 and 504 that it could not reach it.
type Error struct {
	Proxy  string // host:port of the proxy
	Target string // the address asked for
	Status int
	Reason string // the status line's text
}

func (e *Error) Error() string {
	hint := ""
	switch e.Status {
	case http.StatusProxyAuthRequired, http.StatusUnauthorized:
		hint = ": the proxy wants credentials; give them in the proxy URL (http://user:password@host:port)"
	case http.StatusForbidden:
		hint = ": the proxy does not allow connections there; ask for the coordinator's address and port to be allowed"
	case http.StatusBadGateway, http.StatusGatewayTimeout, http.StatusServiceUnavailable:
		hint = ": the proxy could not reach the coordinator"
	}
	return fmt.Sprintf("proxy %s refused CONNECT %s: %d %s%s", e.Proxy, e.Target, e.Status, e.Reason, hint)
}

// Dial connects to addr through the proxy p with CONNECT and returns the
// tunnel, ready for the TLS handshake. timeout bounds the whole exchange
// with the proxy, as does ctx.
func Dial(ctx context.Context, p *url.URL, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", p.Host)
	if err != nil {
		return nil, fmt.Errorf("dial proxy %s: %w", p.Host, err)
	}
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	err = connect(conn, p, addr)
	if !stop() && err == nil {
		err = ctx.Err() // ctx ended as the tunnel opened: its deadline is set
	}
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("CONNECT %s through proxy %s: %w", addr, p.Host, ctx.Err())
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// connect asks for the tunnel and reads the proxy's answer. A 2xx answer
// opens the tunnel; bytes the proxy sent after its answer would belong to
// the coordinator, which speaks only after the agent's ClientHello, so
// there are none to keep.
func connect(conn net.Conn, p *url.URL, addr string) error {
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if u := p.User; u != nil {
		pass, _ := u.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(u.Username() + ":" + pass))
		req += "Proxy-Authorization: Basic " + cred + "\r\n"
	}
	req += "\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		return fmt.Errorf("CONNECT %s through proxy %s: %w", addr, p.Host, err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return fmt.Errorf("CONNECT %s through proxy %s: the proxy closed or answered no HTTP: %w", addr, p.Host, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		resp.Body.Close()
		return &Error{Proxy: p.Host, Target: addr, Status: resp.StatusCode, Reason: strings.TrimSpace(strings.TrimPrefix(resp.Status, fmt.Sprint(resp.StatusCode)))}
	}
	if br.Buffered() > 0 {
		return fmt.Errorf("CONNECT %s through proxy %s: the proxy sent %d bytes before the coordinator could speak", addr, p.Host, br.Buffered())
	}
	return nil
}
