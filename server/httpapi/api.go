// Package httpapi serves the coordinator's HTTP API: the routes under
// /api/, their API-key authorization, the mapping of errors to statuses
// and messages, and the OpenAPI document generated from the api package's
// types.
//
// It holds no state of its own and never touches the store: every route
// calls one of the interfaces below, in the api package's types. The
// coordinator core implements Coordinator, the rollout engine
// (server/rollout) Rollouts and server/access Access; package server wires
// them.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/idempotency"
	"github.com/tendrildeploy/tendril/server/kind"
)

// MaxRequestBody bounds API request bodies, and the console's forms;
// none of today's needs more. Uploads have their own bounds.
const MaxRequestBody = 64 << 10

// Coordinator is what the API asks of the coordinator core: the agents,
// their Calamari and tasks, and the coordinator's own operations. Errors
// carry a kind (package kind) that decides the answer's status; a name or
// id that does not exist is kind.ErrNotFound.
type Coordinator interface {
	// Agents lists every agent with its live state.
	Agents(ctx context.Context) ([]api.AgentView, error)
	// Agent returns one agent by name.
	Agent(ctx context.Context, name string) (api.AgentView, error)
	// AddListeningAgent adds an agent the coordinator dials.
	AddListeningAgent(ctx context.Context, req api.ListeningAgentRequest) (api.AgentView, error)
	// SetAgentAddress moves a listening agent to a new address.
	SetAgentAddress(ctx context.Context, name, address string) (api.AgentView, error)
	// DeleteAgent ends the agent's session and refuses its certificate.
	DeleteAgent(ctx context.Context, name string) error
	// CheckAgentHealth checks a connected agent now.
	CheckAgentHealth(ctx context.Context, name string) (api.AgentView, error)
	// AgentDiagnostics collects an agent's diagnostics archive: the
	// coordinator's side always, the agent's own when it can send it.
	AgentDiagnostics(ctx context.Context, name string) (Download, error)
	// Goroutines dumps the coordinator's goroutines with their stacks.
	Goroutines() ([]byte, error)
	// CreateToken makes a one-time enrollment token and its join string.
	CreateToken(ctx context.Context, environment string, ttl time.Duration, servers []string) (api.TokenResult, error)
	// Info describes the coordinator: version, thumbprints, addresses.
	Info() api.ServerInfo
	// RotateCertificate replaces the coordinator's certificate.
	// With force it rotates even when agents would be locked out.
	RotateCertificate(ctx context.Context, force bool) (api.RotationResult, error)

	// UploadCalamari stores, checks and signs a bundle.
	UploadCalamari(ctx context.Context, r io.Reader) (api.BundleView, error)
	// CalamariBundles lists the stored bundles, newest first.
	CalamariBundles(ctx context.Context) ([]api.BundleView, error)
	// UpdateCalamari pushes the latest bundle to the targeted agents.
	UpdateCalamari(ctx context.Context, t api.UpdateTarget) ([]api.UpdateResult, error)
	// Export writes every agent package and Calamari bundle as an export
	// file (package server/airgap).
	Export(ctx context.Context, w io.Writer) error
	// Import checks an export file and stores its items.
	Import(ctx context.Context, r io.Reader, opts api.ImportOptions) (api.ImportResult, error)
	// StoreFile stores a file for tasks to send, by its SHA-256.
	StoreFile(ctx context.Context, r io.Reader) (api.FileView, error)

	// CreateTasks starts Calamari on each agent a request targets.
	CreateTasks(ctx context.Context, req api.TaskRequest) ([]api.TaskView, error)
	// Tasks lists tasks, newest first.
	Tasks(ctx context.Context, f api.TaskFilter) ([]api.TaskView, error)
	// Task returns one task.
	Task(ctx context.Context, id string) (api.TaskView, error)
	// CancelTask stops a task.
	CancelTask(ctx context.Context, id string) (api.TaskView, error)
	// TaskArtifact is a file a task attached, as a download.
	TaskArtifact(ctx context.Context, id, name string) (Download, error)
	// TaskLog returns up to limit lines from line from on.
	TaskLog(ctx context.Context, id string, from int64, limit int) ([]api.LogLineView, error)
	// TaskChanged returns a channel closed at the task's next change.
	TaskChanged(id string) <-chan struct{}
	// ForgetTask drops the signals of a finished task read to its end.
	ForgetTask(id string)

	// Maintenance returns maintenance mode and what still runs.
	Maintenance(ctx context.Context) (api.MaintenanceView, error)
	// SetMaintenance turns maintenance mode on or off.
	SetMaintenance(ctx context.Context, on bool) (api.MaintenanceView, error)
	// Policy returns the machine policy.
	Policy(ctx context.Context) (api.PolicyView, error)
	// SetPolicy changes the machine policy's given fields.
	SetPolicy(ctx context.Context, req api.PolicyRequest) (api.PolicyView, error)
	// TakeSnapshot copies the database into the data folder for a
	// backup.
	TakeSnapshot(ctx context.Context) (api.Snapshot, error)
	// Updates says whether a newer coordinator is out.
	Updates() api.UpdatesView
	// Nodes lists the coordinator nodes sharing the database.
	Nodes(ctx context.Context) ([]api.NodeView, error)
	// SetNodeDraining drains or undrains a node.
	SetNodeDraining(ctx context.Context, name string, draining bool) (api.NodeView, error)
}

