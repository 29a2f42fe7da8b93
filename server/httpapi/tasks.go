package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
)

// Fail answers err with the status its kind calls for (package kind); an
// error of no known kind is logged to log and answered 500, without its
// text. The console answers its own JSON requests with it too.
func Fail(w http.ResponseWriter, log *zap.Logger, err error) {
	var mbe *http.MaxBytesError
	switch {
	case kind.IsNoSpace(err):
		// Before the other kinds: a full folder is what to fix first,
		// whatever the write was.
		noSpace(w, log, err)
	case errors.Is(err, kind.ErrUnavailable):
		unavailable(w, log, err)
	case errors.As(err, &mbe):
		WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
	case errors.Is(err, kind.ErrBadRequest):
		WriteError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, kind.ErrNotFound):
		WriteError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, kind.ErrConflict), errors.Is(err, kind.ErrNotConnected):
		WriteError(w, http.StatusConflict, err.Error())
	case errors.Is(err, kind.ErrForbidden):
		WriteError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, kind.ErrNoAnswer):
		WriteError(w, http.StatusGatewayTimeout, err.Error())
	default:
		InternalError(w, log, err)
	}
}

func (h *API) apiError(w http.ResponseWriter, err error) { Fail(w, h.log, h.noSpace(err, 0)) }

// respond answers with v as JSON and the given status, or, if err is set,
// with the status err's kind calls for.
func (h *API) respond(w http.ResponseWriter, status int, v any, err error) {
	if err != nil {
		h.apiError(w, err)
		return
	}
	WriteJSON(w, status, v)
}

// createdStatus is 201 for a stored upload, 200 for one already stored.
func createdStatus(created bool) int {
	if created {
		return http.StatusCreated
	}
	return http.StatusOK
}

func (h *API) apiUploadCalamari(w http.ResponseWriter, r *http.Request) {
	v, err := h.co.UploadCalamari(r.Context(), r.Body)
	h.respond(w, createdStatus(v.Created), v, h.noSpace(err, r.ContentLength))
}

func (h *API) apiCalamari(w http.ResponseWriter, r *http.Request) {
	vs, err := h.co.CalamariBundles(r.Context())
	h.respond(w, http.StatusOK, vs, err)
}

func (h *API) apiUpdateCalamari(w http.ResponseWriter, r *http.Request) {
	var t api.UpdateTarget
	if !decodeBody(w, r, &t) {
		return
	}
	res, err := h.co.UpdateCalamari(r.Context(), t)
	h.respond(w, http.StatusOK, res, err)
}

// apiUploadFile stores a file by its SHA-256, for tasks to send to agents.
func (h *API) apiUploadFile(w http.ResponseWriter, r *http.Request) {
	v, err := h.co.StoreFile(r.Context(), r.Body)
	h.respond(w, http.StatusCreated, v, h.noSpace(err, r.ContentLength))
}

func (h *API) apiCreateTasks(w http.ResponseWriter, r *http.Request) {
	var req api.TaskRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if err := h.Scope(requestCaller(r.Context())).CheckTaskRequest(r.Context(), req); err != nil {
		h.apiError(w, err)
		return
	}
	ts, err := h.co.CreateTasks(r.Context(), req)
	h.respond(w, http.StatusCreated, ts, err)
}

func (h *API) apiTasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := api.TaskFilter{Group: q.Get("group"), Agent: q.Get("agent")}
	if l := q.Get("limit"); l != "" {
		// A whole number from 1 to maxTaskList: the document says so, and
		// the request was validated against it.
		f.Limit, _ = strconv.Atoi(l)
	}
	ts, err := h.Scope(requestCaller(r.Context())).Tasks(r.Context(), f)
	h.respond(w, http.StatusOK, ts, err)
}

func (h *API) apiTask(w http.ResponseWriter, r *http.Request) {
	t, err := h.Scope(requestCaller(r.Context())).Task(r.Context(), r.PathValue("id"))
	h.respond(w, http.StatusOK, t, err)
}

// apiTaskArtifact downloads a task's artifact. It is offered as an
// attachment with a generic type: an artifact is whatever a script made,
// and must never render as a page of the console's origin.
func (h *API) apiTaskArtifact(w http.ResponseWriter, r *http.Request) {
	if _, err := h.Scope(requestCaller(r.Context())).Task(r.Context(), r.PathValue("id")); err != nil {
		h.apiError(w, err)
		return
	}
	d, err := h.co.TaskArtifact(r.Context(), r.PathValue("id"), r.PathValue("name"))
	if err != nil {
		h.respond(w, http.StatusOK, nil, noSuchTask(r.PathValue("id"), err))
		return
	}
	ServeDownload(w, h.log, "application/octet-stream", d)
}

func (h *API) apiCancelTask(w http.ResponseWriter, r *http.Request) {
	if _, err := h.Scope(requestCaller(r.Context())).Task(r.Context(), r.PathValue("id")); err != nil {
		h.apiError(w, err)
		return
	}
	t, err := h.co.CancelTask(r.Context(), r.PathValue("id"))
	h.respond(w, http.StatusOK, t, noSuchTask(r.PathValue("id"), err))
}

// logKeepAlive is how often a quiet follow sends a blank line, so proxies
// and clients do not take a long silent task for a dead connection.
const logKeepAlive = 15 * time.Second

func (h *API) apiTaskLog(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	from := int64(1)
	if f := r.URL.Query().Get("from"); f != "" {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 1 {
			WriteError(w, http.StatusBadRequest, "from must be a log line number, 1 or more")
			return
		}
		from = n
	}
	follow, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
	if _, err := h.Scope(requestCaller(ctx)).Task(ctx, id); err != nil {
		h.apiError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	const page = 1000
	for {
		// Take the change signal before reading, so a change between the
		// read and the wait is never missed.
		changed := h.co.TaskChanged(id)
		lines, err := h.co.TaskLog(ctx, id, from, page)
		if err != nil {
			return // the status line is sent; the client sees a short stream
		}
		for _, l := range lines {
			if enc.Encode(l) != nil {
				return
			}
			from = l.Seq + 1
		}
		if len(lines) == page {
			continue
		}
		t, err := h.co.Task(ctx, id)
		if err != nil {
			return
		}
		if t.Finished() && from > t.LogLines {
			enc.Encode(api.LogEnd{End: t})
			// A finished task never changes again: drop the signal taken
			// above rather than keep it forever.
			h.co.ForgetTask(id)
			return
		}
		if !follow {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		case <-time.After(logKeepAlive):
			if _, err := io.WriteString(w, "\n"); err != nil {
				return
			}
		}
	}
}
