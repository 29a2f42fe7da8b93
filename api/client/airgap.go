package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/tendrildeploy/tendril/api"
)

// Export writes an export file of every agent package and Calamari bundle
// to w (GET /api/export, admin keys only).
func (c *Client) Export(ctx context.Context, w io.Writer) error {
	resp, err := c.send(ctx, http.MethodGet, "/api/export", nil, nil, -1, "", "application/gzip")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("export: receive: %w", err)
	}
	return nil
}

// Import sends size bytes of an export file read from r (POST
// /api/import, admin keys only).
func (c *Client) Import(ctx context.Context, r io.Reader, size int64, opts api.ImportOptions) (api.ImportResult, error) {
	if size < 0 || size > api.MaxExportSize {
		return api.ImportResult{}, fmt.Errorf("import: %d bytes: want at most %d", size, int64(api.MaxExportSize))
	}
	q := url.Values{}
	if opts.AllowDowngrade {
		q.Set("allow_downgrade", strconv.FormatBool(true))
	}
	if opts.SourceKey != "" {
		q.Set("source_key", opts.SourceKey)
	}
	if opts.TrustAnySource {
		q.Set("trust_any_source", strconv.FormatBool(true))
	}
	if opts.BackedUp {
		q.Set("backed_up", strconv.FormatBool(true))
	}
	resp, err := c.send(ctx, http.MethodPost, "/api/import", q, r, size, "application/gzip", "application/json")
	if err != nil {
		return api.ImportResult{}, fmt.Errorf("import: %w", err)
	}
	defer resp.Body.Close()
	var out api.ImportResult
	if err := decodeResponse(resp, &out); err != nil {
		return api.ImportResult{}, fmt.Errorf("import: %w", err)
	}
	return out, nil
}