// Rollouts is what the API asks of the agent upgrade engine.
type Rollouts interface {
	// UploadAgentPackage stores and signs an agent binary for a platform.
	UploadAgentPackage(ctx context.Context, version, goos, goarch string, r io.Reader) (api.AgentPackageView, error)
	// AgentPackages lists the stored agent packages.
	AgentPackages(ctx context.Context) ([]api.AgentPackageView, error)
	// StartRollout validates a request and starts upgrading its agents.
	StartRollout(ctx context.Context, req api.RolloutRequest) (api.RolloutView, error)
	// Rollouts lists rollouts, newest first.
	Rollouts(ctx context.Context) ([]api.RolloutView, error)
	// Rollout returns one rollout with its agents.
	Rollout(ctx context.Context, id string) (api.RolloutView, error)
	// HaltRollout keeps a running rollout from starting its next batch.
	HaltRollout(ctx context.Context, id string) (api.RolloutView, error)
	// ResumeRollout lets a halted rollout go on.
	ResumeRollout(ctx context.Context, id string) (api.RolloutView, error)
}

// Access is who may act: API keys, console users and enrollment tokens.
type Access interface {
	// CheckAPIKey returns the valid key that key is, or an error
	// wrapping kind.ErrNotFound.
	CheckAPIKey(ctx context.Context, key string) (api.APIKeyView, error)
	// Users lists the console users.
	Users(ctx context.Context) ([]api.UserView, error)
	// CreateUser adds a console user with a password and a role.
	CreateUser(ctx context.Context, name, password string, role api.Role, environments []string) (api.UserView, error)
	// DeleteUser removes a console user.
	DeleteUser(ctx context.Context, name string) error
	// APIKeys lists the API keys, never the keys themselves.
	APIKeys(ctx context.Context) ([]api.APIKeyView, error)
	// CreateAPIKey makes an API key with a role, shown only in the
	// answer.
	CreateAPIKey(ctx context.Context, name string, role api.Role, environments []string) (api.NewAPIKey, error)
	// RevokeAPIKey revokes an API key.
	RevokeAPIKey(ctx context.Context, id string) (api.APIKeyView, error)
	// Tokens lists the enrollment tokens, never their secrets.
	Tokens(ctx context.Context) ([]api.TokenView, error)
	// RevokeToken removes an enrollment token.
	RevokeToken(ctx context.Context, id string) error
}

