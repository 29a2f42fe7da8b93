package server

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
// key, before h runs.
func (s *Server) adminOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		k, ok := requestAPIKey(r.Context())
		if !ok || !k.Admin {
			writeError(w, http.StatusForbidden, fmt.Sprintf("API key %q is not an admin key: managing users and API keys needs one (the key in the data folder's admin.key is)", k.Name))
			return
		}
		h(w, r)
	}
}

func (s *Server) apiUsers(w http.ResponseWriter, r *http.Request) {
	vs, err := s.access.Users(r.Context())
	s.respond(w, http.StatusOK, vs, err)
}

func (s *Server) apiCreateUser(w http.ResponseWriter, r *http.Request) {
	var req api.UserRequest
	if !decodeBody(w, r, &req) {
		return
	}
	v, err := s.access.CreateUser(r.Context(), req.Name, req.Password)
	s.respond(w, http.StatusCreated, v, err)
}

func (s *Server) apiDeleteUser(w http.ResponseWriter, r *http.Request) {
	if err := s.access.DeleteUser(r.Context(), r.PathValue("name")); err != nil {
		s.apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) apiAPIKeys(w http.ResponseWriter, r *http.Request) {
	vs, err := s.access.APIKeys(r.Context())
	s.respond(w, http.StatusOK, vs, err)
}

func (s *Server) apiCreateAPIKey(w http.ResponseWriter, r *http.Request) {
	var req api.APIKeyRequest
	if !decodeBody(w, r, &req) {
		return
	}
	v, err := s.access.CreateAPIKey(r.Context(), req.Name, req.Admin)
	s.respond(w, http.StatusCreated, v, err)
}

func (s *Server) apiRevokeAPIKey(w http.ResponseWriter, r *http.Request) {
	v, err := s.access.RevokeAPIKey(r.Context(), r.PathValue("id"))
	s.respond(w, http.StatusOK, v, err)
}

func (s *Server) apiTokens(w http.ResponseWriter, r *http.Request) {
	vs, err := s.access.Tokens(r.Context())
	s.respond(w, http.StatusOK, vs, err)
}

func (s *Server) apiRevokeToken(w http.ResponseWriter, r *http.Request) {
	if err := s.access.RevokeToken(r.Context(), r.PathValue("id")); err != nil {
		s.apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
