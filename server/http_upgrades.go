package server

import "net/http"

func (s *Server) apiUploadAgentPackage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v, err := s.UploadAgentPackage(r.Context(), q.Get("version"), q.Get("os"), q.Get("arch"), r.Body)
	if err != nil {
		s.apiError(w, err)
		return
	}
	status := http.StatusOK
	if v.Created {
		status = http.StatusCreated
	}
	writeJSON(w, status, v)
}

func (s *Server) apiAgentPackages(w http.ResponseWriter, r *http.Request) {
	ps, err := s.AgentPackages(r.Context())
	if err != nil {
		s.apiError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ps)
}

func (s *Server) apiStartRollout(w http.ResponseWriter, r *http.Request) {
	var req RolloutRequest
	if !decodeBody(w, r, &req) {
		return
	}
	v, err := s.StartRollout(r.Context(), req)
	if err != nil {
		s.apiError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) apiRollouts(w http.ResponseWriter, r *http.Request) {
	vs, err := s.Rollouts(r.Context())
	if err != nil {
		s.apiError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, vs)
}

func (s *Server) apiRollout(w http.ResponseWriter, r *http.Request) {
	v, err := s.Rollout(r.Context(), r.PathValue("id"))
	if err != nil {
		s.apiError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}
