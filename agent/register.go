package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/proxy"
	"github.com/tendrildeploy/tendril/version"
)

// RegisterConfig is what Register needs to enroll an agent.
type RegisterConfig struct {
	// Home is the agent's home folder; it is created if missing.
	Home string
	// Servers is every coordinator node address, host:port. They are tried
	// in order until one answers.
	Servers []string
	// ServerThumbprint is the coordinator certificate thumbprint the
	// operator got out of band; the token is sent only to a coordinator
	// presenting it. Accepted in any form certs.NormalizeThumbprint takes.
	ServerThumbprint string
	// Token is the one-time enrollment token.
	Token string
	// Name is the agent's name on the coordinator. Default: the host name.
	Name string
	// Environment is the environment to join; empty lets the token decide.
	Environment string
	// Force replaces an existing registration, here and on the coordinator.
	Force bool
	// Version is reported to the coordinator. Default: version.Version.
	Version string
	// Logger receives progress messages. Default: discard.
	Logger *zap.Logger
	// DialTimeout bounds each TCP connect and TLS handshake. Default 10s.
	DialTimeout time.Duration
	// TLSMinVersion and TLSMaxVersion bound the TLS versions offered; 0
	// means the protocol defaults. Lowering the maximum makes the agent
	// behave like an old peer, which tests use.
	TLSMinVersion, TLSMaxVersion uint16
	// Proxy is the HTTP proxy to dial the coordinator through, as
	// proxy.Parse reads it: a URL such as http://user:password@host:3128,
	// "none", or "" for ProxyEnv's. It is kept with the registration, for
	// Run to use too.
	Proxy string
	// ProxyEnv is what the environment says about proxies (HTTPS_PROXY,
	// NO_PROXY), used when Proxy is "".
	ProxyEnv proxy.Env
}

const defaultTimeout = 10 * time.Second

// callTimeout bounds one RPC, so a coordinator that accepts a stream and
// never answers cannot hang the agent.
const callTimeout = 30 * time.Second

func (c *RegisterConfig) validate() error {
	if c.Home == "" {
		return errors.New("register: no home folder given")
	}
	abs, err := filepath.Abs(c.Home)
	if err != nil {
		return fmt.Errorf("register: home folder %q: %w", c.Home, err)
	}
	c.Home = abs
	if len(c.Servers) == 0 {
		return errors.New("register: no coordinator address given")
	}
	for _, s := range c.Servers {
		if err := protocol.ValidateServer(s); err != nil {
			return fmt.Errorf("register: %w", err)
		}
	}
	t, err := certs.NormalizeThumbprint(c.ServerThumbprint)
	if err != nil {
		return fmt.Errorf("register: coordinator %w", err)
	}
	c.ServerThumbprint = t
	if c.Token == "" {
		return errors.New("register: no enrollment token given")
	}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return fmt.Errorf("register: no name given and the host name is unknown (%v)", err)
		}
		c.Name = h
	}
	if c.Version == "" {
		c.Version = version.Version
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.DialTimeout < 0 {
		return errors.New("register: DialTimeout is negative")
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = defaultTimeout
	}
	return nil
}

