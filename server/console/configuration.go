package console

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/httpapi"
)

// joinHome is the agent home the console's join command names: the one
// install.sh uses by default.
const joinHome = "/var/lib/tendril-agent"

// tokenTTLs are the lifetimes the console offers for enrollment tokens;
// the API and the CLI take any duration up to MaxTokenTTL.
var tokenTTLs = []tokenTTL{
	{"1h", "1 hour"},
	{"24h", "1 day"},
	{"168h", "7 days"},
	{"720h", "30 days"},
}

// tokenTTL is one choice of the token form's lifetime list.
type tokenTTL struct {
	Value, Label string
}

// defaultTokenTTL is the choice selected at first.
const defaultTokenTTL = "24h"

func (c *Console) registerConfiguration(mux *http.ServeMux) {
	mux.Handle("GET /configuration", c.page("GET /api/server", c.configurationPage))
	mux.Handle("GET /ui/fragments/configuration/maintenance", c.uiAPI("GET /api/maintenance", c.maintenanceFragment))
	mux.Handle("GET /ui/fragments/maintenance-banner", c.uiAPI("GET /api/maintenance", c.maintenanceBannerFragment))
	mux.Handle("POST /actions/maintenance", c.action("PUT /api/maintenance", c.setMaintenance))
	mux.Handle("POST /actions/tokens", c.action("POST /api/tokens", c.createToken))
	mux.Handle("POST /actions/tokens/{id}/revoke", c.action("DELETE /api/tokens/{id}", c.revokeToken))
	mux.Handle("POST /actions/api-keys", c.action("POST /api/api-keys", c.createAPIKey))
	mux.Handle("POST /actions/api-keys/{id}/revoke", c.action("POST /api/api-keys/{id}/revoke", c.revokeAPIKey))
}

// consoleMaintenance is the body of the maintenance switch and its
// fragment.
type consoleMaintenance struct {
	CSRF string
	Can  consoleCan
	api.MaintenanceView
}

// consoleConfiguration is the body of the configuration page.
type consoleConfiguration struct {
	CSRF        string
	Can         consoleCan
	Role        string // the session's role and what it may do, in words
	Maintenance consoleMaintenance

	Tokens       []api.TokenView
	Environments []string // known ones, offered in the token form
	TTLs         []tokenTTL
	DefaultTTL   string

	APIKeys []api.APIKeyView
	// OnlyAdminKey is the id of the one valid admin key, if there is
	// exactly one: its Revoke button is disabled, saying why, as the
	// coordinator would refuse it.
	OnlyAdminKey string
	Users        []api.UserView

	Calamari      []api.BundleView
	AgentPackages []api.AgentPackageView
	Updates       api.UpdatesView
	ReleaseFeed   bool // one is configured
}

