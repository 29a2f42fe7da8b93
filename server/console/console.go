package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/mod/semver"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/bytesize"
	"github.com/tendrildeploy/tendril/server/console/ui"
	"github.com/tendrildeploy/tendril/server/healthlog"
	"github.com/tendrildeploy/tendril/server/httpapi"
	"github.com/tendrildeploy/tendril/server/kind"
)

// CookieName names the browser's session cookie.
const CookieName = "tendril_session"

// CSRFHeader carries the CSRF token for requests made by script rather
// than by a form.
const CSRFHeader = "X-CSRF-Token"

// consoleCSP allows only the console's own files: no inline script or
// style, so an injected tag that escaped escaping still could not run.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// taskLogPreview is how many log lines the task page renders itself; the
// page's script streams the rest.
const taskLogPreview = 5000

// errNoSession means the request carries no live console session.
var errNoSession = errors.New("not signed in")

// Access is what the console asks about who may act: signing in, the
// re-check of every request's session, and the management pages.
type Access interface {
	httpapi.Access
	// Authenticate checks a user's password.
	Authenticate(ctx context.Context, name, password string) (api.UserView, error)
	// User returns a user by id, kind.ErrNotFound once deleted.
	User(ctx context.Context, id string) (api.UserView, error)
	// APIKeyByHash returns a valid key by the hash of its secret,
	// kind.ErrNotFound once revoked.
	APIKeyByHash(ctx context.Context, hash string) (api.APIKeyView, error)
	// IsBadCredentials reports whether an Authenticate error is a wrong
	// name or password rather than a failure to check.
	IsBadCredentials(err error) bool
}

// Machines is what only the console asks of the coordinator core.
type Machines interface {
	// LatestCalamari is the newest uploaded Calamari version, "" if
	// none.
	LatestCalamari(ctx context.Context) (string, error)
	// CalamariVersions lists the Calamari versions verified on an agent.
	CalamariVersions(ctx context.Context, agentID string) ([]string, error)
	// HealthHistory is an agent's recent health checks, oldest first.
	HealthHistory(agentID string) []healthlog.Point
}

// Config configures the console. Every field but Logger and ReleaseFeed
// is required.
type Config struct {
	Coordinator httpapi.Coordinator
	Rollouts    httpapi.Rollouts
	Access      Access
	Machines    Machines
	// API serves the task endpoints the console's pages read through
	// their session, so that both answer alike.
	API *httpapi.API
	// Version is the coordinator's, shown in the page footer.
	Version string
	// ReleaseFeed says whether a release feed is configured, for the
	// configuration page.
	ReleaseFeed bool
	Logger      *zap.Logger
}

// Console is the web UI: server-rendered pages over the same methods the
// JSON API calls, with its own session sign-in so that the browser never
// holds the API key after signing in.
type Console struct {
	co          httpapi.Coordinator
	rollouts    httpapi.Rollouts
	access      Access
	machines    Machines
	api         *httpapi.API
	version     string
	releaseFeed bool
	log         *zap.Logger

	tpl      *ui.Templates
	sessions *consoleSessions
	// cop refuses cross-origin state changes by the browser's own
	// headers (Sec-Fetch-Site, Origin), in addition to the CSRF token.
	cop *http.CrossOriginProtection
	// limits slows down guessing at the sign-in form.
	limits *signinLimiter
}

// consoleFuncs are the helpers every console template may call.
var consoleFuncs = template.FuncMap{
	"pathEscape": url.PathEscape,
	"join":       strings.Join,
	"bytes":      bytesize.Format,
	// quoteArgs shows a task's arguments as a shell would need them, the
	// way the commands print them.
	"quoteArgs": api.QuoteArgs,
}

