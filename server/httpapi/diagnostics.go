package httpapi

import (
	"io"
	"mime"
	"net/http"
	"strconv"

	"go.uber.org/zap"
)

// Download is a file an API call answers with, such as a diagnostics
// archive: complete before the answer starts, so that a failure is an
// error status rather than a truncated file. Body is closed once sent
// (which removes a temporary file).
type Download struct {
	// Name is the file name offered to the client.
	Name string
	Size int64
	Body io.ReadCloser
}

// apiAgentDiagnostics is POST /api/agents/{name}/diagnostics: POST
// because it asks the agent to work (collect, hash its Calamari, send).
// Who asked is logged: an archive holds the agent's logs.
func (h *API) apiAgentDiagnostics(w http.ResponseWriter, r *http.Request) {
	h.log.Info("agent diagnostics asked for", zap.String("agent", r.PathValue("name")), zap.String("by", requestCaller(r.Context()).Who), zap.String("remote", r.RemoteAddr))
	d, err := h.co.AgentDiagnostics(r.Context(), r.PathValue("name"))
	if h.agentError(w, r, err) {
		return
	}
	ServeDownload(w, h.log, "application/gzip", d)
}

// ServeDownload answers 200 with d as an attachment of the given media
// type and closes its body; the console serves diagnostics the same way.
func ServeDownload(w http.ResponseWriter, log *zap.Logger, media string, d Download) {
	defer d.Body.Close()
	w.Header().Set("Content-Type", media)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": d.Name}))
	w.Header().Set("Content-Length", strconv.FormatInt(d.Size, 10))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if n, err := io.Copy(w, d.Body); err != nil {
		// Too late for a status: the client sees a short file.
		log.Warn("download cut short", zap.String("file", d.Name), zap.Int64("sent", n), zap.Error(err))
	}
}

// apiGoroutines is GET /api/server/goroutines, for admin keys only (its
// row's Roles): a dump names the coordinator's internals, which only its
// administrators need.
func (h *API) apiGoroutines(w http.ResponseWriter, r *http.Request) {
	b, err := h.co.Goroutines()
	if err != nil {
		h.internalError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}