// Register enrolls the agent with the coordinator: it creates the home
// folder and the agent's identity if missing, presents the token to the
// first coordinator node that answers with the expected certificate, and
// saves the registration. It refuses to replace an existing registration
// unless cfg.Force is set.
func Register(ctx context.Context, cfg RegisterConfig) (State, error) {
	if err := cfg.validate(); err != nil {
		return State{}, err
	}
	log := cfg.Logger.Named("agent")
	// First: the registration found in a home another user could change
	// is not believed, not even to say it exists.
	if err := makeHome(cfg.Home); err != nil {
		return State{}, err
	}
	if !cfg.Force {
		prev, err := LoadState(cfg.Home)
		if err == nil {
			return State{}, fmt.Errorf("already registered as %s with %s; use --force to register again", prev.Name, strings.Join(prev.Servers, ", "))
		}
		if !errors.Is(err, ErrNotRegistered) {
			return State{}, err
		}
	}
	id, err := loadOrCreateIdentity(cfg.Home, cfg.Name)
	if err != nil {
		return State{}, err
	}
	via, err := proxy.Parse(cfg.Proxy, cfg.ProxyEnv)
	if err != nil {
		return State{}, fmt.Errorf("register: %w", err)
	}
	tlsCfg := protocol.ClientTLS{
		Identity:   id,
		Pins:       certs.NewPins(cfg.ServerThumbprint),
		Hint:       cfg.ServerThumbprint,
		MinVersion: cfg.TLSMinVersion,
		MaxVersion: cfg.TLSMaxVersion,
	}.Config()
	req := protocol.Register{
		Token:       cfg.Token,
		Name:        cfg.Name,
		Environment: cfg.Environment,
		Force:       cfg.Force,
		Version:     cfg.Version,
		OS:          runtime.GOOS,
		Arch:        runtime.GOARCH,
	}
	renewed := false
	var failures attemptErrors
	for _, addr := range cfg.Servers {
		log.Debug("registering", zap.String("server", addr), zap.String("thumbprint", id.Thumbprint))
		reg, err := registerWith(ctx, via, addr, tlsCfg, cfg.DialTimeout, req)
		if protocol.IsCode(err, protocol.CodeRevoked) && !renewed {
			// The coordinator revoked this certificate (the agent was
			// deleted, or replaced): it is never accepted again, so a
			// new one is made and the token, unused, tried with it.
			renewed = true
			log.Info("the coordinator revoked this agent's certificate; registering with a new one", zap.String("revoked", id.Thumbprint))
			if id, err = renewIdentity(cfg.Home, cfg.Name); err != nil {
				return State{}, err
			}
			tlsCfg.Certificates = []tls.Certificate{id.Certificate}
			reg, err = registerWith(ctx, via, addr, tlsCfg, cfg.DialTimeout, req)
		}
		if err == nil {
			return saveRegistration(cfg, reg)
		}
		if errors.Is(err, certs.ErrUntrusted) {
			err = fmt.Errorf("coordinator at %s presented a certificate whose thumbprint is not %s; check --server-thumbprint (%w)", addr, cfg.ServerThumbprint, err)
		}
		var remote *protocol.RemoteError
		if errors.As(err, &remote) || ctx.Err() != nil {
			// The coordinator answered (bad token, name taken...): another
			// node shares its database and would answer the same.
			return State{}, err
		}
		failures = append(failures, err)
	}
	return State{}, failures
}

func saveRegistration(cfg RegisterConfig, reg protocol.Registered) (State, error) {
	thumbprints := reg.ServerThumbprints
	if len(thumbprints) == 0 {
		thumbprints = []string{cfg.ServerThumbprint}
	}
	st := State{
		AgentID:           reg.AgentID,
		Name:              reg.Name,
		Environment:       reg.Environment,
		Servers:           cfg.Servers,
		ServerThumbprints: thumbprints,
		ServerHint:        thumbprints[0],
		SigningKey:        reg.SigningKey,
		SignedRequests:    reg.SignsRequests,
		RegisteredAt:      time.Now().UTC(),
		Proxy:             strings.TrimSpace(cfg.Proxy),
	}
	if st.Name == "" {
		st.Name = cfg.Name
	}
	if err := saveState(cfg.Home, st); err != nil {
		return State{}, fmt.Errorf("registered, but could not save the registration: %w", err)
	}
	return st, nil
}

// loadOrCreateIdentity keeps an existing identity, so registering again
// with --force does not change the agent's thumbprint, unless the
// coordinator revoked it (see renewIdentity).
func loadOrCreateIdentity(home, name string) (*certs.Identity, error) {
	cur, next := certSlot(home, currentSlot), certSlot(home, nextSlot)
	if cur.complete() || exists(next.cert) {
		return loadIdentity(home)
	}
	id, err := certs.NewIdentity(name)
	if err != nil {
		return nil, fmt.Errorf("create agent identity: %w", err)
	}
	if err := id.Save(cur.cert, cur.key); err != nil {
		return nil, fmt.Errorf("create agent identity: %w", err)
	}
	return id, nil
}

