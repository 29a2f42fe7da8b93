package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tendrildeploy/tendril/api"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// errBadCredentials is every failed password sign-in, whatever was wrong:
// the user name, the password, or the stored hash.
var errBadCredentials = errors.New("the user name and password do not match")

func userView(u store.User) api.UserView {
	return api.UserView{ID: u.ID, Name: u.Name, CreatedAt: u.CreatedAt}
}

// CreateUser adds a console user. The password is stored as an argon2id
// hash with a random salt.
func (s *Server) CreateUser(ctx context.Context, name, password string) (api.UserView, error) {
	if err := ValidateName("user", name); err != nil {
		return api.UserView{}, kind.Errorf(kind.ErrBadRequest, "%s", err.Error())
	}
	if err := validatePassword(password); err != nil {
		return api.UserView{}, err
	}
	u := store.User{ID: uuid.NewString(), Name: name, PasswordHash: hashPassword(password), CreatedAt: time.Now().UTC()}
	if err := s.store.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrExists) {
			return api.UserView{}, kind.Errorf(kind.ErrConflict, "a user named %q exists already", name)
		}
		return api.UserView{}, err
	}
	s.log.Info("console user created", zap.String("user", name))
	return userView(u), nil
}

// Users lists the console users by name.
func (s *Server) Users(ctx context.Context) ([]api.UserView, error) {
	all, err := s.store.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.UserView, len(all))
	for i, u := range all {
		out[i] = userView(u)
	}
	return out, nil
}

// DeleteUser removes a console user; the console sessions they signed in
// end at their next request.
func (s *Server) DeleteUser(ctx context.Context, name string) error {
	u, err := s.store.DeleteUser(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return kind.Errorf(store.ErrNotFound, "no user named %q", name)
	}
	if err != nil {
		return err
	}
	s.log.Info("console user deleted", zap.String("user", u.Name))
	return nil
}

// authenticateUser checks a user's password. Every failure is
// errBadCredentials, and an unknown name costs a hash as a known one
// does, so neither the answer nor its timing says which part was wrong.
func (s *Server) authenticateUser(ctx context.Context, name, password string) (store.User, error) {
	u, err := s.store.UserByName(ctx, name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.User{}, err
	}
	hash := u.PasswordHash
	if err != nil {
		hash = dummyPasswordHash()
	}
	ok, verr := verifyPassword(hash, password)
	if verr != nil {
		s.log.Error("console sign-in: unreadable password hash", zap.String("user", u.Name), zap.Error(verr))
	}
	if err != nil || !ok {
		return store.User{}, errBadCredentials
	}
	return u, nil
}

func apiKeyView(k store.APIKey) api.APIKeyView {
	v := api.APIKeyView{ID: k.ID, Name: k.Name, Admin: k.Admin, CreatedAt: k.CreatedAt, Revoked: !k.RevokedAt.IsZero()}
	if v.Revoked {
		at := k.RevokedAt
		v.RevokedAt = &at
	}
	return v
}

// CreateAPIKey makes a new API key. Only its hash is stored.
func (s *Server) CreateAPIKey(ctx context.Context, name string, admin bool) (api.NewAPIKey, error) {
	if err := ValidateName("API key", name); err != nil {
		return api.NewAPIKey{}, kind.Errorf(kind.ErrBadRequest, "%s", err.Error())
	}
	secret := newSecret("tdk_")
	k := store.APIKey{ID: uuid.NewString(), Name: name, Hash: hashSecret(secret), CreatedAt: time.Now().UTC(), Admin: admin}
	if err := s.store.CreateAPIKey(ctx, k); err != nil {
		return api.NewAPIKey{}, err
	}
	s.log.Info("API key created", zap.String("name", name), zap.String("id", k.ID), zap.Bool("admin", admin))
	return api.NewAPIKey{APIKeyView: apiKeyView(k), Key: secret}, nil
}

// APIKeys lists every API key, revoked ones too, newest first.
func (s *Server) APIKeys(ctx context.Context) ([]api.APIKeyView, error) {
	all, err := s.store.ListAPIKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.APIKeyView, len(all))
	for i, k := range all {
		out[i] = apiKeyView(k)
	}
	return out, nil
}

