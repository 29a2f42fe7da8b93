package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tendrildeploy/tendril/protocol"
)

// handler is everything the HTTP listener serves: the API, the console
// and the metrics, each request timed by its route.
func (s *Server) handler() http.Handler { return s.metrics.Handler(s.mux()) }

// mux routes every HTTP path the coordinator serves.
func (s *Server) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET "+protocol.WebSocketPath, s.serveWebSocket)
	s.api.Register(mux)
	s.console.Register(mux)
	return mux
}
