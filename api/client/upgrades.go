package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/tendrildeploy/tendril/api"
)

// UploadAgentPackage uploads an agent binary of size bytes read from r for
// one version and platform (POST /api/agent-packages). The body is
// streamed; the coordinator checks and signs it. The answer says whether it
// was stored now (Created) or already was.
func (c *Client) UploadAgentPackage(ctx context.Context, version, goos, goarch string, r io.Reader, size int64) (api.AgentPackageView, error) {
	var out api.AgentPackageView
	if size > api.MaxAgentPackageSize {
		return out, fmt.Errorf("upload agent package: %d bytes is more than the coordinator accepts (%d)", size, int64(api.MaxAgentPackageSize))
	}
	q := url.Values{"version": {version}, "os": {goos}, "arch": {goarch}}
	sum, err := c.uploadQuery(ctx, "/api/agent-packages", q, r, size, &out)
	if err != nil {
		return api.AgentPackageView{}, fmt.Errorf("upload agent package: %w", err)
	}
	if out.SHA256 != sum {
		return api.AgentPackageView{}, fmt.Errorf("upload agent package: the coordinator holds agent %s for %s/%s with SHA-256 %s, but the file sent has %s",
			out.Version, out.OS, out.Arch, out.SHA256, sum)
	}
	return out, nil
}

// AgentPackages lists the stored agent packages, newest version first (GET
// /api/agent-packages).
func (c *Client) AgentPackages(ctx context.Context) ([]api.AgentPackageView, error) {
	var out []api.AgentPackageView
	if err := c.do(ctx, http.MethodGet, "/api/agent-packages", nil, &out); err != nil {
		return nil, fmt.Errorf("list agent packages: %w", err)
	}
	return out, nil
}

// StartRollout starts upgrading agents (POST /api/rollouts). It returns
// at once; follow the rollout with Rollout.
func (c *Client) StartRollout(ctx context.Context, req api.RolloutRequest) (api.RolloutView, error) {
	var out api.RolloutView
	if err := c.create(ctx, "/api/rollouts", req, &out); err != nil {
		return api.RolloutView{}, fmt.Errorf("start rollout: %w", err)
	}
	return out, nil
}

// Rollout returns one rollout with each agent's state (GET
// /api/rollouts/{id}).
func (c *Client) Rollout(ctx context.Context, id string) (api.RolloutView, error) {
	var out api.RolloutView
	if id == "" {
		return out, fmt.Errorf("get rollout: no rollout id given")
	}
	if err := c.do(ctx, http.MethodGet, "/api/rollouts/"+url.PathEscape(id), nil, &out); err != nil {
		return api.RolloutView{}, fmt.Errorf("get rollout %s: %w", id, err)
	}
	return out, nil
}

// Rollouts lists rollouts, newest first, without their agents (GET
// /api/rollouts).
func (c *Client) Rollouts(ctx context.Context) ([]api.RolloutView, error) {
	var out []api.RolloutView
	if err := c.do(ctx, http.MethodGet, "/api/rollouts", nil, &out); err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	return out, nil
}

// HaltRollout stops a running rollout from starting further batches; the
// agents of the batch under way finish (POST /api/rollouts/{id}/halt).
func (c *Client) HaltRollout(ctx context.Context, id string) (api.RolloutView, error) {
	return c.rolloutAction(ctx, id, "halt")
}

// ResumeRollout lets a halted rollout start its next batch (POST
// /api/rollouts/{id}/resume).
func (c *Client) ResumeRollout(ctx context.Context, id string) (api.RolloutView, error) {
	return c.rolloutAction(ctx, id, "resume")
}

func (c *Client) rolloutAction(ctx context.Context, id, action string) (api.RolloutView, error) {
	var out api.RolloutView
	if id == "" {
		return out, fmt.Errorf("%s rollout: no rollout id given", action)
	}
	if err := c.do(ctx, http.MethodPost, "/api/rollouts/"+url.PathEscape(id)+"/"+action, nil, &out); err != nil {
		return api.RolloutView{}, fmt.Errorf("%s rollout %s: %w", action, id, err)
	}
	return out, nil
}