// New returns the console over cfg.
func New(cfg Config) *Console {
	tpl, err := ui.Parse(consoleFuncs)
	if err != nil {
		// The templates are compiled in; a parse error is a bug that the
		// package's tests catch, not a condition to run with.
		panic(err)
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Console{
		co: cfg.Coordinator, rollouts: cfg.Rollouts, access: cfg.Access, machines: cfg.Machines, api: cfg.API,
		version: cfg.Version, releaseFeed: cfg.ReleaseFeed, log: log,
		tpl: tpl, sessions: newConsoleSessions(), cop: http.NewCrossOriginProtection(), limits: newSigninLimiter(),
	}
}

// Register adds the web console's routes to mux. The API under /api/ is
// untouched: it keeps its bearer keys.
func (c *Console) Register(mux *http.ServeMux) {
	static := http.FileServerFS(ui.Static())
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		static.ServeHTTP(w, r)
	})))
	mux.HandleFunc("GET /signin", c.signinPage)
	mux.HandleFunc("POST /signin", c.signin)
	mux.Handle("POST /signout", c.action(allSignedIn, c.signout))

	mux.Handle("GET /{$}", c.page("GET /api/agents", c.environmentsPage))
	mux.Handle("GET /machines/{name}", c.page("GET /api/agents/{name}", c.machinePage))
	mux.Handle("GET /tasks", c.page("GET /api/tasks", c.tasksPage))
	mux.Handle("GET /tasks/{id}", c.page("GET /api/tasks/{id}", c.taskPage))

	mux.Handle("GET /ui/fragments/environments", c.uiAPI("GET /api/agents", c.environmentsFragment))
	mux.Handle("GET /ui/fragments/machines/{name}", c.uiAPI("GET /api/agents/{name}", c.machineFragment))
	mux.Handle("GET /ui/fragments/machines/{name}/work", c.uiAPI("GET /api/agents/{name}", c.machineWorkFragment))
	mux.Handle("GET /ui/fragments/tasks", c.uiAPI("GET /api/tasks", c.tasksFragment))
	mux.Handle("GET /ui/fragments/tasks/{id}", c.uiAPI("GET /api/tasks/{id}", c.taskFragment))
	// The browser reads the API's own answers through its session.
	mux.Handle("GET /ui/api/tasks/{id}", c.uiAPI("GET /api/tasks/{id}", func(w http.ResponseWriter, r *http.Request, _ sessionInfo) { c.api.ServeTask(w, r) }))
	mux.Handle("GET /ui/api/tasks/{id}/log", c.uiAPI("GET /api/tasks/{id}/log", func(w http.ResponseWriter, r *http.Request, _ sessionInfo) { c.api.ServeTaskLog(w, r) }))
	mux.Handle("GET /ui/api/tasks/{id}/artifacts/{name}", c.uiAPI("GET /api/tasks/{id}/artifacts/{name}", c.taskArtifact))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no console endpoint %s %s", r.Method, r.URL.Path))
	})

	mux.Handle("POST /actions/calamari/update", c.action("POST /api/calamari/update", c.updateCalamari))
	mux.Handle("POST /actions/upgrade", c.action("POST /api/rollouts", c.upgrade))
	mux.Handle("POST /actions/agents/{name}/health-check", c.action("POST /api/agents/{name}/health-check", c.checkHealth))
	mux.Handle("POST /actions/agents/{name}/diagnostics", c.action("POST /api/agents/{name}/diagnostics", c.agentDiagnostics))
	mux.Handle("POST /actions/agents/{name}/delete", c.action("DELETE /api/agents/{name}", c.deleteAgent))
	mux.Handle("POST /actions/tasks/{id}/cancel", c.action("POST /api/tasks/{id}/cancel", c.cancelTask))
	c.registerConfiguration(mux)
	c.registerRollouts(mux)
	c.registerListening(mux)
	c.registerScript(mux)

	mux.HandleFunc("/", c.notFound)
}

// session returns the request's live session: the cookie names one and
// the API key it was opened with is still valid. A session whose key was
// revoked ends here.
func (c *Console) session(r *http.Request) (sessionInfo, error) {
	ck, err := r.Cookie(CookieName)
	if err != nil {
		return sessionInfo{}, errNoSession
	}
	si, ok := c.sessions.get(ck.Value)
	if !ok {
		return sessionInfo{}, errNoSession
	}
	if si.userID != "" {
		// A deleted user's sessions end here.
		u, err := c.access.User(r.Context(), si.userID)
		if errors.Is(err, kind.ErrNotFound) {
			c.sessions.delete(si.id)
			return sessionInfo{}, errNoSession
		}
		if err != nil {
			return sessionInfo{}, fmt.Errorf("check console session's user: %w", err)
		}
		si.name, si.caller = u.Name, httpapi.UserCaller(u)
		return si, nil
	}
	k, err := c.access.APIKeyByHash(r.Context(), si.keyHash)
	if err != nil {
		if errors.Is(err, kind.ErrNotFound) {
			c.sessions.delete(si.id)
			return sessionInfo{}, errNoSession
		}
		return sessionInfo{}, fmt.Errorf("check console session's API key: %w", err)
	}
	si.name, si.caller = "API key "+k.Name, httpapi.KeyCaller(k)
	return si, nil
}

// consoleCan tells the templates which API routes the signed-in caller
// may use, so that a page shows only the buttons that would work; the
// actions check again (Console.action) whatever the page showed.
type consoleCan struct{ caller httpapi.Caller }

func canOf(si sessionInfo) consoleCan { return consoleCan{caller: si.caller} }

// Do reports whether the caller's role may call route ("POST
// /api/rollouts").
func (c consoleCan) Do(route string) bool { return httpapi.Permit(c.caller, route) == nil }

// Role is the caller's role.
func (c consoleCan) Role() string { return string(c.caller.Role) }

type consoleHandler func(w http.ResponseWriter, r *http.Request, si sessionInfo)

// Every page, fragment and action names the API route it reads or
// performs ("GET /api/agents"), and is refused (403) to a session whose
// role may not call it: the console allows exactly what the API would.
// allSignedIn is for what any signed-in session may do (signing out).
const allSignedIn = ""

