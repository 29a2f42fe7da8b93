// Package access decides who may act on the coordinator: console users
// and their passwords (argon2id), API keys, and the listing and revocation
// of enrollment tokens. The HTTP API and the console ask it, through
// interfaces of their own, whether a key or a password is good; neither
// touches the store.
package access

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/secret"
	"github.com/tendrildeploy/tendril/server/store"
)

// Store is what access needs of the coordinator's database.
type Store interface {
	store.AccessStore
	CreateAPIKey(ctx context.Context, k store.APIKey) error
	APIKeyByHash(ctx context.Context, hash string) (store.APIKey, error)
	ListTokens(ctx context.Context) ([]store.Token, error)
	ListAgents(ctx context.Context) ([]store.Agent, error)
}

// Service answers for users, API keys and enrollment tokens.
type Service struct {
	st  Store
	log *zap.Logger
}

// New returns a Service over st. log receives a line per change.
func New(st Store, log *zap.Logger) *Service {
	return &Service{st: st, log: log}
}

// ErrBadCredentials is every failed password sign-in, whatever was wrong:
// the user name, the password, or the stored hash.
var ErrBadCredentials = errors.New("the user name and password do not match")

func userView(u store.User) api.UserView {
	return api.UserView{ID: u.ID, Name: u.Name, Role: u.Role, Environments: nonNil(u.Environments), CreatedAt: u.CreatedAt}
}

// nonNil is l, or an empty list: views say "no environments" as [],
// not null.
func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// CreateUser adds a console user with a role (a deployer with its
// environments). The password is stored as an argon2id hash with a
// random salt.
func (s *Service) CreateUser(ctx context.Context, name, password string, role api.Role, environments []string) (api.UserView, error) {
	if err := api.ValidateName("user", name); err != nil {
		return api.UserView{}, kind.Errorf(kind.ErrBadRequest, "%s", err.Error())
	}
	role, environments, err := api.ValidateRole(role, environments)
	if err != nil {
		return api.UserView{}, kind.Errorf(kind.ErrBadRequest, "user %s: %s", name, err.Error())
	}
	if err := ValidatePassword(password); err != nil {
		return api.UserView{}, err
	}
	u := store.User{ID: uuid.NewString(), Name: name, PasswordHash: hashPassword(password), CreatedAt: time.Now().UTC(),
		Role: role, Environments: environments}
	if err := s.st.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrExists) {
			return api.UserView{}, kind.Errorf(kind.ErrConflict, "a user named %q exists already", name)
		}
		return api.UserView{}, err
	}
	s.log.Info("console user created", zap.String("user", name), zap.String("role", string(role)), zap.Strings("environments", environments))
	return userView(u), nil
}

// Users lists the console users by name.
func (s *Service) Users(ctx context.Context) ([]api.UserView, error) {
	all, err := s.st.ListUsers(ctx)
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
func (s *Service) DeleteUser(ctx context.Context, name string) error {
	u, err := s.st.DeleteUser(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return kind.Errorf(store.ErrNotFound, "no user named %q", name)
	}
	if err != nil {
		return err
	}
	s.log.Info("console user deleted", zap.String("user", u.Name))
	return nil
}

// Authenticate checks a user's password. Every failure is
// ErrBadCredentials, and an unknown name costs a hash as a known one
// does, so neither the answer nor its timing says which part was wrong.
func (s *Service) Authenticate(ctx context.Context, name, password string) (api.UserView, error) {
	u, err := s.st.UserByName(ctx, name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return api.UserView{}, err
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
		return api.UserView{}, ErrBadCredentials
	}
	return userView(u), nil
}

// IsBadCredentials reports whether an Authenticate error is a wrong user
// name or password rather than a failure to check them.
func (s *Service) IsBadCredentials(err error) bool { return errors.Is(err, ErrBadCredentials) }

// User returns a user by id, or an error wrapping kind.ErrNotFound once
// the user is deleted: a console session re-checks its user with it.
func (s *Service) User(ctx context.Context, id string) (api.UserView, error) {
	u, err := s.st.UserByID(ctx, id)
	if err != nil {
		return api.UserView{}, err
	}
	return userView(u), nil
}

// CheckAPIKey returns the valid key that key (as sent, surrounding space
// ignored) is, or an error wrapping kind.ErrNotFound. The API's bearer
// check and the console's sign-in both use it, so both accept exactly the
// same keys.
func (s *Service) CheckAPIKey(ctx context.Context, key string) (api.APIKeyView, error) {
	return s.APIKeyByHash(ctx, secret.Hash(strings.TrimSpace(key)))
}

// APIKeyByHash returns the valid key whose hash (secret.Hash) is hash, or
// an error wrapping kind.ErrNotFound once it is revoked: a console session
// keeps only the hash of the key it was opened with and re-checks it.
func (s *Service) APIKeyByHash(ctx context.Context, hash string) (api.APIKeyView, error) {
	k, err := s.st.APIKeyByHash(ctx, hash)
	if err != nil {
		return api.APIKeyView{}, err
	}
	return apiKeyView(k), nil
}

func apiKeyView(k store.APIKey) api.APIKeyView {
	v := api.APIKeyView{ID: k.ID, Name: k.Name, Admin: k.Role == api.RoleAdmin, Role: k.Role, Environments: nonNil(k.Environments),
		CreatedAt: k.CreatedAt, Revoked: !k.RevokedAt.IsZero()}
	if v.Revoked {
		at := k.RevokedAt
		v.RevokedAt = &at
	}
	return v
}

// CreateAPIKey makes a new API key with a role (a deployer with its
// environments). Only its hash is stored.
func (s *Service) CreateAPIKey(ctx context.Context, name string, role api.Role, environments []string) (api.NewAPIKey, error) {
	if err := api.ValidateName("API key", name); err != nil {
		return api.NewAPIKey{}, kind.Errorf(kind.ErrBadRequest, "%s", err.Error())
	}
	role, environments, err := api.ValidateRole(role, environments)
	if err != nil {
		return api.NewAPIKey{}, kind.Errorf(kind.ErrBadRequest, "API key %s: %s", name, err.Error())
	}
	key := secret.New("tdk_")
	k := store.APIKey{ID: uuid.NewString(), Name: name, Hash: secret.Hash(key), CreatedAt: time.Now().UTC(),
		Role: role, Environments: environments, Admin: role == api.RoleAdmin}
	if err := s.st.CreateAPIKey(ctx, k); err != nil {
		return api.NewAPIKey{}, err
	}
	s.log.Info("API key created", zap.String("name", name), zap.String("id", k.ID), zap.String("role", string(role)), zap.Strings("environments", environments))
	return api.NewAPIKey{APIKeyView: apiKeyView(k), Key: key}, nil
}

// APIKeys lists every API key, revoked ones too, newest first.
func (s *Service) APIKeys(ctx context.Context) ([]api.APIKeyView, error) {
	all, err := s.st.ListAPIKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.APIKeyView, len(all))
	for i, k := range all {
		out[i] = apiKeyView(k)
	}
	return out, nil
}