func (c *Console) configuration(ctx context.Context, si sessionInfo) (consoleConfiguration, error) {
	m, err := c.co.Maintenance(ctx)
	if err != nil {
		return consoleConfiguration{}, err
	}
	cfg := consoleConfiguration{
		CSRF: si.csrf, Can: canOf(si), Maintenance: consoleMaintenance{CSRF: si.csrf, Can: canOf(si), MaintenanceView: m},
		Role: fmt.Sprintf("%s has the role %s, which may %s.", si.caller.Who, si.caller.Role, api.RoleAllows(si.caller.Role, si.caller.Environments)),
		TTLs: tokenTTLs, DefaultTTL: defaultTokenTTL, Updates: c.co.Updates(), ReleaseFeed: c.releaseFeed,
	}
	// Each section is read only for a role that may read it, as the API
	// would answer.
	if cfg.Can.Do("GET /api/tokens") {
		if cfg.Tokens, err = c.access.Tokens(ctx); err != nil {
			return consoleConfiguration{}, fmt.Errorf("console: list tokens: %w", err)
		}
	}
	agents, err := c.scope(si).Agents(ctx)
	if err != nil {
		return consoleConfiguration{}, fmt.Errorf("console: list environments: %w", err)
	}
	seen := map[string]bool{}
	for _, a := range agents {
		if k := strings.ToLower(a.Environment); !seen[k] {
			seen[k] = true
			cfg.Environments = append(cfg.Environments, a.Environment)
		}
	}
	slices.SortFunc(cfg.Environments, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	if cfg.Can.Do("GET /api/api-keys") {
		if cfg.APIKeys, err = c.access.APIKeys(ctx); err != nil {
			return consoleConfiguration{}, fmt.Errorf("console: list API keys: %w", err)
		}
		cfg.OnlyAdminKey = onlyAdminKey(cfg.APIKeys)
		if cfg.Users, err = c.access.Users(ctx); err != nil {
			return consoleConfiguration{}, fmt.Errorf("console: list users: %w", err)
		}
	}
	if cfg.Calamari, err = c.co.CalamariBundles(ctx); err != nil {
		return consoleConfiguration{}, fmt.Errorf("console: list Calamari bundles: %w", err)
	}
	if cfg.AgentPackages, err = c.rollouts.AgentPackages(ctx); err != nil {
		return consoleConfiguration{}, fmt.Errorf("console: list agent packages: %w", err)
	}
	return cfg, nil
}

// onlyAdminKey returns the id of the one valid admin key among keys, ""
// if there are none or several.
func onlyAdminKey(keys []api.APIKeyView) string {
	id := ""
	for _, k := range keys {
		if k.Admin && !k.Revoked {
			if id != "" {
				return ""
			}
			id = k.ID
		}
	}
	return id
}

func (c *Console) configurationPage(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	cfg, err := c.configuration(r.Context(), si)
	if err != nil {
		c.serverError(w, r, &si, err)
		return
	}
	c.render(w, r, &si, http.StatusOK, "configuration", "configuration", cfg)
}

func (c *Console) maintenanceFragment(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	m, err := c.co.Maintenance(r.Context())
	if err != nil {
		httpapi.InternalError(w, c.log, err)
		return
	}
	c.renderFragment(w, "maintenance-body", consoleMaintenance{CSRF: si.csrf, Can: canOf(si), MaintenanceView: m})
}

// maintenanceBannerFragment refreshes the banner every page shows while
// maintenance mode is on, so its counts follow a drain.
func (c *Console) maintenanceBannerFragment(w http.ResponseWriter, r *http.Request, _ sessionInfo) {
	m, err := c.co.Maintenance(r.Context())
	if err != nil {
		httpapi.InternalError(w, c.log, err)
		return
	}
	c.renderFragment(w, "maintenance-banner-body", m)
}

func (c *Console) setMaintenance(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	var on bool
	switch r.PostForm.Get("on") {
	case "true":
		on = true
	case "false":
	default:
		c.done(w, r, si, "/configuration", consoleFlash{Kind: "error", Text: `Maintenance mode: the form must say on=true or on=false; nothing changed.`})
		return
	}
	v, err := c.co.SetMaintenance(r.Context(), on)
	if err != nil {
		c.done(w, r, si, "/configuration", c.failed("Maintenance mode", err))
		return
	}
	text := "Maintenance mode is off: new tasks and upgrades start again."
	if v.On {
		text = fmt.Sprintf("Maintenance mode is on: no new tasks or upgrades start. %s.", stillRunning(v))
	}
	c.done(w, r, si, "/configuration", consoleFlash{Kind: "ok", Text: text})
}

// stillRunning says what a drain is waiting for.
func stillRunning(v api.MaintenanceView) string {
	return fmt.Sprintf("%d %s still running, %d queued, %d %s running",
		v.RunningTasks, plural(v.RunningTasks, "task", "tasks"), v.QueuedTasks,
		v.RunningRollouts, plural(v.RunningRollouts, "rollout", "rollouts"))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func (c *Console) createToken(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	env := strings.TrimSpace(r.PostForm.Get("environment"))
	if err := api.ValidateName("environment", env); err != nil {
		c.done(w, r, si, "/configuration", consoleFlash{Kind: "error", Text: "Create enrollment token failed: " + err.Error()})
		return
	}
	ttl, err := time.ParseDuration(r.PostForm.Get("ttl"))
	if err != nil || ttl <= 0 || ttl > api.MaxTokenTTL {
		c.done(w, r, si, "/configuration", consoleFlash{Kind: "error", Text: fmt.Sprintf(
			"Create enrollment token failed: lifetime %q: give a duration such as 24h, more than 0 and at most %s.", r.PostForm.Get("ttl"), api.MaxTokenTTL)})
		return
	}
	res, err := c.co.CreateToken(r.Context(), env, ttl, nil)
	if err != nil {
		c.done(w, r, si, "/configuration", c.failed("Create enrollment token", err))
		return
	}
	c.log.Info("enrollment token created", zap.String("environment", res.Environment), zap.Time("expires", res.ExpiresAt), zap.String("by", si.name))
	c.done(w, r, si, "/configuration", consoleFlash{
		Kind: "ok",
		Text: fmt.Sprintf("Enrollment token for %s created; it enrolls one agent until %s. Run this on the new machine (it is shown only now):",
			res.Environment, res.ExpiresAt.UTC().Format("2006-01-02 15:04 MST")),
		Copy: joinCommand(res.Join), CopyID: "join-command",
	})
}

// joinCommand is the command that enrolls a machine with join.
func joinCommand(join string) string {
	return "tendril-agent register --home " + joinHome + " --join " + api.QuoteArgs([]string{join})
}

func (c *Console) revokeToken(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	if err := c.access.RevokeToken(r.Context(), r.PathValue("id")); err != nil {
		c.done(w, r, si, "/configuration", c.failed("Revoke enrollment token", err))
		return
	}
	c.done(w, r, si, "/configuration", consoleFlash{Kind: "ok", Text: "Enrollment token revoked: it can no longer enroll an agent."})
}

func (c *Console) createAPIKey(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	name := strings.TrimSpace(r.PostForm.Get("name"))
	role := api.Role(r.PostForm.Get("role"))
	if r.PostForm.Get("admin") == "true" {
		role = api.RoleAdmin // the form before roles had an admin box
	}
	var envs []string
	for _, e := range strings.Split(r.PostForm.Get("environments"), ",") {
		if e = strings.TrimSpace(e); e != "" {
			envs = append(envs, e)
		}
	}
	k, err := c.access.CreateAPIKey(r.Context(), name, role, envs)
	if err != nil {
		c.done(w, r, si, "/configuration", c.failed("Create API key", err))
		return
	}
	what := string(k.Role)
	if len(k.Environments) > 0 {
		what += " for " + strings.Join(k.Environments, ", ")
	}
	c.done(w, r, si, "/configuration", consoleFlash{
		Kind: "ok",
		Text: fmt.Sprintf("API key %s (%s) created. Copy it now: it is shown only this once.", k.Name, what),
		Copy: k.Key, CopyID: "new-api-key",
	})
}

func (c *Console) revokeAPIKey(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	k, err := c.access.RevokeAPIKey(r.Context(), r.PathValue("id"))
	if err != nil {
		c.done(w, r, si, "/configuration", c.failed("Revoke API key", err))
		return
	}
	c.done(w, r, si, "/configuration", consoleFlash{Kind: "ok", Text: fmt.Sprintf(
		"API key %s revoked: the API refuses it and console sessions signed in with it have ended.", k.Name)})
}