// Config configures the API. Every field but Logger is required.
type Config struct {
	Coordinator Coordinator
	Rollouts    Rollouts
	Access      Access
	// Version is the coordinator's, shown in the OpenAPI document.
	Version string
	// Idempotency keeps the Idempotency-Key of create requests; nil
	// ignores the header.
	Idempotency *idempotency.Keeper
	// DiskFree returns the bytes free in the coordinator's data folder,
	// -1 if unknown: an upload longer than that is refused before it is
	// received, and a write the folder had no room for is answered with
	// it. nil: unknown.
	DiskFree func() int64
	// Logger receives internal errors and the changes the API makes.
	Logger *zap.Logger
}

// API is the HTTP API's handlers over its Config.
type API struct {
	co       Coordinator
	rollouts Rollouts
	access   Access
	version  string
	idem     *idempotency.Keeper
	diskFree func() int64
	log      *zap.Logger
	// requests validates every request against the OpenAPI document.
	requests *requestValidator
}

// New returns the API over cfg. It panics if the OpenAPI document,
// generated from this package's own table and types, cannot validate
// requests: that is a bug every test meets.
func New(cfg Config) *API {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	doc, err := Document(cfg.Version)
	if err != nil {
		panic(err)
	}
	v, err := newRequestValidator(doc, false)
	if err != nil {
		panic(err)
	}
	diskFree := cfg.DiskFree
	if diskFree == nil {
		diskFree = func() int64 { return -1 }
	}
	return &API{co: cfg.Coordinator, rollouts: cfg.Rollouts, access: cfg.Access, version: cfg.Version, idem: cfg.Idempotency, diskFree: diskFree, log: log, requests: v}
}

// Register adds /healthz and every /api route to mux, with a catch-all
// that answers unknown /api paths with a JSON 404.
func (h *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /api/openapi.json", h.apiOpenAPI) // documentation: no key needed
	// Each route is authorized by its pattern (the roles of its row in
	// Routes, which the OpenAPI document declares), then validated
	// against the document's operation for it, then, for a create, run
	// under its Idempotency-Key.
	routes := routeTable()
	route := func(pattern string, f func(w http.ResponseWriter, r *http.Request)) {
		var next http.Handler = http.HandlerFunc(f)
		if rt := routes[pattern]; rt.Idempotent {
			next = h.idempotent(rt, next)
		}
		mux.Handle(pattern, h.authorize(pattern, MaxRequestBody, h.validate(pattern, next)))
	}
	upload := func(pattern string, limit int64, f func(w http.ResponseWriter, r *http.Request)) {
		mux.Handle(pattern, h.authorize(pattern, limit, h.validate(pattern, h.roomFor(http.HandlerFunc(f)))))
	}
	route("GET /api/agents", h.apiAgents)
	route("POST /api/agents", h.apiAddListeningAgent)
	route("GET /api/agents/{name}", h.apiAgent)
	route("PUT /api/agents/{name}/address", h.apiSetAgentAddress)
	route("DELETE /api/agents/{name}", h.apiDeleteAgent)
	route("POST /api/tokens", h.apiCreateToken)
	route("GET /api/tokens", h.apiTokens)
	route("DELETE /api/tokens/{id}", h.apiRevokeToken)
	route("GET /api/users", h.apiUsers)
	route("POST /api/users", h.apiCreateUser)
	route("DELETE /api/users/{name}", h.apiDeleteUser)
	route("GET /api/api-keys", h.apiAPIKeys)
	route("POST /api/api-keys", h.apiCreateAPIKey)
	route("POST /api/api-keys/{id}/revoke", h.apiRevokeAPIKey)
	route("GET /api/server", func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, http.StatusOK, h.co.Info()) })
	route("POST /api/certificate/rotate", h.apiRotate)
	upload("POST /api/calamari", api.MaxBundleSize, h.apiUploadCalamari)
	route("GET /api/calamari", h.apiCalamari)
	route("POST /api/calamari/update", h.apiUpdateCalamari)
	route("GET /api/export", h.apiExport)
	upload("POST /api/import", api.MaxExportSize, h.apiImport)
	upload("POST /api/files", api.MaxBundleSize, h.apiUploadFile)
	upload("POST /api/agent-packages", api.MaxAgentPackageSize, h.apiUploadAgentPackage)
	route("GET /api/agent-packages", h.apiAgentPackages)
	route("POST /api/rollouts", h.apiStartRollout)
	route("GET /api/rollouts", h.apiRollouts)
	route("GET /api/rollouts/{id}", h.apiRollout)
	route("POST /api/rollouts/{id}/halt", h.apiHaltRollout)
	route("POST /api/rollouts/{id}/resume", h.apiResumeRollout)
	route("POST /api/tasks", h.apiCreateTasks)
	route("GET /api/tasks", h.apiTasks)
	route("GET /api/tasks/{id}", h.apiTask)
	route("GET /api/tasks/{id}/log", h.apiTaskLog)
	route("POST /api/tasks/{id}/cancel", h.apiCancelTask)
	route("GET /api/tasks/{id}/artifacts/{name}", h.apiTaskArtifact)
	route("GET /api/maintenance", h.apiMaintenance)
	route("PUT /api/maintenance", h.apiSetMaintenance)
	route("GET /api/policy", h.apiPolicy)
	route("PUT /api/policy", h.apiSetPolicy)
	route("POST /api/backup/snapshot", h.apiBackupSnapshot)
	route("GET /api/updates", h.apiUpdates)
	route("GET /api/nodes", h.apiNodes)
	route("POST /api/nodes/{name}/drain", h.apiDrainNode)
	route("POST /api/nodes/{name}/undrain", h.apiUndrainNode)
	route("POST /api/agents/{name}/health-check", h.apiCheckAgentHealth)
	route("POST /api/agents/{name}/diagnostics", h.apiAgentDiagnostics)
	route("GET /api/server/goroutines", h.apiGoroutines)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		// The catch-all hides the mux's own 405: a path that exists with
		// other methods says which.
		if allow := allowed(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s is not allowed; this endpoint takes %s", r.Method, r.URL.Path, strings.Join(allow, ", ")))
			return
		}
		WriteError(w, http.StatusNotFound, fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path))
	})
}

