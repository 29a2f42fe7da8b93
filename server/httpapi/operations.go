package httpapi

import (
	"net/http"

	"github.com/tendrildeploy/tendril/api"
)

func (h *API) apiNodes(w http.ResponseWriter, r *http.Request) {
	v, err := h.co.Nodes(r.Context())
	h.respond(w, http.StatusOK, v, err)
}

func (h *API) apiDrainNode(w http.ResponseWriter, r *http.Request) {
	v, err := h.co.SetNodeDraining(r.Context(), r.PathValue("name"), true)
	h.respond(w, http.StatusOK, v, err)
}

func (h *API) apiUndrainNode(w http.ResponseWriter, r *http.Request) {
	v, err := h.co.SetNodeDraining(r.Context(), r.PathValue("name"), false)
	h.respond(w, http.StatusOK, v, err)
}

// apiCheckAgentHealth is POST /api/agents/{name}/health-check.
func (h *API) apiCheckAgentHealth(w http.ResponseWriter, r *http.Request) {
	v, err := h.co.CheckAgentHealth(r.Context(), r.PathValue("name"))
	h.respond(w, http.StatusOK, v, err)
}

func (h *API) apiMaintenance(w http.ResponseWriter, r *http.Request) {
	v, err := h.co.Maintenance(r.Context())
	h.respond(w, http.StatusOK, v, err)
}

func (h *API) apiSetMaintenance(w http.ResponseWriter, r *http.Request) {
	var req api.MaintenanceRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.On == nil {
		WriteError(w, http.StatusBadRequest, `give "on": true or false`)
		return
	}
	v, err := h.co.SetMaintenance(r.Context(), *req.On)
	h.respond(w, http.StatusOK, v, err)
}

func (h *API) apiPolicy(w http.ResponseWriter, r *http.Request) {
	v, err := h.co.Policy(r.Context())
	h.respond(w, http.StatusOK, v, err)
}

func (h *API) apiSetPolicy(w http.ResponseWriter, r *http.Request) {
	var req api.PolicyRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req == (api.PolicyRequest{}) {
		WriteError(w, http.StatusBadRequest, "give at least one of health_interval, calamari_keep, upgrade_batch, upgrade_max_failures, work_keep or work_min_free")
		return
	}
	v, err := h.co.SetPolicy(r.Context(), req)
	h.respond(w, http.StatusOK, v, err)
}

func (h *API) apiHaltRollout(w http.ResponseWriter, r *http.Request) {
	v, err := h.rollouts.HaltRollout(r.Context(), r.PathValue("id"))
	h.respond(w, http.StatusOK, v, err)
}

func (h *API) apiResumeRollout(w http.ResponseWriter, r *http.Request) {
	v, err := h.rollouts.ResumeRollout(r.Context(), r.PathValue("id"))
	h.respond(w, http.StatusOK, v, err)
}
