package admin

import (
	"context"
	"fmt"
	"net/http"

	"github.com/tendrildeploy/tendril/server"
)

// Maintenance returns the maintenance state and what is still running
// (GET /api/maintenance).
func (c *Client) Maintenance(ctx context.Context) (server.MaintenanceView, error) {
	var out server.MaintenanceView
	if err := c.do(ctx, http.MethodGet, "/api/maintenance", nil, &out); err != nil {
		return server.MaintenanceView{}, fmt.Errorf("get maintenance mode: %w", err)
	}
	return out, nil
}

// SetMaintenance turns maintenance mode on or off (PUT /api/maintenance).
// While it is on, no new task or rollout starts; running ones finish.
func (c *Client) SetMaintenance(ctx context.Context, on bool) (server.MaintenanceView, error) {
	var out server.MaintenanceView
	if err := c.do(ctx, http.MethodPut, "/api/maintenance", server.MaintenanceRequest{On: &on}, &out); err != nil {
		return server.MaintenanceView{}, fmt.Errorf("set maintenance mode: %w", err)
	}
	return out, nil
}

// Snapshot has the coordinator write a consistent copy of its database
// into its data folder (POST /api/backup/snapshot), for a backup taken on
// the coordinator's host to pack and delete.
func (c *Client) Snapshot(ctx context.Context) (server.Snapshot, error) {
	var out server.Snapshot
	if err := c.do(ctx, http.MethodPost, "/api/backup/snapshot", nil, &out); err != nil {
		return server.Snapshot{}, fmt.Errorf("take database snapshot: %w", err)
	}
	return out, nil
}

// Updates returns what the coordinator's release feed says about newer
// versions (GET /api/updates).
func (c *Client) Updates(ctx context.Context) (server.UpdatesView, error) {
	var out server.UpdatesView
	if err := c.do(ctx, http.MethodGet, "/api/updates", nil, &out); err != nil {
		return server.UpdatesView{}, fmt.Errorf("get update notice: %w", err)
	}
	return out, nil
}