// allowed lists the methods mux routes r's path with to a handler of its
// own (not the /api/ catch-all).
func allowed(mux *http.ServeMux, r *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/api/" {
			out = append(out, m)
		}
	}
	return out
}

// authorize requires a valid API key as a bearer token whose role may
// call route (Permit), and bounds the request body. The role is checked
// before the body is read: a refused upload is not received.
func (h *API) authorize(route string, maxBody int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || key == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tendril"`)
			WriteError(w, http.StatusUnauthorized, "an API key is required: send \"Authorization: Bearer <key>\" (the admin key is in the data folder's admin.key)")
			return
		}
		k, err := h.access.CheckAPIKey(r.Context(), key)
		if err != nil {
			switch {
			case errors.Is(err, kind.ErrNotFound):
				WriteError(w, http.StatusUnauthorized, "the API key is not valid")
			case errors.Is(err, kind.ErrUnavailable):
				// Keys are in the database: no request can be
				// authorized until it is back.
				unavailable(w, h.log, err)
			default:
				h.log.Error("check API key failed", zap.Error(err))
				WriteError(w, http.StatusInternalServerError, "could not check the API key")
			}
			return
		}
		caller := KeyCaller(k)
		if err := Permit(caller, route); err != nil {
			WriteError(w, http.StatusForbidden, err.Error())
			return
		}
		if r.ContentLength > maxBody {
			// Said before the body is sent, not after gigabytes of it.
			WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", maxBody))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		next.ServeHTTP(w, r.WithContext(WithCaller(r.Context(), caller)))
	})
}

