package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
)

// registerListening adds the actions on listening agents: the agents the
// coordinator dials, which the operator adds by address and thumbprint
// rather than the agent enrolling itself with a token.
func (c *Console) registerListening(mux *http.ServeMux) {
	mux.Handle("POST /actions/agents", c.action("POST /api/agents", c.addListeningAgent))
	mux.Handle("POST /actions/agents/{name}/address", c.action("PUT /api/agents/{name}/address", c.setAgentAddress))
}

// addListeningAgent adds the agent the form describes and shows its page,
// where whether the coordinator could connect to it appears. A refusal
// goes back to the form with the coordinator's reason.
func (c *Console) addListeningAgent(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	req := api.ListeningAgentRequest{
		Name:        strings.TrimSpace(r.PostForm.Get("name")),
		Environment: strings.TrimSpace(r.PostForm.Get("environment")),
		Address:     strings.TrimSpace(r.PostForm.Get("address")),
		Thumbprint:  strings.TrimSpace(r.PostForm.Get("thumbprint")),
	}
	v, err := c.co.AddListeningAgent(r.Context(), req)
	if err != nil {
		c.done(w, r, si, "/", c.failed("Add listening agent", err))
		return
	}
	c.log.Info("console: listening agent added", zap.String("agent", v.Name), zap.String("address", v.Address), zap.String("by", si.name))
	c.sessions.addFlash(si.id, consoleFlash{Kind: "ok", Text: fmt.Sprintf(
		"Added listening agent %s to %s: the coordinator dials %s and accepts only the certificate %s.",
		v.Name, v.Environment, v.Address, v.Thumbprint)})
	// The new machine's page, whatever the form said: that is where its
	// connection, or why it failed, shows.
	http.Redirect(w, r, "/machines/"+url.PathEscape(v.Name), http.StatusSeeOther)
}

// setAgentAddress moves a listening agent to the form's address.
func (c *Console) setAgentAddress(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	name := r.PathValue("name")
	back := "/machines/" + url.PathEscape(name)
	v, err := c.co.SetAgentAddress(r.Context(), name, strings.TrimSpace(r.PostForm.Get("address")))
	if errors.Is(err, kind.ErrNotFound) {
		// Said as the API says it, rather than as the store's lookup failed.
		err = kind.Errorf(kind.ErrNotFound, "no agent named %q", name)
	}
	if err != nil {
		c.done(w, r, si, back, c.failed("Change the address of "+name, err))
		return
	}
	c.log.Info("console: listening agent moved", zap.String("agent", v.Name), zap.String("address", v.Address), zap.String("by", si.name))
	c.done(w, r, si, back, consoleFlash{Kind: "ok", Text: fmt.Sprintf("%s moved: the coordinator dials %s from now on.", v.Name, v.Address)})
}