// permit checks the session's role against route; the request's context
// then carries the session's caller, for the API's handlers the console
// calls and for its scope.
func (c *Console) permit(r *http.Request, si sessionInfo, route string) (*http.Request, error) {
	if route != allSignedIn {
		if err := httpapi.Permit(si.caller, route); err != nil {
			return r, err
		}
	}
	return r.WithContext(httpapi.WithCaller(r.Context(), si.caller)), nil
}

// scope is what the session's caller sees of agents and tasks: a
// deployer's environments only.
func (c *Console) scope(si sessionInfo) httpapi.Scope { return c.api.Scope(si.caller) }

// page serves a page to a signed-in browser and sends anyone else to sign
// in, coming back here afterwards.
func (c *Console) page(route string, h consoleHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		si, err := c.session(r)
		if errors.Is(err, errNoSession) {
			http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if err != nil {
			c.serverError(w, r, nil, err)
			return
		}
		r, err = c.permit(r, si, route)
		if err != nil {
			c.forbidden(w, r, &si, err.Error()+".")
			return
		}
		h(w, r, si)
	})
}

// uiAPI serves what the pages' scripts fetch; without a session it
// answers 401 JSON, which the script turns into a visit to sign in.
func (c *Console) uiAPI(route string, h consoleHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		si, err := c.session(r)
		if errors.Is(err, errNoSession) {
			httpapi.WriteError(w, http.StatusUnauthorized, "not signed in to the console; sign in at /signin")
			return
		}
		if err != nil {
			httpapi.InternalError(w, c.log, err)
			return
		}
		r, err = c.permit(r, si, route)
		if err != nil {
			httpapi.Fail(w, c.log, err)
			return
		}
		h(w, r, si)
	})
}

// action guards a state change from a form: same-origin, signed in, with
// the session's CSRF token (form field "csrf" or the X-CSRF-Token
// header), by a role that may call route. A refusal changes nothing.
func (c *Console) action(route string, h consoleHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, httpapi.MaxRequestBody)
		if err := c.cop.Check(r); err != nil {
			c.forbidden(w, r, nil, "This request came from another site; it was refused and nothing changed.")
			return
		}
		si, err := c.session(r)
		if errors.Is(err, errNoSession) {
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		}
		if err != nil {
			c.serverError(w, r, nil, err)
			return
		}
		if err := r.ParseForm(); err != nil {
			c.renderError(w, r, &si, http.StatusBadRequest, "Bad request", "The form could not be read: "+err.Error())
			return
		}
		token := r.PostForm.Get("csrf")
		if token == "" {
			token = r.Header.Get(CSRFHeader)
		}
		if !validCSRF(si.csrf, token) {
			c.forbidden(w, r, &si, "The form's security token is missing or wrong (it may be from an earlier sign-in); nothing changed. Reload the page and try again.")
			return
		}
		r, err = c.permit(r, si, route)
		if err != nil {
			c.forbidden(w, r, &si, err.Error()+"; nothing changed.")
			return
		}
		h(w, r, si)
	})
}

// pageData is what the layout renders around every page.
type pageData struct {
	Nav         string
	Signed      bool
	CSRF        string
	Who         string // who is signed in, for the header
	Can         consoleCan
	Flashes     []consoleFlash
	Updates     api.UpdatesView
	Maintenance api.MaintenanceView
	Version     string
	Body        any
}

// render writes a full page. si is nil for a visitor who is not signed in;
// a signed-in page takes the session's pending messages.
func (c *Console) render(w http.ResponseWriter, r *http.Request, si *sessionInfo, status int, page, nav string, body any) {
	set, ok := c.tpl.Pages[page]
	if !ok {
		c.log.Error("console page missing", zap.String("page", page))
		http.Error(w, "internal error; see the coordinator's log", http.StatusInternalServerError)
		return
	}
	d := pageData{Nav: nav, Version: c.version, Body: body}
	if si != nil {
		d.Signed, d.CSRF, d.Who, d.Can = true, si.csrf, si.name, canOf(*si)
		d.Flashes = c.sessions.takeFlashes(si.id)
		d.Updates = c.co.Updates()
		m, err := c.co.Maintenance(r.Context())
		if err != nil {
			// The page is still worth showing without the banner.
			c.log.Warn("console: read maintenance state failed", zap.Error(err))
		}
		d.Maintenance = m
	}
	var buf bytes.Buffer
	if err := set.ExecuteTemplate(&buf, ui.Layout, d); err != nil {
		c.log.Error("console: render page failed", zap.String("page", page), zap.Error(err))
		http.Error(w, "internal error; see the coordinator's log", http.StatusInternalServerError)
		return
	}
	c.writeHTML(w, status, buf.Bytes())
}

// renderFragment writes one shared template alone, for a page's script
// to put in place.
func (c *Console) renderFragment(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := c.tpl.Partials.ExecuteTemplate(&buf, name, data); err != nil {
		httpapi.InternalError(w, c.log, fmt.Errorf("render console fragment %s: %w", name, err))
		return
	}
	c.writeHTML(w, http.StatusOK, buf.Bytes())
}