// CreateAdminKeyCommand is the command that makes another admin key, which
// the refusal to revoke the last one names.
const CreateAdminKeyCommand = "tendril-server apikey create NAME --role admin"

// RevokeAPIKey revokes a key by id: the API refuses it from then on and
// console sessions signed in with it end at their next request. The last
// valid admin key is refused (kind.ErrConflict, with what to do instead):
// without one, neither the API nor the admin commands could manage API
// keys and users any more. The API, the CLI and the console all revoke
// through here, so all of them refuse it alike.
func (s *Service) RevokeAPIKey(ctx context.Context, id string) (api.APIKeyView, error) {
	k, err := s.st.RevokeAPIKey(ctx, id, time.Now().UTC())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return api.APIKeyView{}, kind.Errorf(store.ErrNotFound, "no API key with id %q", id)
	case errors.Is(err, store.ErrLastAdminKey):
		return api.APIKeyView{}, kind.Errorf(kind.ErrConflict,
			"API key %s is the last valid admin key: without one, neither the API nor the admin commands could manage API keys and users. "+
				"Create another admin key first (%s), then revoke this one", s.keyName(ctx, id), CreateAdminKeyCommand)
	case err != nil:
		return api.APIKeyView{}, err // the store names the operation
	}
	s.log.Info("API key revoked", zap.String("name", k.Name), zap.String("id", k.ID))
	return apiKeyView(k), nil
}

// keyName names a key for a message: its name and id, or the id alone if
// the name cannot be read (the message matters more than the name).
func (s *Service) keyName(ctx context.Context, id string) string {
	all, err := s.st.ListAPIKeys(ctx)
	if err == nil {
		for _, k := range all {
			if k.ID == id {
				return fmt.Sprintf("%q (%s)", k.Name, id)
			}
		}
	}
	return fmt.Sprintf("%q", id)
}

// Tokens lists the enrollment tokens, newest first.
func (s *Service) Tokens(ctx context.Context) ([]api.TokenView, error) {
	all, err := s.st.ListTokens(ctx)
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	for _, t := range all {
		if t.UsedBy != "" {
			agents, err := s.st.ListAgents(ctx)
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
		v := api.TokenView{ID: t.ID, Environment: t.Environment, State: api.TokenUnused, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt}
		switch {
		case !t.UsedAt.IsZero():
			used := t.UsedAt
			v.State, v.UsedAt, v.UsedBy = api.TokenUsed, &used, t.UsedBy
			if n, ok := names[t.UsedBy]; ok {
				v.UsedBy = n
			}
		case !now.Before(t.ExpiresAt):
			v.State = api.TokenExpired
		}
		out[i] = v
	}
	return out, nil
}

// RevokeToken removes an enrollment token: an unused one can no longer
// enroll an agent.
func (s *Service) RevokeToken(ctx context.Context, id string) error {
	err := s.st.DeleteToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return kind.Errorf(store.ErrNotFound, "no enrollment token with id %q", id)
	}
	if err != nil {
		return err
	}
	s.log.Info("enrollment token revoked", zap.String("id", id))
	return nil
}