// RevokeAPIKey revokes a key by id: the API refuses it from then on and
// console sessions signed in with it end at their next request.
func (s *Server) RevokeAPIKey(ctx context.Context, id string) (api.APIKeyView, error) {
	k, err := s.store.RevokeAPIKey(ctx, id, time.Now().UTC())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return api.APIKeyView{}, kind.Errorf(store.ErrNotFound, "no API key with id %q", id)
	case errors.Is(err, store.ErrLastAdminKey):
		return api.APIKeyView{}, kind.Errorf(kind.ErrConflict, "API key %q is the last valid admin key; create another admin key before revoking it", id)
	case err != nil:
		return api.APIKeyView{}, err
	}
	s.log.Info("API key revoked", zap.String("name", k.Name), zap.String("id", k.ID))
	return apiKeyView(k), nil
}

// Enrollment token states.
const (
	TokenUnused  = "unused"
	TokenUsed    = "used"
	TokenExpired = "expired"
)

// Tokens lists the enrollment tokens, newest first.
func (s *Server) Tokens(ctx context.Context) ([]api.TokenView, error) {
	all, err := s.store.ListTokens(ctx)
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	for _, t := range all {
		if t.UsedBy != "" {
			agents, err := s.store.ListAgents(ctx)
			if err != nil {
				return nil, err
			}
			for _, a := range agents {
				names[a.Thumbprint] = a.Name
			}
			break
		}
	}
	now := time.Now()
	out := make([]api.TokenView, len(all))
	for i, t := range all {
		v := api.TokenView{ID: t.ID, Environment: t.Environment, State: TokenUnused, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt}
		switch {
		case !t.UsedAt.IsZero():
			used := t.UsedAt
			v.State, v.UsedAt, v.UsedBy = TokenUsed, &used, t.UsedBy
			if n, ok := names[t.UsedBy]; ok {
				v.UsedBy = n
			}
		case !now.Before(t.ExpiresAt):
			v.State = TokenExpired
		}
		out[i] = v
	}
	return out, nil
}

// RevokeToken removes an enrollment token: an unused one can no longer
// enroll an agent.
func (s *Server) RevokeToken(ctx context.Context, id string) error {
	err := s.store.DeleteToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return kind.Errorf(store.ErrNotFound, "no enrollment token with id %q", id)
	}
	if err != nil {
		return err
	}
	s.log.Info("enrollment token revoked", zap.String("id", id))
	return nil
}

// apiKeyContext is the context key of the API key a request was
// authorized with.
type apiKeyContext struct{}

func withAPIKey(ctx context.Context, k store.APIKey) context.Context {
	return context.WithValue(ctx, apiKeyContext{}, k)
}

// requestAPIKey returns the key a request was authorized with.
func requestAPIKey(ctx context.Context) (store.APIKey, bool) {
	k, ok := ctx.Value(apiKeyContext{}).(store.APIKey)
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
	vs, err := s.Users(r.Context())
	s.respond(w, http.StatusOK, vs, err)
}

func (s *Server) apiCreateUser(w http.ResponseWriter, r *http.Request) {
	var req api.UserRequest
	if !decodeBody(w, r, &req) {
		return
	}
	v, err := s.CreateUser(r.Context(), req.Name, req.Password)
	s.respond(w, http.StatusCreated, v, err)
}

func (s *Server) apiDeleteUser(w http.ResponseWriter, r *http.Request) {
	if err := s.DeleteUser(r.Context(), r.PathValue("name")); err != nil {
		s.apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) apiAPIKeys(w http.ResponseWriter, r *http.Request) {
	vs, err := s.APIKeys(r.Context())
	s.respond(w, http.StatusOK, vs, err)
}

func (s *Server) apiCreateAPIKey(w http.ResponseWriter, r *http.Request) {
	var req api.APIKeyRequest
	if !decodeBody(w, r, &req) {
		return
	}
	v, err := s.CreateAPIKey(r.Context(), req.Name, req.Admin)
	s.respond(w, http.StatusCreated, v, err)
}

func (s *Server) apiRevokeAPIKey(w http.ResponseWriter, r *http.Request) {
	v, err := s.RevokeAPIKey(r.Context(), r.PathValue("id"))
	s.respond(w, http.StatusOK, v, err)
}

func (s *Server) apiTokens(w http.ResponseWriter, r *http.Request) {
	vs, err := s.Tokens(r.Context())
	s.respond(w, http.StatusOK, vs, err)
}

func (s *Server) apiRevokeToken(w http.ResponseWriter, r *http.Request) {
	if err := s.RevokeToken(r.Context(), r.PathValue("id")); err != nil {
		s.apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