func (c *Console) writeHTML(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(body)
}

// errorBody is the body of the error page.
type errorBody struct {
	Title   string
	Message string
}

func (c *Console) renderError(w http.ResponseWriter, r *http.Request, si *sessionInfo, status int, title, msg string) {
	c.render(w, r, si, status, "error", "", errorBody{Title: title, Message: msg})
}

func (c *Console) forbidden(w http.ResponseWriter, r *http.Request, si *sessionInfo, msg string) {
	c.renderError(w, r, si, http.StatusForbidden, "Refused", msg)
}

func (c *Console) serverError(w http.ResponseWriter, r *http.Request, si *sessionInfo, err error) {
	c.log.Error("console request failed", zap.String("path", r.URL.Path), zap.Error(err))
	c.renderError(w, r, si, http.StatusInternalServerError, "Internal error", "Something went wrong on the coordinator; its log has the details.")
}

func (c *Console) notFound(w http.ResponseWriter, r *http.Request) {
	var si *sessionInfo
	if s, err := c.session(r); err == nil {
		si = &s
	}
	c.renderError(w, r, si, http.StatusNotFound, "Not found", "There is no page at "+r.URL.Path+".")
}

// signinBody is the body of the sign-in page.
type signinBody struct {
	Next  string
	User  string // the name tried, kept in the form after a refusal
	Error string
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	next := safeLocal(r.URL.Query().Get("next"))
	if _, err := c.session(r); err == nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	c.render(w, r, nil, http.StatusOK, "signin", "", signinBody{Next: next})
}

func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, httpapi.MaxRequestBody)
	if err := c.cop.Check(r); err != nil {
		c.forbidden(w, r, nil, "This sign-in came from another site; it was refused.")
		return
	}
	if err := r.ParseForm(); err != nil {
		c.render(w, r, nil, http.StatusBadRequest, "signin", "", signinBody{Next: "/", Error: "The form could not be read: " + err.Error()})
		return
	}
	next := safeLocal(r.PostForm.Get("next"))
	start, status, msg, err := c.authenticate(w, r)
	if err != nil {
		c.serverError(w, r, nil, fmt.Errorf("console sign-in: %w", err))
		return
	}
	if msg != "" {
		c.render(w, r, nil, status, "signin", "", signinBody{Next: next, User: r.PostForm.Get("user"), Error: msg})
		return
	}
	// A fresh id at every sign-in: a session id planted before sign-in
	// never becomes a signed-in one.
	if old, err := r.Cookie(CookieName); err == nil {
		c.sessions.delete(old.Value)
	}
	id, who := start()
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: id, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	c.log.Info("console sign-in", zap.String("remote", r.RemoteAddr), zap.String("as", who))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	c.sessions.delete(si.id)
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// safeLocal returns p if it is a path on this site, else "/": a sign-in
// link must not be able to send the browser elsewhere afterwards.
func safeLocal(p string) string {
	if p == "" || p[0] != '/' || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\\r\n\t") {
		return "/"
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "/"
	}
	return p
}

// Health states. A machine's colour is its health and nothing else: an upgrade it needs or an old Calamari is shown
// beside the health, never instead of it, so that a machine recommended
// an upgrade still says whether it is healthy.
var (
	stateUnavailable = machineState{"unavailable", "unavailable"}
	stateUnhealthy   = machineState{"unhealthy", "unhealthy"}
	stateWarning     = machineState{"warning", "warning"}
	stateHealthy     = machineState{"healthy", "healthy"}
)

// Upgrade badges, shown after the health.
var (
	stateUpgradeRequired    = machineState{"upgrade-required", "upgrade required"}
	stateUpgradeRecommended = machineState{"upgrade-recommended", "upgrade recommended"}
)

// machineState is a state as the console shows it: Key is the CSS class
// suffix and data-state value, Label the words.
type machineState struct {
	Key   string
	Label string
}

// Calamari states of a machine or an environment, calamariState.Key.
const (
	calamariCurrent  = "current"
	calamariOutdated = "outdated"
	// calamariNoBundle: nothing was uploaded, so there is nothing to be
	// current with.
	calamariNoBundle = "no-bundle"
)

// calamariState says in words whether machines have the latest Calamari
// and, when they do not, why.
type calamariState struct {
	Key  string
	Text string
}

// consoleMachine is an agent with its console state.
type consoleMachine struct {
	api.AgentView
	// State is the machine's health, which alone gives its colour.
	State machineState
	// Badges are shown beside the health: the upgrade it needs, if any.
	Badges []machineState
	// Calamari is whether it has the latest Calamari, in words.
	Calamari calamariState
	// CalamariVersions are all verified versions; only the machine page
	// fills it.
	CalamariVersions []string
}

