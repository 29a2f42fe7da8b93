package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/idempotency"
	"github.com/tendrildeploy/tendril/server/kind"
)

// idempotent runs a create route under its Idempotency-Key, when the
// request has one: the first request with a key runs, the same request
// sent again is answered as the first was (see package idempotency).
// Only 2xx answers are kept: a refused request created nothing, so the
// same request may run again.
func (h *API) idempotent(rt Route, next http.Handler) http.Handler {
	pattern := rt.Method + " " + rt.Path
	recover := h.recoverers()[pattern]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(idempotency.Header)
		if key == "" || h.idem == nil {
			next.ServeHTTP(w, r)
			return
		}
		if err := idempotency.CheckKey(key); err != nil {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
				return
			}
			WriteError(w, http.StatusBadRequest, "read request body: "+err.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sum := sha256.Sum256(body)
		scope := requestCaller(r.Context()).Who + " " + pattern
		out, err := h.idem.Begin(r.Context(), scope, key, hex.EncodeToString(sum[:]), recover)
		if err != nil {
			h.internalError(w, fmt.Errorf("idempotency key: %w", err))
			return
		}
		switch out.Decision {
		case idempotency.Replay:
			w.Header().Set(idempotency.ReplayedHeader, "true")
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(out.Status)
			w.Write(out.Body)
			return
		case idempotency.SecretAnswer:
			w.Header().Set(idempotency.ReplayedHeader, "true")
			WriteError(w, http.StatusConflict, fmt.Sprintf("a request with %s %q was already done; its answer held a secret, which is not kept: make a new one with a new key", idempotency.Header, key))
			return
		case idempotency.InProgress:
			w.Header().Set("Retry-After", "1")
			WriteError(w, http.StatusConflict, fmt.Sprintf("a request with %s %q is still running; send it again in a moment for its answer", idempotency.Header, key))
			return
		case idempotency.Mismatch:
			WriteError(w, http.StatusUnprocessableEntity, fmt.Sprintf("%s %q was used with a different request; use a new key for a new request", idempotency.Header, key))
			return
		}
		rec := &recorder{ResponseWriter: w}
		defer func() {
			if rec.status >= 200 && rec.status < 300 {
				kept := rec.body.Bytes()
				if rt.SecretAnswer {
					kept = nil
				}
				if err := h.idem.Complete(r.Context(), scope, key, rec.status, kept); err != nil {
					h.log.Error("record idempotent answer failed", zap.String("route", pattern), zap.Error(err))
				}
				return
			}
			if err := h.idem.Release(r.Context(), scope, key); err != nil {
				h.log.Error("release idempotency key failed", zap.String("route", pattern), zap.Error(err))
			}
		}()
		next.ServeHTTP(rec, r.WithContext(idempotency.WithRef(r.Context(), out.Ref)))
	})
}

// recoverers are the create routes that can find what a request created
// under its ref after its node died before recording its answer.
func (h *API) recoverers() map[string]idempotency.Recover {
	return map[string]idempotency.Recover{
		"POST /api/tasks": func(ctx context.Context, ref string) (int, []byte, bool, error) {
			ts, err := h.co.Tasks(ctx, api.TaskFilter{Group: ref, Limit: 1000})
			if err != nil || len(ts) == 0 {
				return 0, nil, false, err
			}
			b, err := encodeJSON(ts)
			return http.StatusCreated, b, err == nil, err
		},
		"POST /api/rollouts": func(ctx context.Context, ref string) (int, []byte, bool, error) {
			v, err := h.rollouts.Rollout(ctx, ref)
			if errors.Is(err, kind.ErrNotFound) {
				return 0, nil, false, nil
			}
			if err != nil {
				return 0, nil, false, err
			}
			b, err := encodeJSON(v)
			return http.StatusCreated, b, err == nil, err
		},
	}
}

// encodeJSON encodes v as WriteJSON does.
func encodeJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	err := writeJSONBody(&b, v)
	return b.Bytes(), err
}

// recorder passes an answer through and keeps a copy of it.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}
