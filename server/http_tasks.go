package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/tendrildeploy/tendril/api"

	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// apiError answers err with the status its kind calls for.
func (s *Server) apiError(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
	case errors.Is(err, kind.ErrBadRequest):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, kind.ErrConflict), errors.Is(err, kind.ErrNotConnected):
		writeError(w, http.StatusConflict, err.Error())
	default:
		s.internalError(w, err)
	}
}

// respond answers with v as JSON and the given status, or, if err is set,
// with the status err's kind calls for.
func (s *Server) respond(w http.ResponseWriter, status int, v any, err error) {
	if err != nil {
		s.apiError(w, err)
		return
	}
	writeJSON(w, status, v)
}

// createdStatus is 201 for a stored upload, 200 for one already stored.
func createdStatus(created bool) int {
	if created {
		return http.StatusCreated
	}
	return http.StatusOK
}

func (s *Server) apiUploadCalamari(w http.ResponseWriter, r *http.Request) {
	v, err := s.UploadCalamari(r.Context(), r.Body)
	s.respond(w, createdStatus(v.Created), v, err)
}

func (s *Server) apiCalamari(w http.ResponseWriter, r *http.Request) {
	vs, err := s.CalamariBundles(r.Context())
	s.respond(w, http.StatusOK, vs, err)
}

func (s *Server) apiUpdateCalamari(w http.ResponseWriter, r *http.Request) {
	var t api.UpdateTarget
	if !decodeBody(w, r, &t) {
		return
	}
	res, err := s.UpdateCalamari(r.Context(), t)
	s.respond(w, http.StatusOK, res, err)
}

// apiUploadFile stores a file by its SHA-256, for tasks to send to agents.
func (s *Server) apiUploadFile(w http.ResponseWriter, r *http.Request) {
	v, err := s.storeFile(r.Body)
	if err == nil {
		// For the other nodes, when they drive a task that needs it.
		err = s.shareUpload(r.Context(), fileBlob(v.SHA256), filepath.Join(s.filesDir(), v.SHA256), v.SHA256, v.Size)
	}
	s.respond(w, http.StatusCreated, v, err)
}

func (s *Server) storeFile(r io.Reader) (api.FileView, error) {
	if err := os.MkdirAll(s.filesDir(), 0o700); err != nil {
		return api.FileView{}, err
	}
	tmp, err := os.CreateTemp(s.filesDir(), ".upload-*")
	if err != nil {
		return api.FileView{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r)
	if err != nil {
		return api.FileView{}, fmt.Errorf("receive file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return api.FileView{}, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp.Name(), filepath.Join(s.filesDir(), sum)); err != nil {
		return api.FileView{}, err
	}
	return api.FileView{SHA256: sum, Size: n}, nil
}

func (s *Server) apiCreateTasks(w http.ResponseWriter, r *http.Request) {
	var req api.TaskRequest
	if !decodeBody(w, r, &req) {
		return
	}
	ts, err := s.CreateTasks(r.Context(), req)
	s.respond(w, http.StatusCreated, ts, err)
}

func (s *Server) apiTasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.TaskFilter{Group: q.Get("group")}
	if name := q.Get("agent"); name != "" {
		a, err := s.store.AgentByName(r.Context(), name)
		if err != nil {
			s.apiError(w, fmt.Errorf("agent %q: %w", name, err))
			return
		}
		f.AgentID = a.ID
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit must be a number from 1 to 1000")
			return
		}
		f.Limit = n
	}
	ts, err := s.Tasks(r.Context(), f)
	s.respond(w, http.StatusOK, ts, err)
}

func (s *Server) apiTask(w http.ResponseWriter, r *http.Request) {
	t, err := s.Task(r.Context(), r.PathValue("id"))
	s.respond(w, http.StatusOK, t, noSuchTask(r.PathValue("id"), err))
}

func (s *Server) apiCancelTask(w http.ResponseWriter, r *http.Request) {
	t, err := s.CancelTask(r.Context(), r.PathValue("id"))
	s.respond(w, http.StatusOK, t, noSuchTask(r.PathValue("id"), err))
}

// logKeepAlive is how often a quiet follow sends a blank line, so proxies
// and clients do not take a long silent task for a dead connection.
const logKeepAlive = 15 * time.Second

func (s *Server) apiTaskLog(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	from := int64(1)
	if f := r.URL.Query().Get("from"); f != "" {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "from must be a log line number, 1 or more")
			return
		}
		from = n
	}
	follow, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
	if _, err := s.store.Task(ctx, id); err != nil {
		s.apiError(w, noSuchTask(id, err))
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
		changed := s.tasks.changed(id)
		lines, err := s.store.TaskLogs(ctx, id, from, page)
		if err != nil {
			return // the status line is sent; the client sees a short stream
		}
		for _, l := range lines {
			if enc.Encode(api.LogLineView{Seq: l.Seq, Time: l.Time, Stream: l.Stream, Text: l.Text}) != nil {
				return
			}
			from = l.Seq + 1
		}
		if len(lines) == page {
			continue
		}
		t, err := s.store.Task(ctx, id)
		if err != nil {
			return
		}
		if t.Finished() && from > t.LastSeq {
			enc.Encode(api.LogEnd{End: taskView(t)})
			// A finished task never changes again: drop the signal taken
			// above rather than keep it forever (waking any other reader
			// only makes it re-read and finish too).
			s.tasks.notify(id)
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
