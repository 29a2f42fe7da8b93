// Package client is the Go client of the coordinator's HTTP API. The admin
// commands of tendril-server use it, and so can scripts, simulators and
// tests that drive a coordinator.
package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/version"
)

// maxResponseBody bounds what the client reads from one response. The
// agents list of a large fleet is the biggest answer today (well under a
// kilobyte per agent), so this leaves room for tens of thousands of agents
// while still refusing an endless body.
const maxResponseBody = 64 << 20

// maxErrorBody bounds how much of a failed response becomes the message.
const maxErrorBody = 4 << 10

// ErrNotRunning means nothing accepted the connection at the coordinator's
// address.
var ErrNotRunning = errors.New("the coordinator is not running")

// Error is a failed API call: the HTTP status and the API's explanation.
type Error struct {
	Status  int
	Message string
	// RetryAfter is the answer's Retry-After, when it has one in seconds:
	// how long the coordinator asks to wait before sending again.
	RetryAfter time.Duration
}

// Error formats the API's message with its status, which is what a person
// needs to tell "wrong key" from "no such agent" at a glance.
func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = strings.ToLower(http.StatusText(e.Status))
	}
	return fmt.Sprintf("%s (HTTP %d)", msg, e.Status)
}

// IsStatus reports whether err is an *Error with the given HTTP status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// Client calls one coordinator's API. It is safe for concurrent use.
type Client struct {
	base   *url.URL
	apiKey string
	hc     *http.Client
	// followIdle is how long a followed task log may stay silent before
	// the stream is taken for dead (the coordinator sends a blank line
	// every 15 seconds), so a half-open connection cannot hang a follow.
	followIdle time.Duration
}

