package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/tendrildeploy/tendril/api"
)

// CreateUser adds a console user with a role (POST /api/users; admin key
// only); role "" is operator, and environments are a deployer's.
func (c *Client) CreateUser(ctx context.Context, name, password string, role api.Role, environments []string) (api.UserView, error) {
	var out api.UserView
	req := api.UserRequest{Name: name, Password: password, Role: role, Environments: environments}
	if err := c.create(ctx, "/api/users", req, &out); err != nil {
		return api.UserView{}, fmt.Errorf("create user %q: %w", name, err)
	}
	return out, nil
}

// Users lists the console users (GET /api/users; admin key only).
func (c *Client) Users(ctx context.Context) ([]api.UserView, error) {
	var out []api.UserView
	if err := c.do(ctx, http.MethodGet, "/api/users", nil, &out); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// DeleteUser removes a console user (DELETE /api/users/{name}; admin key
// only). Their console sessions end.
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("delete user: no user name given")
	}
	if err := c.do(ctx, http.MethodDelete, "/api/users/"+url.PathEscape(name), nil, nil); err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	return nil
}

// CreateAPIKey makes an API key with a role (POST /api/api-keys; admin
// key only); role "" is operator, and environments are a deployer's.
// The answer is the only place the key itself appears.
func (c *Client) CreateAPIKey(ctx context.Context, name string, role api.Role, environments []string) (api.NewAPIKey, error) {
	var out api.NewAPIKey
	req := api.APIKeyRequest{Name: name, Role: role, Environments: environments}
	if err := c.create(ctx, "/api/api-keys", req, &out); err != nil {
		return api.NewAPIKey{}, fmt.Errorf("create API key %q: %w", name, err)
	}
	return out, nil
}

// APIKeys lists the API keys, revoked ones too (GET /api/api-keys; admin
// key only).
func (c *Client) APIKeys(ctx context.Context) ([]api.APIKeyView, error) {
	var out []api.APIKeyView
	if err := c.do(ctx, http.MethodGet, "/api/api-keys", nil, &out); err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	return out, nil
}

// RevokeAPIKey revokes an API key by id (POST /api/api-keys/{id}/revoke;
// admin key only).
func (c *Client) RevokeAPIKey(ctx context.Context, id string) (api.APIKeyView, error) {
	var out api.APIKeyView
	if id == "" {
		return out, errors.New("revoke API key: no id given")
	}
	if err := c.do(ctx, http.MethodPost, "/api/api-keys/"+url.PathEscape(id)+"/revoke", nil, &out); err != nil {
		return api.APIKeyView{}, fmt.Errorf("revoke API key %s: %w", id, err)
	}
	return out, nil
}

// Tokens lists the enrollment tokens, never their secrets (GET
// /api/tokens).
func (c *Client) Tokens(ctx context.Context) ([]api.TokenView, error) {
	var out []api.TokenView
	if err := c.do(ctx, http.MethodGet, "/api/tokens", nil, &out); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// RevokeToken removes an enrollment token by id (DELETE /api/tokens/{id}).
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("revoke token: no id given")
	}
	if err := c.do(ctx, http.MethodDelete, "/api/tokens/"+url.PathEscape(id), nil, nil); err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	return nil
}
