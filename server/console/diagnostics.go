package console

import (
	"net/http"
	"net/url"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/server/httpapi"
)

// agentDiagnostics answers the machine page's "Collect diagnostics" with
// the archive as a download, as POST /api/agents/{name}/diagnostics does;
// the page stays where it is. Why the agent's own side is missing, if it
// is, is in the archive's manifest notes. A failure comes back to the
// page as a message.
func (c *Console) agentDiagnostics(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	name := r.PathValue("name")
	// Who asked is logged, as for the API: an archive holds the agent's
	// logs.
	c.log.Info("agent diagnostics asked for", zap.String("agent", name), zap.String("console_user", si.name), zap.String("remote", r.RemoteAddr))
	d, err := c.co.AgentDiagnostics(r.Context(), name)
	if err != nil {
		c.done(w, r, si, "/machines/"+url.PathEscape(name), c.failed("Collect diagnostics of "+name, err))
		return
	}
	httpapi.ServeDownload(w, c.log, "application/gzip", d)
}
