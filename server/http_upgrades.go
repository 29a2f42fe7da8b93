package server

import (
	"net/http"

	"github.com/tendrildeploy/tendril/api"
)

func (s *Server) apiUploadAgentPackage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v, err := s.UploadAgentPackage(r.Context(), q.Get("version"), q.Get("os"), q.Get("arch"), r.Body)
	s.respond(w, createdStatus(v.Created), v, err)
}

func (s *Server) apiAgentPackages(w http.ResponseWriter, r *http.Request) {
	ps, err := s.AgentPackages(r.Context())
	s.respond(w, http.StatusOK, ps, err)
}

func (s *Server) apiStartRollout(w http.ResponseWriter, r *http.Request) {
	var req api.RolloutRequest
	if !decodeBody(w, r, &req) {
		return
	}
	v, err := s.StartRollout(r.Context(), req)
	s.respond(w, http.StatusCreated, v, err)
}

func (s *Server) apiRollouts(w http.ResponseWriter, r *http.Request) {
	vs, err := s.Rollouts(r.Context())
	s.respond(w, http.StatusOK, vs, err)
}

func (s *Server) apiRollout(w http.ResponseWriter, r *http.Request) {
	v, err := s.Rollout(r.Context(), r.PathValue("id"))
	s.respond(w, http.StatusOK, v, err)
}