// classify is an agent as the console shows it; latest is the newest
// uploaded Calamari, "" if none.
func classify(v api.AgentView, latest string) consoleMachine {
	m := consoleMachine{AgentView: v, State: stateHealthy, Calamari: machineCalamari(v, latest)}
	switch {
	case !v.Connected:
		m.State = stateUnavailable
	case v.Health == api.HealthUnhealthy:
		m.State = stateUnhealthy
	case v.Health == api.HealthWarning:
		m.State = stateWarning
	}
	switch v.Upgrade {
	case api.UpgradeRequired:
		m.Badges = append(m.Badges, stateUpgradeRequired)
	case api.UpgradeRecommended:
		m.Badges = append(m.Badges, stateUpgradeRecommended)
	}
	return m
}

// machineCalamari says whether the agent has the latest Calamari, naming
// what it has and what is missing when it does not.
func machineCalamari(v api.AgentView, latest string) calamariState {
	switch {
	case latest == "":
		return calamariState{calamariNoBundle, "no Calamari uploaded yet"}
	case v.CalamariCurrent:
		return calamariState{calamariCurrent, "Calamari current (" + latest + ")"}
	case v.CalamariVersion == "":
		return calamariState{calamariOutdated, "Calamari out of date: it has none; the latest is " + latest}
	}
	return calamariState{calamariOutdated, fmt.Sprintf("Calamari out of date: it has %s; the latest is %s", v.CalamariVersion, latest)}
}

// environmentCalamari sums up an environment's machines in words.
func environmentCalamari(c fleetCounts, machines int, latest string) calamariState {
	switch {
	case latest == "":
		return calamariState{calamariNoBundle, "no Calamari uploaded yet"}
	case c.CalamariOutdated == 0:
		if machines == 1 {
			return calamariState{calamariCurrent, "Calamari current (" + latest + ")"}
		}
		return calamariState{calamariCurrent, fmt.Sprintf("Calamari current on all %d machines (%s)", machines, latest)}
	}
	return calamariState{calamariOutdated, fmt.Sprintf("Calamari out of date on %d of %d %s: the latest, %s, is missing",
		c.CalamariOutdated, machines, plural(machines, "machine", "machines"), latest)}
}

// noAgentPackage is why the Upgrade buttons are disabled before any agent
// package was uploaded: there is nothing to upgrade to.
const noAgentPackage = "No agent package has been uploaded, so there is nothing to upgrade to: upload one with " +
	"tendril-server agent-package push --version V --os OS --arch ARCH FILE."

// upgradeBlocked is why the Upgrade button of a machine on goos/goarch is
// disabled, "" when it may be pressed. pkgs are the stored agent
// packages.
func upgradeBlocked(pkgs []api.AgentPackageView, goos, goarch string) string {
	if len(pkgs) == 0 {
		return noAgentPackage
	}
	if goos == "" || goarch == "" {
		// The platform is learnt at the first connection: the rollout
		// judges it then.
		return ""
	}
	for _, p := range pkgs {
		if p.OS == goos && p.Arch == goarch {
			return ""
		}
	}
	return fmt.Sprintf("No agent package for %s/%s has been uploaded: upload one with "+
		"tendril-server agent-package push --version V --os %s --arch %s FILE.", goos, goarch, goos, goarch)
}

// fleetCounts are the numbers at the top of the environments page.
type fleetCounts struct {
	Healthy, Warning, Unhealthy, Unavailable              int
	CalamariOutdated, UpgradeRecommended, UpgradeRequired int
}

// NeedsUpgrade reports whether any counted agent should be upgraded.
func (f fleetCounts) NeedsUpgrade() bool { return f.UpgradeRecommended+f.UpgradeRequired > 0 }

func (f *fleetCounts) add(v api.AgentView) {
	switch v.Health {
	case api.HealthHealthy:
		f.Healthy++
	case api.HealthWarning:
		f.Warning++
	case api.HealthUnhealthy:
		f.Unhealthy++
	default:
		f.Unavailable++
	}
	if !v.CalamariCurrent {
		f.CalamariOutdated++
	}
	switch v.Upgrade {
	case api.UpgradeRecommended:
		f.UpgradeRecommended++
	case api.UpgradeRequired:
		f.UpgradeRequired++
	}
}

// consoleEnvironment is one environment with its machines.
type consoleEnvironment struct {
	Name     string
	Machines []consoleMachine
	Counts   fleetCounts
	// Calamari sums up its machines' Calamari in words.
	Calamari calamariState
}

// consoleHome is the body of the environments page and its fragment.
type consoleHome struct {
	CSRF           string
	Can            consoleCan
	Counts         fleetCounts
	LatestCalamari string
	NewestAgent    string
	// UpgradeBlocked is why the Upgrade buttons are disabled, "" when
	// they are not.
	UpgradeBlocked string
	Environments   []consoleEnvironment
}