// renewIdentity replaces the agent's identity with a new one, for a
// certificate the coordinator revoked. The new one goes through the
// pending slot and a promotion, so that a crash leaves either identity
// whole, never a key of one with the certificate of the other.
func renewIdentity(home, name string) (*certs.Identity, error) {
	id, err := certs.NewIdentity(name)
	if err != nil {
		return nil, fmt.Errorf("create agent identity: %w", err)
	}
	next := certSlot(home, nextSlot)
	if err := id.Save(next.cert, next.key); err != nil {
		return nil, fmt.Errorf("create agent identity: %w", err)
	}
	if err := promote(home); err != nil {
		return nil, err
	}
	return id, nil
}

func registerWith(ctx context.Context, via proxy.Setting, addr string, tlsCfg *tls.Config, timeout time.Duration, req protocol.Register) (protocol.Registered, error) {
	conn, err := dialTLS(ctx, via, addr, tlsCfg, nil, timeout, timeout)
	if err != nil {
		return protocol.Registered{}, err
	}
	sess, err := protocol.NewSession(conn, protocol.SessionOptions{})
	if err != nil {
		conn.Close()
		return protocol.Registered{}, fmt.Errorf("start session with coordinator %s: %w", addr, err)
	}
	defer sess.Close()
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var reg protocol.Registered
	if err := protocol.Call(callCtx, sess, protocol.TypeRegister, req, protocol.TypeRegistered, &reg); err != nil {
		return protocol.Registered{}, fmt.Errorf("register with coordinator %s: %w", addr, err)
	}
	return reg, nil
}

// attemptErrors is the failure of every coordinator node, on one line.
type attemptErrors []error

func (e attemptErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e attemptErrors) Unwrap() []error { return e }

// reloadRegistration takes a new registration of the home, made by
// register --force while this agent ran deleted: its identity, and the
// coordinator's addresses, certificates and signing key, and the proxy.
// It reports whether it took one. A new registration it cannot take is
// logged, once per reason, and tried again at the next call. Only Run's
// goroutine calls it.
func (a *Agent) reloadRegistration() bool {
	st, id, via, err := a.newRegistration()
	if err != nil {
		if msg := err.Error(); msg != a.lastReloadErr {
			a.lastReloadErr = msg
			a.log.Warn("cannot take the home's registration; restart the agent once it is fixed", zap.Error(err))
		}
		return false
	}
	a.lastReloadErr = ""
	if st == nil {
		return false
	}
	a.stateMu.Lock()
	a.state = *st
	a.stateMu.Unlock()
	a.setIdentity(id)
	a.pins.Set(st.ServerThumbprints...)
	a.servers = serverList(*st)
	a.proxy = via
	a.calamari.SetSigningKey(st.SigningKey)
	a.log.Info("the home was registered again: connecting with the new registration",
		zap.String("name", st.Name), zap.String("environment", st.Environment), zap.String("thumbprint", id.Thumbprint))
	return true
}

// newRegistration reads the home's registration if it is not the one
// this agent runs: nil if it is the same. Register writes agent.json
// last, after the identity, so a new RegisteredAt there means both are
// complete.
func (a *Agent) newRegistration() (*State, *certs.Identity, proxy.Setting, error) {
	a.stateMu.Lock()
	registeredAt := a.state.RegisteredAt
	a.stateMu.Unlock()
	// As at start: nothing another user could have written is believed.
	if err := checkTrust(a.cfg.Home, ""); err != nil {
		return nil, nil, proxy.Setting{}, err
	}
	st, err := LoadState(a.cfg.Home)
	if err != nil {
		return nil, nil, proxy.Setting{}, err
	}
	if st.RegisteredAt.Equal(registeredAt) {
		return nil, nil, proxy.Setting{}, nil
	}
	if st.Listen != "" {
		return nil, nil, proxy.Setting{}, errors.New("the home was registered again as a listening agent")
	}
	id, err := loadIdentity(a.cfg.Home)
	if err != nil {
		return nil, nil, proxy.Setting{}, err
	}
	text := st.Proxy
	if a.cfg.Proxy != "" {
		text = a.cfg.Proxy
	}
	via, err := proxy.Parse(text, a.cfg.ProxyEnv)
	if err != nil {
		return nil, nil, proxy.Setting{}, fmt.Errorf("the home's registration: %w", err)
	}
	return &st, id, via, nil
}
