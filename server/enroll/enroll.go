// Package enroll serves agents that are not registered yet: a session
// whose certificate the coordinator does not know may call Register, with
// a one-time token, and nothing else.
package enroll

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/secret"
	"github.com/tendrildeploy/tendril/server/store"
)

const (
	// enrollTimeout bounds a whole enrollment session.
	enrollTimeout = 30 * time.Second
)

// Store is the part of the store enrollment needs.
type Store interface {
	Register(ctx context.Context, p store.RegisterParams) (store.RegisterResult, error)
}

// Config configures an Enroller. Every field but Logger is required.
type Config struct {
	Store Store
	// Signing is the coordinator's signing key, whose public half a new
	// agent pins.
	Signing *certs.SigningKey
	// Thumbprints are the coordinator certificates a new agent pins.
	Thumbprints func() []string
	// Replaced is told of every agent a forced registration replaced:
	// its session must end, on this node or another.
	Replaced func(agentID string)
	Logger   *zap.Logger
}

// Enroller registers new agents.
type Enroller struct {
	cfg Config
	log *zap.Logger
}

// New returns an Enroller over cfg.
func New(cfg Config) *Enroller {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Enroller{cfg: cfg, log: cfg.Logger}
}

// Serve serves a connection whose certificate is not registered:
// it may call Register and nothing else.
func (e *Enroller) Serve(ctx context.Context, sess *yamux.Session, thumb string, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(ctx, enrollTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		st.SetDeadline(time.Now().Add(protocol.RequestTimeout))
		f, err := protocol.ReadFrame(st, 0)
		if err != nil {
			protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
			st.Close()
			return
		}
		if f.Type != protocol.TypeRegister {
			log.Info("unregistered certificate refused", zap.String("type", f.Type))
			protocol.WriteError(st, protocol.CodeUnauthorized, "this certificate is not registered with the coordinator; only register is allowed (run \"tendril-agent register\")")
			protocol.LingerClose(st)
			return // and the session closes with it
		}
		e.Register(ctx, st, f, thumb)
		st.Close()
	}
}

// Register answers a Register request read from st by the holder of the
// certificate thumb: a new agent on an enrollment session, or a
// registered one re-enrolling with --force on its own session.
func (e *Enroller) Register(ctx context.Context, st *yamux.Stream, f protocol.Frame, thumb string) {
	var r protocol.Register
	if err := f.Decode(&r); err != nil {
		protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
		return
	}
	if err := api.ValidateName("agent", r.Name); err != nil {
		protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
		return
	}
	if r.Environment != "" {
		if err := api.ValidateName("environment", r.Environment); err != nil {
			protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
			return
		}
	}
	res, err := e.cfg.Store.Register(ctx, store.RegisterParams{
		TokenHash: secret.Hash(r.Token), Thumbprint: thumb, Name: r.Name, Environment: r.Environment,
		Force: r.Force, Now: time.Now().UTC(), NewID: uuid.NewString(),
	})
	if err != nil {
		code, msg := registerError(err, r.Name)
		e.log.Info("registration refused", zap.String("name", r.Name), zap.String("thumbprint", thumb), zap.Error(err))
		protocol.WriteError(st, code, msg)
		return
	}
	for _, old := range res.Replaced {
		e.cfg.Replaced(old.ID)
	}
	e.log.Info("agent registered", zap.String("agent", res.Agent.Name), zap.String("environment", res.Agent.Environment),
		zap.String("thumbprint", thumb), zap.Int("replaced", len(res.Replaced)))
	protocol.WriteFrame(st, protocol.TypeRegistered, protocol.Registered{
		AgentID: res.Agent.ID, Name: res.Agent.Name, Environment: res.Agent.Environment,
		SigningKey: e.cfg.Signing.Public(), ServerThumbprints: e.cfg.Thumbprints(), SignsRequests: true,
	})
}

// RevokedRegisterMessage answers a registration made with a revoked
// certificate. An agent of this release never shows it: it registers
// again at once with a new certificate. An older one keeps its
// certificate on register --force, so the message says how to get
// another.
const RevokedRegisterMessage = "this agent's certificate was revoked on the coordinator (its agent was deleted or replaced) and is never registered again: " +
	"register with a new certificate (this tendril-agent keeps its certificate: move the agent home aside and register from an empty one, or use a newer tendril-agent, which makes a new one)"

// registerError turns a store error into a code and a message a person can
// act on.
func registerError(err error, name string) (string, string) {
	var envErr *store.EnvironmentError
	switch {
	case errors.Is(err, store.ErrTokenExpired):
		return protocol.CodeUnauthorized, "the enrollment token has expired; create a new one with \"tendril-server token create --environment ENV\""
	case errors.Is(err, store.ErrTokenUsed):
		return protocol.CodeUnauthorized, "the enrollment token has already been used (each token enrolls one agent); create a new one with \"tendril-server token create\""
	case errors.Is(err, store.ErrTokenInvalid):
		// The store's message says why (unknown, or another environment).
		return protocol.CodeUnauthorized, err.Error() + "; check the token, or create one with \"tendril-server token create --environment ENV\""
	case errors.As(err, &envErr) && envErr.ByName:
		return protocol.CodeConflict, fmt.Sprintf("an agent named %q is registered in environment %q, and this token enrols into %q: "+
			"--force replaces only an agent of the token's environment; choose another --name, use a token for %q, or delete that agent first (tendril-server agents delete %s)",
			envErr.Agent, envErr.Environment, envErr.TokenEnvironment, envErr.Environment, envErr.Agent)
	case errors.As(err, &envErr):
		return protocol.CodeConflict, fmt.Sprintf("this agent's certificate is registered as %q in environment %q, and this token enrols into %q: "+
			"--force replaces only an agent of the token's environment; use a token for %q, or delete that agent first (tendril-server agents delete %s)",
			envErr.Agent, envErr.Environment, envErr.TokenEnvironment, envErr.Environment, envErr.Agent)
	case errors.Is(err, store.ErrRevoked):
		// Only when the revocation came after the session started: a
		// revoked certificate is answered before its first request
		// reaches enrollment.
		return protocol.CodeRevoked, RevokedRegisterMessage
	case errors.Is(err, store.ErrNameTaken):
		return protocol.CodeConflict, fmt.Sprintf("an agent named %q is already registered; choose another --name, or use --force to replace it", name)
	case errors.Is(err, store.ErrThumbprintTaken):
		return protocol.CodeConflict, "this agent's certificate is already registered under another name; use --force to register it again"
	}
	return protocol.CodeInternal, "the coordinator could not register the agent; see its log"
}