func (c *Console) home(ctx context.Context, si sessionInfo) (consoleHome, error) {
	agents, err := c.scope(si).Agents(ctx)
	if err != nil {
		return consoleHome{}, err
	}
	latest, err := c.machines.LatestCalamari(ctx)
	if err != nil {
		return consoleHome{}, fmt.Errorf("console: latest calamari: %w", err)
	}
	pkgs, err := c.rollouts.AgentPackages(ctx)
	if err != nil {
		return consoleHome{}, fmt.Errorf("console: agent packages: %w", err)
	}
	h := consoleHome{CSRF: si.csrf, Can: canOf(si), LatestCalamari: latest, UpgradeBlocked: upgradeBlocked(pkgs, "", "")}
	if len(pkgs) > 0 {
		h.NewestAgent = pkgs[0].Version
	}
	// Environments match case-insensitively everywhere else (targets of
	// updates and rollouts), so they group that way here.
	byKey := map[string]int{}
	for _, v := range agents {
		k := strings.ToLower(v.Environment)
		i, ok := byKey[k]
		if !ok {
			i = len(h.Environments)
			byKey[k] = i
			h.Environments = append(h.Environments, consoleEnvironment{Name: v.Environment})
		}
		e := &h.Environments[i]
		e.Machines = append(e.Machines, classify(v, latest))
		e.Counts.add(v)
		h.Counts.add(v)
	}
	for i := range h.Environments {
		e := &h.Environments[i]
		e.Calamari = environmentCalamari(e.Counts, len(e.Machines), latest)
	}
	slices.SortFunc(h.Environments, func(a, b consoleEnvironment) int {
		return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
	})
	for _, e := range h.Environments {
		slices.SortFunc(e.Machines, func(a, b consoleMachine) int { return strings.Compare(a.Name, b.Name) })
	}
	return h, nil
}

func (c *Console) environmentsPage(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	h, err := c.home(r.Context(), si)
	if err != nil {
		c.serverError(w, r, &si, err)
		return
	}
	c.render(w, r, &si, http.StatusOK, "environments", "environments", h)
}

func (c *Console) environmentsFragment(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	h, err := c.home(r.Context(), si)
	if err != nil {
		httpapi.InternalError(w, c.log, err)
		return
	}
	c.renderFragment(w, "environments-body", h)
}

// consoleMachinePage is the body of a machine's page and its fragment.
type consoleMachinePage struct {
	CSRF           string
	Can            consoleCan
	Machine        consoleMachine
	LatestCalamari string
	// UpgradeBlocked is why the Upgrade button is disabled, "" when it
	// is not.
	UpgradeBlocked string
	Tasks          []api.TaskView
	// Health is the chart of recent health checks.
	Health healthChart
}

func (c *Console) machine(ctx context.Context, si sessionInfo, name string) (consoleMachinePage, error) {
	v, err := c.scope(si).Agent(ctx, name)
	if err != nil {
		return consoleMachinePage{}, err
	}
	versions, err := c.machines.CalamariVersions(ctx, v.ID)
	if err != nil {
		return consoleMachinePage{}, fmt.Errorf("agent %q: %w", name, err)
	}
	latest, err := c.machines.LatestCalamari(ctx)
	if err != nil {
		return consoleMachinePage{}, fmt.Errorf("console: latest calamari: %w", err)
	}
	tasks, err := c.co.Tasks(ctx, api.TaskFilter{Agent: name, Limit: 20})
	if err != nil {
		return consoleMachinePage{}, fmt.Errorf("console: tasks of %q: %w", name, err)
	}
	pkgs, err := c.rollouts.AgentPackages(ctx)
	if err != nil {
		return consoleMachinePage{}, fmt.Errorf("console: agent packages: %w", err)
	}
	m := classify(v, latest)
	m.CalamariVersions = slices.Clone(versions)
	// Newest first, as the agents list shows the newest.
	slices.SortFunc(m.CalamariVersions, func(x, y string) int { return semver.Compare("v"+y, "v"+x) })
	return consoleMachinePage{CSRF: si.csrf, Can: canOf(si), Machine: m, LatestCalamari: latest, UpgradeBlocked: upgradeBlocked(pkgs, v.OS, v.Arch),
		Tasks: tasks, Health: layoutHealthChart(c.machines.HealthHistory(v.ID))}, nil
}

func (c *Console) machinePage(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	name := r.PathValue("name")
	m, err := c.machine(r.Context(), si, name)
	if errors.Is(err, kind.ErrNotFound) {
		c.renderError(w, r, &si, http.StatusNotFound, "No such machine", fmt.Sprintf("There is no agent named %q. It may have been deleted.", name))
		return
	}
	if errors.Is(err, kind.ErrForbidden) {
		c.forbidden(w, r, &si, err.Error()+".")
		return
	}
	if err != nil {
		c.serverError(w, r, &si, err)
		return
	}
	c.render(w, r, &si, http.StatusOK, "machine", "environments", m)
}

func (c *Console) machineFragment(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	m, err := c.machine(r.Context(), si, r.PathValue("name"))
	if err != nil {
		httpapi.Fail(w, c.log, err)
		return
	}
	c.renderFragment(w, "machine-body", m)
}

// consoleTasks is the body of the tasks page.
type consoleTasks struct {
	Agent      string
	RefreshURL string
	Tasks      []api.TaskView
}

