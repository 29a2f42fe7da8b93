package console

import (
	"net/http"
	"net/url"

	"github.com/tendrildeploy/tendril/server/httpapi"
)

// agentDiagnostics answers the machine page's "Collect diagnostics" with
// the archive as a download, as POST /api/agents/{name}/diagnostics does;
// the page stays where it is. Why the agent's own side is missing, if it
// is, is in the archive's manifest notes. A failure comes back to the
// page as a message.
func (c *Console) agentDiagnostics(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	name := r.PathValue("name")
	d, err := c.co.AgentDiagnostics(r.Context(), name)
	if err != nil {
		c.done(w, r, si, "/machines/"+url.PathEscape(name), c.failed("Collect diagnostics of "+name, err))
		return
	}
	httpapi.ServeDownload(w, c.log, "application/gzip", d)
}
