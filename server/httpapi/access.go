package httpapi

import (
	"context"
	"fmt"
	"net/http"

	"github.com/tendrildeploy/tendril/api"
)

// apiKeyContext is the context key of the API key a request was
// authorized with.
type apiKeyContext struct{}

func withAPIKey(ctx context.Context, k api.APIKeyView) context.Context {
	return context.WithValue(ctx, apiKeyContext{}, k)
}

// requestAPIKey returns the key a request was authorized with.
func requestAPIKey(ctx context.Context) (api.APIKeyView, bool) {
	k, ok := ctx.Value(apiKeyContext{}).(api.APIKeyView)
	return k, ok
}

// adminOnly refuses requests authorized by a key that is not an admin
// key, before next runs.
func (h *API) adminOnly(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		k, ok := requestAPIKey(r.Context())
		if !ok || !k.Admin {
			WriteError(w, http.StatusForbidden, fmt.Sprintf("API key %q is not an admin key: %s %s needs one (the key in the data folder's admin.key is)", k.Name, r.Method, r.URL.Path))
			return
		}
		next(w, r)
	}
}

func (h *API) apiUsers(w http.ResponseWriter, r *http.Request) {
	vs, err := h.access.Users(r.Context())
	h.respond(w, http.StatusOK, vs, err)
}

func (h *API) apiCreateUser(w http.ResponseWriter, r *http.Request) {
	var req api.UserRequest
	if !decodeBody(w, r, &req) {
		return
	}
	v, err := h.access.CreateUser(r.Context(), req.Name, req.Password)
	h.respond(w, http.StatusCreated, v, err)
}

func (h *API) apiDeleteUser(w http.ResponseWriter, r *http.Request) {
	if err := h.access.DeleteUser(r.Context(), r.PathValue("name")); err != nil {
		h.apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *API) apiAPIKeys(w http.ResponseWriter, r *http.Request) {
	vs, err := h.access.APIKeys(r.Context())
	h.respond(w, http.StatusOK, vs, err)
}

func (h *API) apiCreateAPIKey(w http.ResponseWriter, r *http.Request) {
	var req api.APIKeyRequest
	if !decodeBody(w, r, &req) {
		return
	}
	v, err := h.access.CreateAPIKey(r.Context(), req.Name, req.Admin)
	h.respond(w, http.StatusCreated, v, err)
}

func (h *API) apiRevokeAPIKey(w http.ResponseWriter, r *http.Request) {
	v, err := h.access.RevokeAPIKey(r.Context(), r.PathValue("id"))
	h.respond(w, http.StatusOK, v, err)
}

func (h *API) apiTokens(w http.ResponseWriter, r *http.Request) {
	vs, err := h.access.Tokens(r.Context())
	h.respond(w, http.StatusOK, vs, err)
}

func (h *API) apiRevokeToken(w http.ResponseWriter, r *http.Request) {
	if err := h.access.RevokeToken(r.Context(), r.PathValue("id")); err != nil {
		h.apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