// validate refuses a request that does not match the OpenAPI document's
// operation for route, with 400, 413 or 415 and a message naming the
// parameter or field and its rule; handlers see only valid requests.
func (h *API) validate(route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status, msg := h.requests.refuse(r, route); status != 0 {
			if status == http.StatusInternalServerError {
				h.log.Error("no OpenAPI operation for route", zap.String("route", route))
			}
			WriteError(w, status, msg)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (h *API) apiAgents(w http.ResponseWriter, r *http.Request) {
	agents, err := h.Scope(requestCaller(r.Context())).Agents(r.Context())
	if err != nil {
		h.internalError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, agents)
}

func (h *API) apiAgent(w http.ResponseWriter, r *http.Request) {
	a, err := h.Scope(requestCaller(r.Context())).Agent(r.Context(), r.PathValue("name"))
	if h.agentError(w, r, err) {
		return
	}
	WriteJSON(w, http.StatusOK, a)
}

// apiAddListeningAgent is POST /api/agents: an agent the coordinator
// dials, added by its address and the thumbprint read on its machine
// (polling agents enroll themselves with a token instead).
func (h *API) apiAddListeningAgent(w http.ResponseWriter, r *http.Request) {
	var req api.ListeningAgentRequest
	if !decodeBody(w, r, &req) {
		return
	}
	v, err := h.co.AddListeningAgent(r.Context(), req)
	h.respond(w, http.StatusCreated, v, err)
}

// apiSetAgentAddress is PUT /api/agents/{name}/address: a listening agent
// moved (a new IP, a new NAT port), without enrolling it again.
func (h *API) apiSetAgentAddress(w http.ResponseWriter, r *http.Request) {
	var req api.AgentAddressRequest
	if !decodeBody(w, r, &req) {
		return
	}
	v, err := h.co.SetAgentAddress(r.Context(), r.PathValue("name"), req.Address)
	if h.agentError(w, r, err) {
		return
	}
	WriteJSON(w, http.StatusOK, v)
}

func (h *API) apiDeleteAgent(w http.ResponseWriter, r *http.Request) {
	if h.agentError(w, r, h.co.DeleteAgent(r.Context(), r.PathValue("name"))) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// agentError answers a failed call about the agent named in the path and
// reports whether there was an error. Not found names the agent; other
// kinds (a bad address, a polling agent) answer as their kind says.
func (h *API) agentError(w http.ResponseWriter, r *http.Request, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, kind.ErrNotFound):
		WriteError(w, http.StatusNotFound, fmt.Sprintf("no agent named %q", r.PathValue("name")))
	default:
		h.apiError(w, err)
	}
	return true
}

func (h *API) apiCreateToken(w http.ResponseWriter, r *http.Request) {
	var req api.TokenRequest
	if !decodeBody(w, r, &req) {
		return
	}
	ttl := api.DefaultTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			WriteError(w, http.StatusBadRequest, fmt.Sprintf("ttl %q: not a duration such as 24h or 30m", req.TTL))
			return
		}
		ttl = d
	}
	res, err := h.co.CreateToken(r.Context(), req.Environment, ttl, req.Servers)
	switch {
	case errors.Is(err, kind.ErrUnavailable), kind.IsNoSpace(err):
		h.apiError(w, err) // not the request's fault
		return
	case err != nil:
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	h.log.Info("enrollment token created", zap.String("environment", res.Environment), zap.Time("expires", res.ExpiresAt))
	WriteJSON(w, http.StatusCreated, res)
}

func (h *API) apiRotate(w http.ResponseWriter, r *http.Request) {
	force := false
	if v := r.URL.Query().Get("force"); v != "" {
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			h.apiError(w, kind.Errorf(kind.ErrBadRequest, "force must be true or false, got %q", v))
			return
		}
	}
	// The rotation must finish even if the client goes away mid-way.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Minute)
	defer cancel()
	res, err := h.co.RotateCertificate(ctx, force)
	h.respond(w, http.StatusOK, res, err)
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
			return false
		}
		WriteError(w, http.StatusBadRequest, bodyErrorMessage(err))
		return false
	}
	return true
}

func (h *API) internalError(w http.ResponseWriter, err error) {
	InternalError(w, h.log, h.noSpace(err, 0))
}

// InternalError logs err to log and answers 500 without its text, which
// is for the operator's log, not for whoever sent the request. Two
// failures that are no fault of the coordinator's are answered as what
// they are: a full data folder (507) and an unreachable database (503).
func InternalError(w http.ResponseWriter, log *zap.Logger, err error) {
	switch {
	case kind.IsNoSpace(err):
		noSpace(w, log, err)
	case errors.Is(err, kind.ErrUnavailable):
		unavailable(w, log, err)
	default:
		log.Error("API request failed", zap.Error(err))
		WriteError(w, http.StatusInternalServerError, "internal error; see the coordinator's log")
	}
}

