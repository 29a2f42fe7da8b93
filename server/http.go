package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/api"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/server/backup"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// maxRequestBody bounds API request bodies; none of today's needs more.
const maxRequestBody = 64 << 10

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/openapi.json", s.apiOpenAPI) // documentation: no key needed
	route := func(pattern string, h func(w http.ResponseWriter, r *http.Request)) {
		mux.Handle(pattern, s.authorize(maxRequestBody, http.HandlerFunc(h)))
	}
	upload := func(pattern string, limit int64, h func(w http.ResponseWriter, r *http.Request)) {
		mux.Handle(pattern, s.authorize(limit, http.HandlerFunc(h)))
	}
	route("GET /api/agents", s.apiAgents)
	route("GET /api/agents/{name}", s.apiAgent)
	route("DELETE /api/agents/{name}", s.apiDeleteAgent)
	route("POST /api/tokens", s.apiCreateToken)
	route("GET /api/tokens", s.apiTokens)
	route("DELETE /api/tokens/{id}", s.apiRevokeToken)
	route("GET /api/users", s.adminOnly(s.apiUsers))
	route("POST /api/users", s.adminOnly(s.apiCreateUser))
	route("DELETE /api/users/{name}", s.adminOnly(s.apiDeleteUser))
	route("GET /api/api-keys", s.adminOnly(s.apiAPIKeys))
	route("POST /api/api-keys", s.adminOnly(s.apiCreateAPIKey))
	route("POST /api/api-keys/{id}/revoke", s.adminOnly(s.apiRevokeAPIKey))
	route("GET /api/server", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Info()) })
	route("POST /api/certificate/rotate", s.apiRotate)
	upload("POST /api/calamari", api.MaxBundleSize, s.apiUploadCalamari)
	route("GET /api/calamari", s.apiCalamari)
	route("POST /api/calamari/update", s.apiUpdateCalamari)
	upload("POST /api/files", api.MaxBundleSize, s.apiUploadFile)
	upload("POST /api/agent-packages", api.MaxAgentPackageSize, s.apiUploadAgentPackage)
	route("GET /api/agent-packages", s.apiAgentPackages)
	route("POST /api/rollouts", s.apiStartRollout)
	route("GET /api/rollouts", s.apiRollouts)
	route("GET /api/rollouts/{id}", s.apiRollout)
	route("POST /api/rollouts/{id}/halt", s.apiHaltRollout)
	route("POST /api/rollouts/{id}/resume", s.apiResumeRollout)
	route("POST /api/tasks", s.apiCreateTasks)
	route("GET /api/tasks", s.apiTasks)
	route("GET /api/tasks/{id}", s.apiTask)
	route("GET /api/tasks/{id}/log", s.apiTaskLog)
	route("POST /api/tasks/{id}/cancel", s.apiCancelTask)
	route("GET /api/maintenance", s.apiMaintenance)
	route("PUT /api/maintenance", s.apiSetMaintenance)
	route("GET /api/policy", s.apiPolicy)
	route("PUT /api/policy", s.adminOnly(s.apiSetPolicy))
	route("POST /api/backup/snapshot", s.apiBackupSnapshot)
	route("GET /api/updates", s.apiUpdates)
	route("GET /api/nodes", s.apiNodes)
	route("POST /api/nodes/{name}/drain", s.apiDrainNode)
	route("POST /api/nodes/{name}/undrain", s.apiUndrainNode)
	route("POST /api/agents/{name}/health-check", s.apiCheckAgentHealth)
	s.registerConsole(mux)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// authorize requires a valid API key as a bearer token and bounds the
// request body.
func (s *Server) authorize(maxBody int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || key == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tendril"`)
			writeError(w, http.StatusUnauthorized, "an API key is required: send \"Authorization: Bearer <key>\" (the admin key is in the data folder's admin.key)")
			return
		}
		k, err := s.access.CheckAPIKey(r.Context(), key)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				writeError(w, http.StatusUnauthorized, "the API key is not valid")
				return
			}
			s.log.Error("check API key failed", zap.Error(err))
			writeError(w, http.StatusInternalServerError, "could not check the API key")
			return
		}
		if r.ContentLength > maxBody {
			// Said before the body is sent, not after gigabytes of it.
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", maxBody))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		next.ServeHTTP(w, r.WithContext(withAPIKey(r.Context(), k)))
	})
}

func (s *Server) apiAgents(w http.ResponseWriter, r *http.Request) {
	agents, err := s.Agents(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, agents)
}

func (s *Server) apiAgent(w http.ResponseWriter, r *http.Request) {
	a, err := s.Agent(r.Context(), r.PathValue("name"))
	if s.agentError(w, r, err) {
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) apiDeleteAgent(w http.ResponseWriter, r *http.Request) {
	if s.agentError(w, r, s.DeleteAgent(r.Context(), r.PathValue("name"))) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// agentError answers a failed call about the agent named in the path and
// reports whether there was an error.
func (s *Server) agentError(w http.ResponseWriter, r *http.Request, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no agent named %q", r.PathValue("name")))
	default:
		s.internalError(w, err)
	}
	return true
}

func (s *Server) apiCreateToken(w http.ResponseWriter, r *http.Request) {
	var req api.TokenRequest
	if !decodeBody(w, r, &req) {
		return
	}
	ttl := api.DefaultTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl %q: not a duration such as 24h or 30m", req.TTL))
			return
		}
		ttl = d
	}
	res, err := s.CreateToken(r.Context(), req.Environment, ttl, req.Servers)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.log.Info("enrollment token created", zap.String("environment", res.Environment), zap.Time("expires", res.ExpiresAt))
	writeJSON(w, http.StatusCreated, res)
}

func (s *Server) apiRotate(w http.ResponseWriter, r *http.Request) {
	// The rotation must finish even if the client goes away mid-way.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Minute)
	defer cancel()
	res, err := s.RotateCertificate(ctx)
	if err != nil {
		s.internalError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
			return false
		}
		writeError(w, http.StatusBadRequest, bodyErrorMessage(err))
		return false
	}
	return true
}

func (s *Server) internalError(w http.ResponseWriter, err error) {
	s.log.Error("API request failed", zap.Error(err))
	writeError(w, http.StatusInternalServerError, "internal error; see the coordinator's log")
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, api.APIError{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// Join strings carry '&'; escaping it as \u0026 would make them
	// awkward to copy from the raw API.
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// TakeSnapshot writes a consistent copy of the database into the data
// folder, for a backup command to pack and then delete.
func (s *Server) TakeSnapshot(ctx context.Context) (api.Snapshot, error) {
	sn, ok := s.store.(backup.Snapshotter)
	if !ok {
		return api.Snapshot{}, kind.Errorf(kind.ErrConflict, "this coordinator's database cannot be backed up by Tendril; use the database's own backup tools")
	}
	return backup.TakeSnapshot(ctx, sn, s.cfg.DataDir, s.cfg.Version)
}

func (s *Server) apiBackupSnapshot(w http.ResponseWriter, r *http.Request) {
	v, err := s.TakeSnapshot(r.Context())
	s.respond(w, http.StatusCreated, v, err)
}

// Updates returns what the release feed says about newer versions.
func (s *Server) Updates() api.UpdatesView { return s.releases.Updates() }

func (s *Server) apiUpdates(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Updates())
}
