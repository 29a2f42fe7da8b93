package client

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/tendrildeploy/tendril/api"
)

// UploadCalamari uploads a Calamari bundle of size bytes read from r (POST
// /api/calamari). The body is streamed, never read whole into memory. The
// coordinator validates and signs the bundle; the answer says whether it
// was stored now (Created) or already was, and whether it is the latest.
func (c *Client) UploadCalamari(ctx context.Context, r io.Reader, size int64) (api.BundleView, error) {
	var out api.BundleView
	sum, err := c.upload(ctx, "/api/calamari", r, size, &out)
	if err != nil {
		return api.BundleView{}, fmt.Errorf("upload calamari: %w", err)
	}
	if out.SHA256 != sum {
		return api.BundleView{}, fmt.Errorf("upload calamari: the coordinator holds Calamari %s with SHA-256 %s, but the bundle sent has %s", out.Version, out.SHA256, sum)
	}
	return out, nil
}

// CalamariBundles lists the stored Calamari bundles, newest version first
// (GET /api/calamari).
func (c *Client) CalamariBundles(ctx context.Context) ([]api.BundleView, error) {
	var out []api.BundleView
	if err := c.do(ctx, http.MethodGet, "/api/calamari", nil, &out); err != nil {
		return nil, fmt.Errorf("list calamari: %w", err)
	}
	return out, nil
}

// UpdateCalamari pushes the latest bundle to every agent of the target
// that lacks it and returns one result per agent (POST
// /api/calamari/update). The call lasts as long as the pushes do; an
// agent's failure is in its result, not in err.
func (c *Client) UpdateCalamari(ctx context.Context, t api.UpdateTarget) ([]api.UpdateResult, error) {
	var out []api.UpdateResult
	if err := c.do(ctx, http.MethodPost, "/api/calamari/update", t, &out); err != nil {
		return nil, fmt.Errorf("update calamari: %w", err)
	}
	return out, nil
}