func (c *Console) tasks(ctx context.Context, si sessionInfo, agent string) (consoleTasks, error) {
	f := api.TaskFilter{Agent: agent, Limit: 100}
	refresh := "/ui/fragments/tasks"
	if agent != "" {
		refresh += "?agent=" + url.QueryEscape(agent)
	}
	ts, err := c.scope(si).Tasks(ctx, f)
	if err != nil {
		return consoleTasks{}, fmt.Errorf("console: list tasks: %w", err)
	}
	return consoleTasks{Agent: agent, RefreshURL: refresh, Tasks: ts}, nil
}

func (c *Console) tasksPage(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	agent := r.URL.Query().Get("agent")
	t, err := c.tasks(r.Context(), si, agent)
	if errors.Is(err, kind.ErrNotFound) {
		c.renderError(w, r, &si, http.StatusNotFound, "No such machine", fmt.Sprintf("There is no agent named %q.", agent))
		return
	}
	if errors.Is(err, kind.ErrForbidden) {
		c.forbidden(w, r, &si, err.Error()+".")
		return
	}
	if err != nil {
		c.serverError(w, r, &si, err)
		return
	}
	c.render(w, r, &si, http.StatusOK, "tasks", "tasks", t)
}

func (c *Console) tasksFragment(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	t, err := c.tasks(r.Context(), si, r.URL.Query().Get("agent"))
	if err != nil {
		httpapi.Fail(w, c.log, err)
		return
	}
	c.renderFragment(w, "task-table", t.Tasks)
}

// consoleTask is the body of a task's page; the summary fragment uses
// CSRF and Task only.
type consoleTask struct {
	CSRF      string
	Can       consoleCan
	Task      api.TaskView
	Log       []api.LogLineView
	NextSeq   int64
	Truncated bool
	// GroupSize is how many tasks the request that made this one made;
	// the page links to their group view when there are several. Only
	// the page fills it.
	GroupSize int
}

func (c *Console) taskPage(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	ctx := r.Context()
	id := r.PathValue("id")
	t, err := c.scope(si).Task(ctx, id)
	if errors.Is(err, kind.ErrNotFound) {
		c.renderError(w, r, &si, http.StatusNotFound, "No such task", fmt.Sprintf("There is no task %q.", id))
		return
	}
	if errors.Is(err, kind.ErrForbidden) {
		c.forbidden(w, r, &si, err.Error()+".")
		return
	}
	if err != nil {
		c.serverError(w, r, &si, err)
		return
	}
	lines, err := c.co.TaskLog(ctx, id, 1, taskLogPreview)
	if err != nil {
		c.serverError(w, r, &si, fmt.Errorf("console: log of task %s: %w", id, err))
		return
	}
	body := consoleTask{CSRF: si.csrf, Can: canOf(si), Task: t, Log: lines, NextSeq: 1, Truncated: len(lines) == taskLogPreview}
	if len(lines) > 0 {
		body.NextSeq = lines[len(lines)-1].Seq + 1
	}
	if t.Group != "" {
		// Two are enough to know it is a group of several.
		group, err := c.scope(si).Tasks(ctx, api.TaskFilter{Group: t.Group, Limit: 2})
		if err != nil {
			c.serverError(w, r, &si, fmt.Errorf("console: group of task %s: %w", id, err))
			return
		}
		body.GroupSize = len(group)
	}
	c.render(w, r, &si, http.StatusOK, "task", "tasks", body)
}

func (c *Console) taskFragment(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	ctx := r.Context()
	t, err := c.scope(si).Task(ctx, r.PathValue("id"))
	if err != nil {
		httpapi.Fail(w, c.log, err)
		return
	}
	c.renderFragment(w, "task-summary", consoleTask{CSRF: si.csrf, Can: canOf(si), Task: t})
}

// artifactCSP is the policy of an artifact's download. The API already
// sends it as an attachment of a generic type with nosniff; should a
// browser render it anyway, in the console's origin, a sandbox without
// script keeps it from acting as the signed-in operator.
const artifactCSP = "sandbox; default-src 'none'"

// taskArtifact downloads a task's artifact through the session, as the
// API serves it.
func (c *Console) taskArtifact(w http.ResponseWriter, r *http.Request, _ sessionInfo) {
	w.Header().Set("Content-Security-Policy", artifactCSP)
	c.api.ServeTaskArtifact(w, r)
}