// UnavailableRetry is the Retry-After of a request refused because the
// database is unreachable: a guess, as the outage's length is unknown,
// short enough that a client sees the database's return soon.
const UnavailableRetry = 5 * time.Second

// unavailable answers 503 to a request that needs the database while it
// is unreachable. The cause is logged at debug level only: during an
// outage every request fails alike, and the heartbeat has said why once.
func unavailable(w http.ResponseWriter, log *zap.Logger, err error) {
	log.Debug("API request refused: the database is unreachable", zap.Error(err))
	secs := int(UnavailableRetry / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf(
		"the database is unreachable, and this request needs it: try again in %d s (the coordinator's log says why)", secs))
}

// noSpace answers 507 to a write the data folder had no room for, with
// the room there is and the room needed where err (a
// *kind.NoSpaceError) says.
func noSpace(w http.ResponseWriter, log *zap.Logger, err error) {
	var ns *kind.NoSpaceError
	if !errors.As(err, &ns) {
		ns = &kind.NoSpaceError{Free: -1, Err: err}
	}
	fields := []zap.Field{zap.Int64("free_bytes", ns.Free), zap.Int64("needed_bytes", ns.Needed)}
	if ns.Err != nil {
		fields = append(fields, zap.Error(ns.Err))
	}
	log.Warn("API request refused: no space left in the data folder", fields...)
	WriteError(w, http.StatusInsufficientStorage, ns.Error()+"; free space in the data folder, then send it again")
}

// noSpace turns a write the data folder had no room for into a
// *kind.NoSpaceError saying how much room there is now (its partial file
// removed) and how much the write needed: needed, unless err knows
// better. Other errors are returned as they are.
func (h *API) noSpace(err error, needed int64) error {
	if !kind.IsNoSpace(err) {
		return err
	}
	ns := &kind.NoSpaceError{Err: err}
	var have *kind.NoSpaceError
	if errors.As(err, &have) {
		ns.Needed, ns.Err = have.Needed, have.Err
	}
	if ns.Needed <= 0 {
		ns.Needed = max(needed, 0)
	}
	ns.Free = h.diskFree()
	return ns
}

// roomFor refuses an upload whose declared length is more than the data
// folder has free before receiving it: it could only fail once its whole
// body was sent. A shorter upload may still find the folder full (it
// filled meanwhile, or its records need room too), which noSpace answers.
func (h *API) roomFor(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > 0 {
			if free := h.diskFree(); free >= 0 && free < r.ContentLength {
				noSpace(w, h.log, &kind.NoSpaceError{Free: free, Needed: r.ContentLength})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// WriteError answers status with the API's error body.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, api.APIError{Error: msg})
}

// WriteJSON answers status with v as indented JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	writeJSONBody(w, v)
}

func (h *API) apiBackupSnapshot(w http.ResponseWriter, r *http.Request) {
	v, err := h.co.TakeSnapshot(r.Context())
	// The snapshot's size is the coordinator's estimate, in err.
	h.respond(w, http.StatusCreated, v, h.noSpace(err, 0))
}

func (h *API) apiUpdates(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, h.co.Updates())
}

// ServeTask answers GET /api/tasks/{id}; the console serves it under its
// own session, so that both answer alike.
func (h *API) ServeTask(w http.ResponseWriter, r *http.Request) { h.apiTask(w, r) }

// ServeTaskArtifact answers GET /api/tasks/{id}/artifacts/{name}, for
// the console likewise.
func (h *API) ServeTaskArtifact(w http.ResponseWriter, r *http.Request) { h.apiTaskArtifact(w, r) }

// ServeTaskLog answers GET /api/tasks/{id}/log, for the console likewise.
func (h *API) ServeTaskLog(w http.ResponseWriter, r *http.Request) { h.apiTaskLog(w, r) }
