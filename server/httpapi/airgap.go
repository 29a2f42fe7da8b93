package httpapi

import (
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
)

func (h *API) apiExport(w http.ResponseWriter, r *http.Request) {
	cw := &countingWriter{w: w, before: func() {
		w.Header().Set("Content-Type", "application/gzip")
		w.Header().Set("Content-Disposition", `attachment; filename="tendril-export.tar.gz"`)
	}}
	if err := h.co.Export(r.Context(), cw); err != nil {
		if cw.n == 0 {
			h.apiError(w, err)
			return
		}
		if r.Context().Err() == nil {
			h.log.Error("export failed partway", zap.Int64("sent", cw.n), zap.Error(err))
		}
		// Too late for a status: abort the response, so the client sees
		// a broken transfer rather than a file that merely ends early.
		panic(http.ErrAbortHandler)
	}
}

func (h *API) apiImport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := api.ImportOptions{SourceKey: q.Get("source_key")}
	for _, f := range []struct {
		name string
		v    *bool
	}{{"allow_downgrade", &opts.AllowDowngrade}, {"trust_any_source", &opts.TrustAnySource}, {"backed_up", &opts.BackedUp}} {
		v := q.Get(f.name)
		if v == "" {
			continue
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			h.apiError(w, kind.Errorf(kind.ErrBadRequest, "%s %q: want true or false", f.name, v))
			return
		}
		*f.v = b
	}
	res, err := h.co.Import(r.Context(), r.Body, opts)
	h.respond(w, http.StatusOK, res, h.noSpace(err, r.ContentLength))
}

// countingWriter counts what went to w, and calls before ahead of the
// first byte.
type countingWriter struct {
	w      http.ResponseWriter
	before func()
	n      int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.n == 0 && c.before != nil {
		c.before()
		c.before = nil
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
