package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// AgentDiagnostics collects an agent's diagnostics archive (POST
// /api/agents/{name}/diagnostics) and writes it, a .tar.gz, to w. It
// returns how many bytes it wrote. An archive shorter than the
// coordinator announced (a connection cut) is an error.
func (c *Client) AgentDiagnostics(ctx context.Context, name string, w io.Writer) (int64, error) {
	if name == "" {
		return 0, errors.New("collect agent diagnostics: no agent name given")
	}
	return c.download(ctx, http.MethodPost, "/api/agents/"+url.PathEscape(name)+"/diagnostics", "application/gzip", w,
		fmt.Sprintf("collect diagnostics of agent %q", name))
}

// download copies the body of a file answer to w, checking that all of it
// arrived.
func (c *Client) download(ctx context.Context, method, path, media string, w io.Writer, what string) (int64, error) {
	resp, err := c.send(ctx, method, path, nil, nil, -1, "", media)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("got %d of %d bytes", n, resp.ContentLength)
	}
	if err != nil {
		return n, fmt.Errorf("%s: receive: %w", what, err)
	}
	return n, nil
}

// Goroutines returns the coordinator's goroutine dump (GET
// /api/server/goroutines, admin keys only).
func (c *Client) Goroutines(ctx context.Context) ([]byte, error) {
	resp, err := c.send(ctx, http.MethodGet, "/api/server/goroutines", nil, nil, -1, "", "text/plain")
	if err != nil {
		return nil, fmt.Errorf("get goroutine dump: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return nil, fmt.Errorf("get goroutine dump: %w", err)
	}
	if len(b) > maxResponseBody {
		return nil, fmt.Errorf("get goroutine dump: larger than %d bytes", maxResponseBody)
	}
	return b, nil
}
