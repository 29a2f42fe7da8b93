package httpapi

import (
	"fmt"
	"net/http"

	"github.com/tendrildeploy/tendril/api"
)

func (h *API) apiUsers(w http.ResponseWriter, r *http.Request) {
	vs, err := h.access.Users(r.Context())
	h.respond(w, http.StatusOK, vs, err)
}

func (h *API) apiCreateUser(w http.ResponseWriter, r *http.Request) {
	var req api.UserRequest
	if !decodeBody(w, r, &req) {
		return
	}
	v, err := h.access.CreateUser(r.Context(), req.Name, req.Password, req.Role, req.Environments)
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
	role := req.Role
	if req.Admin {
		// admin: true is how keys were made admin before roles.
		if role != "" && role != api.RoleAdmin {
			WriteError(w, http.StatusBadRequest, fmt.Sprintf(`"admin": true and "role": %q disagree: give one of them`, role))
			return
		}
		role = api.RoleAdmin
	}
	v, err := h.access.CreateAPIKey(r.Context(), req.Name, role, req.Environments)
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
