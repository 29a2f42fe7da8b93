package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/tendrildeploy/tendril/api"
)

// Maintenance returns the maintenance state and what is still running
// (GET /api/maintenance).
func (c *Client) Maintenance(ctx context.Context) (api.MaintenanceView, error) {
	var out api.MaintenanceView
	if err := c.do(ctx, http.MethodGet, "/api/maintenance", nil, &out); err != nil {
		return api.MaintenanceView{}, fmt.Errorf("get maintenance mode: %w", err)
	}
	return out, nil
}

// SetMaintenance turns maintenance mode on or off (PUT /api/maintenance).
// While it is on, no new task or rollout starts; running ones finish.
func (c *Client) SetMaintenance(ctx context.Context, on bool) (api.MaintenanceView, error) {
	var out api.MaintenanceView
	if err := c.do(ctx, http.MethodPut, "/api/maintenance", api.MaintenanceRequest{On: &on}, &out); err != nil {
		return api.MaintenanceView{}, fmt.Errorf("set maintenance mode: %w", err)
	}
	return out, nil
}

// Snapshot has the coordinator write a consistent copy of its database
// into its data folder (POST /api/backup/snapshot), for a backup taken on
// the coordinator's host to pack and delete.
func (c *Client) Snapshot(ctx context.Context) (api.Snapshot, error) {
	var out api.Snapshot
	if err := c.do(ctx, http.MethodPost, "/api/backup/snapshot", nil, &out); err != nil {
		return api.Snapshot{}, fmt.Errorf("take database snapshot: %w", err)
	}
	return out, nil
}

// Updates returns what the coordinator's release feed says about newer
// versions (GET /api/updates).
func (c *Client) Updates(ctx context.Context) (api.UpdatesView, error) {
	var out api.UpdatesView
	if err := c.do(ctx, http.MethodGet, "/api/updates", nil, &out); err != nil {
		return api.UpdatesView{}, fmt.Errorf("get update notice: %w", err)
	}
	return out, nil
}
