package admin

import (
	"context"
	"fmt"
	"net/http"

	"github.com/tendrildeploy/tendril/server"
)

// Policy returns the machine policy (GET /api/policy).
func (c *Client) Policy(ctx context.Context) (server.PolicyView, error) {
	var out server.PolicyView
	if err := c.do(ctx, http.MethodGet, "/api/policy", nil, &out); err != nil {
		return server.PolicyView{}, fmt.Errorf("get machine policy: %w", err)
	}
	return out, nil
}

// SetPolicy changes the fields of the machine policy given in req (PUT
// /api/policy); it needs the admin key.
func (c *Client) SetPolicy(ctx context.Context, req server.PolicyRequest) (server.PolicyView, error) {
	var out server.PolicyView
	if err := c.do(ctx, http.MethodPut, "/api/policy", req, &out); err != nil {
		return server.PolicyView{}, fmt.Errorf("set machine policy: %w", err)
	}
	return out, nil
}