// done ends an action: its outcome is kept for the next page, and the
// browser goes back to where the form was (the form's "back" field, if
// it names a page here) or to fallback.
func (c *Console) done(w http.ResponseWriter, r *http.Request, si sessionInfo, fallback string, f consoleFlash) {
	c.sessions.addFlash(si.id, f)
	back := fallback
	if b := r.PostForm.Get("back"); b != "" {
		back = safeLocal(b)
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// failed is the flash for an action's error: a message a person can act
// on for the errors that carry one, else a pointer to the log (where the
// error is logged).
func (c *Console) failed(what string, err error) consoleFlash {
	var ke *kind.Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ke), errors.Is(err, kind.ErrNotFound), errors.Is(err, kind.ErrBadRequest),
		errors.Is(err, kind.ErrConflict), errors.Is(err, kind.ErrNotConnected), errors.Is(err, kind.ErrForbidden):
		return consoleFlash{Kind: "error", Text: what + " failed: " + err.Error()}
	case errors.As(err, &mbe):
		return consoleFlash{Kind: "error", Text: what + " failed: the form is too large"}
	}
	c.log.Error("console action failed", zap.String("action", what), zap.Error(err))
	return consoleFlash{Kind: "error", Text: what + " failed: internal error; see the coordinator's log"}
}

func (c *Console) updateCalamari(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	t := api.UpdateTarget{Agent: r.PostForm.Get("agent"), Environment: r.PostForm.Get("environment")}
	res, err := c.co.UpdateCalamari(r.Context(), t)
	if err != nil {
		c.done(w, r, si, "/", c.failed("Update Calamari", err))
		return
	}
	c.done(w, r, si, "/", updateFlash(t, res))
}

// updateFlash sums up a Calamari update for a person.
func updateFlash(t api.UpdateTarget, res []api.UpdateResult) consoleFlash {
	where := t.Environment
	if t.Agent != "" {
		where = t.Agent
	}
	var installed, current []string
	var failed []string
	version := ""
	for _, r := range res {
		version = r.Version
		switch r.Result {
		case "installed":
			installed = append(installed, r.Agent)
		case "current":
			current = append(current, r.Agent)
		default:
			failed = append(failed, r.Agent+" ("+r.Error+")")
		}
	}
	var parts []string
	if len(installed) > 0 {
		parts = append(parts, "installed on "+strings.Join(installed, ", "))
	}
	if len(current) > 0 {
		parts = append(parts, "already current on "+strings.Join(current, ", "))
	}
	if len(failed) > 0 {
		parts = append(parts, "failed on "+strings.Join(failed, "; "))
	}
	f := consoleFlash{Kind: "ok", Text: fmt.Sprintf("Calamari %s for %s: %s.", version, where, strings.Join(parts, "; "))}
	if len(failed) > 0 {
		f.Kind = "error"
	}
	return f
}

func (c *Console) upgrade(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	req := api.RolloutRequest{Environment: r.PostForm.Get("environment"), All: r.PostForm.Get("all") == "true",
		Agents: r.PostForm["agent"]}
	v, err := c.rollouts.StartRollout(r.Context(), req)
	if err != nil {
		c.done(w, r, si, "/", c.failed("Upgrade agents", err))
		return
	}
	where := "every environment"
	switch {
	case v.TargetAgents != nil:
		where = strings.Join(v.TargetAgents, ", ")
	case !v.All:
		where = v.Environment
	}
	n := v.Counts[api.UpgradeQueued]
	c.done(w, r, si, "/", consoleFlash{Kind: "ok", Text: fmt.Sprintf(
		"Rollout %s started: upgrading %d agent(s) of %s to %s, %d at a time; %d already at that version.",
		v.ID, n, where, v.Version, v.Batch, v.Counts[api.UpgradeSucceeded]),
		Link: "/rollouts/" + url.PathEscape(v.ID), LinkText: "Follow its progress"})
}

func (c *Console) checkHealth(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	name := r.PathValue("name")
	back := "/machines/" + url.PathEscape(name)
	v, err := c.co.CheckAgentHealth(r.Context(), name)
	if err != nil {
		c.done(w, r, si, back, c.failed("Health check", err))
		return
	}
	text := fmt.Sprintf("%s is %s (%.1f ms round trip).", v.Name, v.Health, v.HealthRTTMillis)
	if v.HealthDetail != "" {
		text += " " + v.HealthDetail
	}
	c.done(w, r, si, back, consoleFlash{Kind: "ok", Text: text})
}

func (c *Console) deleteAgent(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	name := r.PathValue("name")
	if err := c.co.DeleteAgent(r.Context(), name); err != nil {
		c.done(w, r, si, "/machines/"+url.PathEscape(name), c.failed("Delete "+name, err))
		return
	}
	// The machine's page is gone: back to the environments, whatever the
	// form said.
	c.sessions.addFlash(si.id, consoleFlash{Kind: "ok", Text: fmt.Sprintf("Deleted %s: its certificate is refused from now on.", name)})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (c *Console) cancelTask(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	id := r.PathValue("id")
	back := "/tasks/" + url.PathEscape(id)
	if _, err := c.scope(si).Task(r.Context(), id); err != nil {
		c.done(w, r, si, back, c.failed("Cancel task", err))
		return
	}
	t, err := c.co.CancelTask(r.Context(), id)
	if err != nil {
		c.done(w, r, si, back, c.failed("Cancel task", err))
		return
	}
	c.done(w, r, si, back, consoleFlash{Kind: "ok", Text: "Cancel sent; the task is " + t.State + "."})
}
