package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/tendrildeploy/tendril/api"
)

// Nodes lists the coordinator nodes sharing the database (GET /api/nodes).
func (c *Client) Nodes(ctx context.Context) ([]api.NodeView, error) {
	var out []api.NodeView
	if err := c.do(ctx, http.MethodGet, "/api/nodes", nil, &out); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}

// SetNodeDraining drains a node by name, or undrains it (POST
// /api/nodes/{name}/drain or /undrain).
func (c *Client) SetNodeDraining(ctx context.Context, name string, draining bool) (api.NodeView, error) {
	var out api.NodeView
	if name == "" {
		return out, errors.New("drain node: no node name given")
	}
	action := "undrain"
	if draining {
		action = "drain"
	}
	if err := c.do(ctx, http.MethodPost, "/api/nodes/"+url.PathEscape(name)+"/"+action, nil, &out); err != nil {
		return api.NodeView{}, fmt.Errorf("%s node %q: %w", action, name, err)
	}
	return out, nil
}