// New returns a client of the API at baseURL (http:// or https://, host
// and port, no query). apiKey is sent as a bearer token; "" sends none. hc
// nil means http.DefaultClient; callers pass their own to set TLS roots or
// to close idle connections when done. hc should have no overall Timeout:
// uploads and followed task logs can rightly take hours. Bound each call
// with its context instead.
func New(baseURL, apiKey string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil {
		return nil, fmt.Errorf("coordinator URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("coordinator URL %q: want http:// or https://", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("coordinator URL %q: no host", baseURL)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("coordinator URL %q: want only scheme, host, port and path (the API key goes in --api-key)", baseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: u, apiKey: strings.TrimSpace(apiKey), hc: hc, followIdle: defaultFollowIdle}, nil
}

// FromDataDir finds a running coordinator through <dir>/run.json and
// authenticates with <dir>/admin.key, for admin commands run on the
// coordinator's own host.
func FromDataDir(dir string) (*Client, error) {
	u, err := DataDirURL(dir)
	if err != nil {
		return nil, err
	}
	key, err := DataDirKey(dir)
	if err != nil {
		return nil, err
	}
	return New(u, key, nil)
}

// DataDirURL returns the API URL of the coordinator running with data
// folder dir, as recorded in its run.json.
func DataDirURL(dir string) (string, error) {
	ri, err := api.ReadRunInfo(dir)
	if err != nil {
		// "Not running" would mislead when the folder was never set up:
		// the fix is init, not run.
		if terr := api.CheckInitialized(dir); errors.Is(terr, api.ErrNotInitialized) {
			return "", terr
		}
		return "", err
	}
	if ri.HTTP == "" {
		return "", fmt.Errorf("read %s: no HTTP address in it", filepath.Join(dir, api.RunFile))
	}
	return RunInfoURL(ri)
}

// RunInfoURL turns the API address a coordinator recorded into a URL to
// reach it from the same host: a wildcard bind is reached on loopback.
func RunInfoURL(ri api.RunInfo) (string, error) {
	host, port, err := net.SplitHostPort(ri.HTTP)
	if err != nil {
		return "", fmt.Errorf("coordinator HTTP address %q: %w", ri.HTTP, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	scheme := "http"
	if ri.HTTPS {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

// DataDirKey reads the admin API key that init wrote into dir.
func DataDirKey(dir string) (string, error) {
	path := filepath.Join(dir, api.AdminKeyFile)
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if terr := api.CheckInitialized(dir); errors.Is(terr, api.ErrNotInitialized) {
				return "", terr
			}
			return "", fmt.Errorf("read admin key: %s does not exist; give the API key with --api-key", path)
		}
		return "", fmt.Errorf("read admin key: %w", err)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", fmt.Errorf("read admin key: %s is empty", path)
	}
	return key, nil
}

// URL is the API's base URL, for messages.
func (c *Client) URL() string { return c.base.String() }

// CloseIdleConnections closes the kept-alive connections of the client's
// http.Client, so that a short-lived user leaves no goroutines behind.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Agents lists every agent (GET /api/agents).
func (c *Client) Agents(ctx context.Context) ([]api.AgentView, error) {
	var out []api.AgentView
	if err := c.do(ctx, http.MethodGet, "/api/agents", nil, &out); err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return out, nil
}

// AgentsJSON returns the body of GET /api/agents as the coordinator sent
// it, so that `agents list --json` passes on fields this client does not
// know yet (a newer coordinator).
func (c *Client) AgentsJSON(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.do(ctx, http.MethodGet, "/api/agents", nil, &out); err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return out, nil
}

// Agent returns one agent by name (GET /api/agents/{name}).
func (c *Client) Agent(ctx context.Context, name string) (api.AgentView, error) {
	var out api.AgentView
	if name == "" {
		return out, errors.New("get agent: no agent name given")
	}
	if err := c.do(ctx, http.MethodGet, "/api/agents/"+url.PathEscape(name), nil, &out); err != nil {
		return api.AgentView{}, fmt.Errorf("get agent %q: %w", name, err)
	}
	return out, nil
}

// DeleteAgent deletes an agent by name (DELETE /api/agents/{name}): its
// session ends and its certificate is refused from then on.
func (c *Client) DeleteAgent(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("delete agent: no agent name given")
	}
	if err := c.do(ctx, http.MethodDelete, "/api/agents/"+url.PathEscape(name), nil, nil); err != nil {
		return fmt.Errorf("delete agent %q: %w", name, err)
	}
	return nil
}

// AddListeningAgent adds an agent the coordinator dials (POST
// /api/agents): it listens at req.Address and presents the certificate
// whose thumbprint is req.Thumbprint. The answer is the new agent, not
// yet connected; its DialError says why, once a dial has failed.
func (c *Client) AddListeningAgent(ctx context.Context, req api.ListeningAgentRequest) (api.AgentView, error) {
	var out api.AgentView
	if err := c.create(ctx, "/api/agents", req, &out); err != nil {
		return api.AgentView{}, fmt.Errorf("add listening agent %s: %w", listeningName(req), err)
	}
	return out, nil
}

// listeningName names the agent a request adds, for messages: the
// coordinator names it after the address's host when no name is given.
func listeningName(req api.ListeningAgentRequest) string {
	if req.Name != "" {
		return strconv.Quote(req.Name)
	}
	return "at " + strconv.Quote(req.Address)
}

// SetAgentAddress moves a listening agent to a new address (PUT
// /api/agents/{name}/address); the coordinator dials it there from then
// on.
func (c *Client) SetAgentAddress(ctx context.Context, name, address string) (api.AgentView, error) {
	var out api.AgentView
	if name == "" {
		return out, errors.New("set agent address: no agent name given")
	}
	req := api.AgentAddressRequest{Address: address}
	if err := c.do(ctx, http.MethodPut, "/api/agents/"+url.PathEscape(name)+"/address", req, &out); err != nil {
		return api.AgentView{}, fmt.Errorf("set address of agent %q: %w", name, err)
	}
	return out, nil
}

// CreateToken issues a one-time enrollment token (POST /api/tokens).
func (c *Client) CreateToken(ctx context.Context, req api.TokenRequest) (api.TokenResult, error) {
	var out api.TokenResult
	if err := c.create(ctx, "/api/tokens", req, &out); err != nil {
		return api.TokenResult{}, fmt.Errorf("create token: %w", err)
	}
	return out, nil
}

// Info describes the coordinator (GET /api/server).
func (c *Client) Info(ctx context.Context) (api.ServerInfo, error) {
	var out api.ServerInfo
	if err := c.do(ctx, http.MethodGet, "/api/server", nil, &out); err != nil {
		return api.ServerInfo{}, fmt.Errorf("get coordinator info: %w", err)
	}
	return out, nil
}

// RotateCertificate replaces the coordinator's certificate (POST
// /api/certificate/rotate). Connected agents are told first, so none is
// dropped; force rotates even when older agents away would be locked out.
func (c *Client) RotateCertificate(ctx context.Context, force bool) (api.RotationResult, error) {
	var out api.RotationResult
	path := "/api/certificate/rotate"
	if force {
		path += "?force=true"
	}
	if err := c.do(ctx, http.MethodPost, path, nil, &out); err != nil {
		return api.RotationResult{}, fmt.Errorf("rotate coordinator certificate: %w", err)
	}
	return out, nil
}

// do sends one request with in as its JSON body (nil: none) and decodes a
// 2xx answer into out (nil: ignored). Failures come back as *Error, or as
// ErrNotRunning when nothing listens at the address.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return c.doWith(ctx, method, path, nil, in, out)
}

// Creating requests are sent with an Idempotency-Key, and sent again with
// the same key when their connection broke (the coordinator may have
// created before the answer was lost: it answers the retry as it did the
// first) or while the first is still running on the coordinator.
const (
	// createRetryPause is the pause before sending a create again over a
	// new connection.
	createRetryPause = 500 * time.Millisecond
	// createInProgressWait bounds the time spent waiting for a first
	// request the coordinator says is still running.
	createInProgressWait = time.Minute
)

// create sends a creating POST with a new Idempotency-Key: once more
// after a broken connection, and again while the coordinator answers that
// the first request with the key is still running.
func (c *Client) create(ctx context.Context, path string, in, out any) error {
	hdr := http.Header{"Idempotency-Key": []string{uuid.NewString()}}
	retried := false
	deadline := time.Now().Add(createInProgressWait)
	for {
		err := c.doWith(ctx, http.MethodPost, path, hdr, in, out)
		var e *Error
		var wait time.Duration
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return err
		case errors.As(err, &e):
			if e.Status != http.StatusConflict || e.RetryAfter <= 0 || time.Now().Add(e.RetryAfter).After(deadline) {
				return err
			}
			wait = e.RetryAfter
		case retried:
			return err
		default:
			retried = true
			wait = createRetryPause
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// doWith is do with extra request headers.
func (c *Client) doWith(ctx context.Context, method, path string, hdr http.Header, in, out any) error {
	var (
		body        io.Reader
		size        int64 = -1
		contentType string
	)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body, size, contentType = bytes.NewReader(b), int64(len(b)), "application/json"
	}
	resp, err := c.sendWith(ctx, method, path, nil, hdr, body, size, contentType, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeResponse(resp, out)
}

// upload streams size bytes of r as the body of a POST and decodes the
// answer into out. The body is never held in memory whole, and while it
// goes out its SHA-256 is computed, so the caller can check that the
// coordinator stored what was sent.
func (c *Client) upload(ctx context.Context, path string, r io.Reader, size int64, out any) (sum string, err error) {
	return c.uploadQuery(ctx, path, nil, r, size, out)
}

// uploadQuery is upload with a query string.
func (c *Client) uploadQuery(ctx context.Context, path string, query url.Values, r io.Reader, size int64, out any) (sum string, err error) {
	if size < 0 {
		return "", fmt.Errorf("upload: size %d: want the body's length in bytes", size)
	}
	if size > api.MaxBundleSize {
		return "", fmt.Errorf("upload: %d bytes is more than the coordinator accepts (%d)", size, int64(api.MaxBundleSize))
	}
	h := sha256.New()
	resp, err := c.send(ctx, http.MethodPost, path, query, io.TeeReader(r, h), size, "application/octet-stream", "application/json")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if err := decodeResponse(resp, out); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// send sends one request and returns the response if its status is 2xx;
// the caller closes its body. path is relative to the base URL and
// already escaped. size is the body's length (-1: unknown, or
// no body). Failures come back as *Error, or as ErrNotRunning when nothing
// listens at the address.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, body io.Reader, size int64, contentType, accept string) (*http.Response, error) {
	return c.sendWith(ctx, method, path, query, nil, body, size, contentType, accept)
}

// sendWith is send with extra request headers.
func (c *Client) sendWith(ctx context.Context, method, path string, query url.Values, hdr http.Header, body io.Reader, size int64, contentType, accept string) (*http.Response, error) {
	// path is escaped already (names in it went through url.PathEscape).
	u := *c.base
	u.RawPath = c.base.EscapedPath() + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, fmt.Errorf("request path %q: %w", path, err)
	}
	u.Path = p
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if body != nil && size >= 0 {
		// Set explicitly: NewRequest only knows the length of a few
		// in-memory reader types, and would send anything else chunked.
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", "tendril-admin/"+version.Version)
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w at %s (connection refused)", ErrNotRunning, c.base)
		}
		return nil, fmt.Errorf("reach the coordinator at %s: %w", c.base, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, errorFrom(resp)
	}
	return resp, nil
}

// decodeResponse decodes a 2xx JSON answer into out (nil: ignored).
func decodeResponse(resp *http.Response, out any) error {
	if out == nil {
		// Drain so the connection can be reused.
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if len(b) > maxResponseBody {
		return fmt.Errorf("read response: larger than %d bytes", maxResponseBody)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// errorFrom turns a failed response into *Error. The API answers with
// api.APIError; anything else (a proxy's page, say) is quoted briefly.
func errorFrom(resp *http.Response) *Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Status: resp.StatusCode}
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n > 0 {
		e.RetryAfter = time.Duration(n) * time.Second
	}
	var ae api.APIError
	if json.Unmarshal(b, &ae) == nil && ae.Error != "" {
		e.Message = ae.Error
		return e
	}
	text := strings.TrimSpace(string(b))
	if i := strings.IndexAny(text, "\r\n"); i >= 0 {
		text = text[:i]
	}
	if len(text) > 200 {
		text = text[:200] + "..."
	}
	e.Message = text
	return e
}
