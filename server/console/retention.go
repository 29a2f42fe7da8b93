package console

import (
	"net/http"

	"github.com/tendrildeploy/tendril/server/httpapi"
)

// machineWorkFragment is the machine page's disk retention panel
// (partials_retention.html), refreshed on its own so that the panel
// needs nothing of the machine's other parts.
func (c *Console) machineWorkFragment(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	v, err := c.scope(si).Agent(r.Context(), r.PathValue("name"))
	if err != nil {
		httpapi.Fail(w, c.log, err)
		return
	}
	// The panel shows no Calamari state, so the latest version is not looked up.
	c.renderFragment(w, "machine-work", classify(v, ""))
}
