package httpapi

import (
	"net/http"

	"github.com/tendrildeploy/tendril/api"
)

func (h *API) apiUploadAgentPackage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v, err := h.rollouts.UploadAgentPackage(r.Context(), q.Get("version"), q.Get("os"), q.Get("arch"), r.Body)
	h.respond(w, createdStatus(v.Created), v, h.noSpace(err, r.ContentLength))
}

func (h *API) apiAgentPackages(w http.ResponseWriter, r *http.Request) {
	ps, err := h.rollouts.AgentPackages(r.Context())
	h.respond(w, http.StatusOK, ps, err)
}

func (h *API) apiStartRollout(w http.ResponseWriter, r *http.Request) {
	var req api.RolloutRequest
	if !decodeBody(w, r, &req) {
		return
	}
	v, err := h.rollouts.StartRollout(r.Context(), req)
	h.respond(w, http.StatusCreated, v, err)
}

func (h *API) apiRollouts(w http.ResponseWriter, r *http.Request) {
	vs, err := h.rollouts.Rollouts(r.Context())
	h.respond(w, http.StatusOK, vs, err)
}

func (h *API) apiRollout(w http.ResponseWriter, r *http.Request) {
	v, err := h.rollouts.Rollout(r.Context(), r.PathValue("id"))
	h.respond(w, http.StatusOK, v, err)
}
