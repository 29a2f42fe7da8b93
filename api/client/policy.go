package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/tendrildeploy/tendril/api"
)

// Policy returns the machine policy (GET /api/policy).
func (c *Client) Policy(ctx context.Context) (api.PolicyView, error) {
	var out api.PolicyView
	if err := c.do(ctx, http.MethodGet, "/api/policy", nil, &out); err != nil {
		return api.PolicyView{}, fmt.Errorf("get machine policy: %w", err)
	}
	return out, nil
}

// SetPolicy changes the fields of the machine policy given in req (PUT
// /api/policy); it needs the admin key.
func (c *Client) SetPolicy(ctx context.Context, req api.PolicyRequest) (api.PolicyView, error) {
	var out api.PolicyView
	if err := c.do(ctx, http.MethodPut, "/api/policy", req, &out); err != nil {
		return api.PolicyView{}, fmt.Errorf("set machine policy: %w", err)
	}
	return out, nil
}
