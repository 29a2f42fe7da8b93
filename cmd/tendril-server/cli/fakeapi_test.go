package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
)

// fakeAPI stands in for the coordinator's HTTP API in tests where a real
// coordinator is inconvenient: one needs a real agent and a real Calamari
// bundle to run a task, and cannot be made to cut a log stream or fail on
// demand. It answers the calamari and task endpoints with what the test
// scripted and records what it was sent.
type fakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	requests []string // "METHOD /path?query", in order
	taskReq  *api.TaskRequest
	file     []byte // body of the last POST /api/files
	update   *api.UpdateTarget

	// Scripted answers.
	tasks   []api.TaskView // POST /api/tasks, GET /api/tasks
	bundles []api.BundleView
	pushed  api.BundleView
	results []api.UpdateResult
	// logs and ends script GET /api/tasks/{id}/log by default: the lines
	// from the requested one on, then the end if there is one.
	logs map[string][]string
	ends map[string]api.TaskView
	// logHandler, if set, answers GET /api/tasks/{id}/log instead; call
	// counts from 1 per task.
	logHandler func(w http.ResponseWriter, r *http.Request, id string, call int)
	logCalls   map[string]int
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, logs: map[string][]string{}, ends: map[string]api.TaskView{}, logCalls: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/calamari", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(b)
		f.mu.Lock()
		v := f.pushed
		f.mu.Unlock()
		v.SHA256, v.Size = hex.EncodeToString(sum[:]), int64(len(b))
		writeTestJSON(w, http.StatusCreated, v)
	})
	mux.HandleFunc("GET /api/calamari", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		writeTestJSON(w, http.StatusOK, f.bundles)
	})
	mux.HandleFunc("POST /api/calamari/update", func(w http.ResponseWriter, r *http.Request) {
		var ut api.UpdateTarget
		json.NewDecoder(r.Body).Decode(&ut)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.update = &ut
		writeTestJSON(w, http.StatusOK, f.results)
	})
	mux.HandleFunc("POST /api/files", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(b)
		f.mu.Lock()
		f.file = b
		f.mu.Unlock()
		writeTestJSON(w, http.StatusCreated, api.FileView{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(b))})
	})
	mux.HandleFunc("POST /api/tasks", func(w http.ResponseWriter, r *http.Request) {
		var req api.TaskRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.taskReq = &req
		writeTestJSON(w, http.StatusCreated, f.tasks)
	})
	mux.HandleFunc("GET /api/tasks", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		writeTestJSON(w, http.StatusOK, f.tasks)
	})
	mux.HandleFunc("GET /api/tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, tk := range f.tasks {
			if tk.ID == r.PathValue("id") {
				writeTestJSON(w, http.StatusOK, tk)
				return
			}
		}
		writeTestJSON(w, http.StatusNotFound, api.APIError{Error: "task " + r.PathValue("id") + ": not found"})
	})
	mux.HandleFunc("POST /api/tasks/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		tk := f.tasks[0]
		tk.ID = r.PathValue("id")
		writeTestJSON(w, http.StatusOK, tk)
	})
	mux.HandleFunc("GET /api/tasks/{id}/log", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		f.mu.Lock()
		f.logCalls[id]++
		call, h := f.logCalls[id], f.logHandler
		lines := f.logs[id]
		end, ended := f.ends[id]
		f.mu.Unlock()
		if h != nil {
			h(w, r, id, call)
			return
		}
		from, _ := strconv.ParseInt(r.URL.Query().Get("from"), 10, 64)
		writeLogLines(w, from, lines)
		if ended {
			writeLogEnd(w, end)
		}
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer k" {
			writeTestJSON(w, http.StatusUnauthorized, api.APIError{Error: "the API key is not valid"})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// vars points the commands at the fake.
func (f *fakeAPI) vars() map[string]string {
	return map[string]string{envURL: f.srv.URL, envAPIKey: "k"}
}

func (f *fakeAPI) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

// received returns what the commands sent: the last task request, file
// and update target.
func (f *fakeAPI) received() (*api.TaskRequest, []byte, *api.UpdateTarget) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.taskReq, f.file, f.update
}

func writeTestJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeLogLines writes texts as log lines numbered from 1, those from
// line from on.
func writeLogLines(w http.ResponseWriter, from int64, texts []string) {
	enc := json.NewEncoder(w)
	for i, text := range texts {
		if seq := int64(i + 1); seq >= from {
			enc.Encode(api.LogLineView{Seq: seq, Time: time.Date(2026, 1, 2, 12, 0, i, 0, time.UTC), Stream: "stdout", Text: text})
		}
	}
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
}

func writeLogEnd(w http.ResponseWriter, end api.TaskView) {
	json.NewEncoder(w).Encode(api.LogEnd{End: end})
}

// finished returns a task view in a final state.
func finished(id, agent, state string, code int, errText string) api.TaskView {
	at := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	done := at.Add(3 * time.Second)
	return api.TaskView{ID: id, Agent: agent, Args: []string{"run-script"}, Calamari: "1.2.3", State: state,
		ExitCode: code, Error: errText, CreatedAt: at, StartedAt: &at, FinishedAt: &done}
}
