package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/httpapi"
	"github.com/tendrildeploy/tendril/server/kind"
)

// registerRollouts adds the rollout pages: the list, one rollout's
// progress per batch and per agent, and its halt and resume buttons.
func (c *Console) registerRollouts(mux *http.ServeMux) {
	mux.Handle("GET /rollouts", c.page("GET /api/rollouts", c.rolloutsPage))
	mux.Handle("GET /rollouts/{id}", c.page("GET /api/rollouts/{id}", c.rolloutPage))
	mux.Handle("GET /ui/fragments/rollouts", c.uiAPI("GET /api/rollouts", c.rolloutsFragment))
	mux.Handle("GET /ui/fragments/rollouts/{id}", c.uiAPI("GET /api/rollouts/{id}", c.rolloutFragment))
	mux.Handle("POST /actions/rollouts/{id}/halt", c.action("POST /api/rollouts/{id}/halt", c.haltRollout))
	mux.Handle("POST /actions/rollouts/{id}/resume", c.action("POST /api/rollouts/{id}/resume", c.resumeRollout))
}

// consoleRolloutRow is a rollout in the list.
type consoleRolloutRow struct {
	api.RolloutView
	Target      string
	StateKey    string // CSS class and data-state: running, paused, succeeded, halted
	StateLabel  string
	Done, Total int
}

func rolloutRow(v api.RolloutView) consoleRolloutRow {
	row := consoleRolloutRow{RolloutView: v, Target: "every environment", StateKey: v.State, StateLabel: v.State}
	switch {
	case v.TargetAgents != nil:
		row.Target = strings.Join(v.TargetAgents, ", ")
	case !v.All:
		row.Target = v.Environment
	}
	if v.Paused {
		row.StateKey, row.StateLabel = "paused", "halted by an operator"
	}
	for state, n := range v.Counts {
		row.Total += n
		if api.UpgradeFinal(state) {
			row.Done += n
		}
	}
	return row
}

func (c *Console) rolloutsPage(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	rows, err := c.rolloutRows(r.Context())
	if err != nil {
		c.serverError(w, r, &si, err)
		return
	}
	c.render(w, r, &si, http.StatusOK, "rollouts", "rollouts", rows)
}

func (c *Console) rolloutsFragment(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	rows, err := c.rolloutRows(r.Context())
	if err != nil {
		httpapi.InternalError(w, c.log, err)
		return
	}
	c.renderFragment(w, "rollout-table", rows)
}

func (c *Console) rolloutRows(ctx context.Context) ([]consoleRolloutRow, error) {
	vs, err := c.rollouts.Rollouts(ctx)
	if err != nil {
		return nil, fmt.Errorf("console: list rollouts: %w", err)
	}
	rows := make([]consoleRolloutRow, len(vs))
	for i, v := range vs {
		rows[i] = rolloutRow(v)
	}
	return rows, nil
}

// consoleBatch is one batch of a rollout with its agents. Batch 0 holds
// the agents that were already at the version.
type consoleBatch struct {
	Number      int
	StateKey    string // queued, running, done, failed
	StateLabel  string
	Agents      []api.RolloutAgentView
	Done, Total int
	Failed      int
}

// consoleRollout is the body of a rollout's page and its fragment.
type consoleRollout struct {
	CSRF    string
	Can     consoleCan
	Row     consoleRolloutRow
	Batches []consoleBatch
	// Running is true while the rollout has not finished: the halt or
	// resume button shows, and the page keeps refreshing.
	Running bool
}

func rolloutBatches(v api.RolloutView) []consoleBatch {
	var out []consoleBatch
	index := map[int]int{}
	for _, a := range v.Agents {
		i, ok := index[a.Batch]
		if !ok {
			i = len(out)
			index[a.Batch] = i
			out = append(out, consoleBatch{Number: a.Batch})
		}
		b := &out[i]
		b.Agents = append(b.Agents, a)
		b.Total++
		if api.UpgradeFinal(a.State) {
			b.Done++
		}
		if a.State == api.UpgradeFailed || a.State == api.UpgradeRolledBack {
			b.Failed++
		}
	}
	for i := range out {
		b := &out[i]
		queued := 0
		for _, a := range b.Agents {
			if a.State == api.UpgradeQueued {
				queued++
			}
		}
		switch {
		case b.Done == b.Total && b.Failed > 0:
			b.StateKey, b.StateLabel = "failed", fmt.Sprintf("done, %d failed", b.Failed)
		case b.Done == b.Total:
			b.StateKey, b.StateLabel = "done", "done"
		case queued == b.Total:
			b.StateKey, b.StateLabel = "queued", "not started"
		default:
			b.StateKey, b.StateLabel = "running", "in progress"
		}
	}
	return out
}

func (c *Console) rollout(ctx context.Context, si sessionInfo, id string) (consoleRollout, error) {
	v, err := c.rollouts.Rollout(ctx, id)
	if err != nil {
		return consoleRollout{}, err
	}
	return consoleRollout{CSRF: si.csrf, Can: canOf(si), Row: rolloutRow(v), Batches: rolloutBatches(v), Running: v.State == api.RolloutRunning}, nil
}

func (c *Console) rolloutPage(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	id := r.PathValue("id")
	v, err := c.rollout(r.Context(), si, id)
	if errors.Is(err, kind.ErrNotFound) {
		c.renderError(w, r, &si, http.StatusNotFound, "No such rollout", fmt.Sprintf("There is no rollout %q.", id))
		return
	}
	if err != nil {
		c.serverError(w, r, &si, err)
		return
	}
	c.render(w, r, &si, http.StatusOK, "rollout", "rollouts", v)
}

func (c *Console) rolloutFragment(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	v, err := c.rollout(r.Context(), si, r.PathValue("id"))
	if err != nil {
		httpapi.Fail(w, c.log, err)
		return
	}
	c.renderFragment(w, "rollout-body", v)
}

func (c *Console) haltRollout(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	id := r.PathValue("id")
	back := "/rollouts/" + url.PathEscape(id)
	if _, err := c.rollouts.HaltRollout(r.Context(), id); err != nil {
		c.done(w, r, si, back, c.failed("Halt rollout", err))
		return
	}
	c.done(w, r, si, back, consoleFlash{Kind: "ok", Text: "Rollout halted: no further batch starts; agents already upgrading finish."})
}

func (c *Console) resumeRollout(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	id := r.PathValue("id")
	back := "/rollouts/" + url.PathEscape(id)
	if _, err := c.rollouts.ResumeRollout(r.Context(), id); err != nil {
		c.done(w, r, si, back, c.failed("Resume rollout", err))
		return
	}
	c.done(w, r, si, back, consoleFlash{Kind: "ok", Text: "Rollout resumed: the next batch starts once the one under way has finished."})
}
