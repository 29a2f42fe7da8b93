package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/httpapi"
	"github.com/tendrildeploy/tendril/server/kind"
)

// The script console runs one script on machines chosen in a form, the
// way "tendril-server task run --agent A --agent B -- run-script --inline
// SCRIPT" does: one request through Coordinator.CreateTasks, so that a
// list naming an unknown or disconnected machine starts nothing anywhere.
// Its group view follows the tasks that request made, one row a machine.

// scriptShells are the shells offered for a script: "" lets Calamari
// choose (sh, or cmd on Windows); the others are what "calamari
// run-script --shell" takes.
var scriptShells = []string{"sh", "bash", "pwsh", "powershell", "cmd"}

// groupOpenLogs is the largest group whose logs the group view opens, and
// so streams, at once. A browser holds at most six HTTP/1.1 connections
// to the coordinator, and each followed log keeps one: more open logs
// would starve the page's refreshes and forms. Larger groups open a log
// when its row is expanded.
const groupOpenLogs = 4

// Target kinds of the script form.
const (
	targetMachines    = "machines"
	targetEnvironment = "environment"
)

// Rows of empty variable inputs the form offers beyond those kept after
// a refusal; the page's script adds more on request.
const (
	spareVariableRows  = 2
	spareSensitiveRows = 1
)

func (c *Console) registerScript(mux *http.ServeMux) {
	mux.Handle("GET /script", c.page("POST /api/tasks", c.scriptPage))
	mux.Handle("POST /actions/script", c.action("POST /api/tasks", c.runScript))
	mux.Handle("GET /script/{group}", c.page("GET /api/tasks", c.groupPage))
	mux.Handle("GET /ui/fragments/script/{group}", c.uiAPI("GET /api/tasks", c.groupFragment))
	mux.Handle("POST /actions/script/{group}/cancel", c.action("POST /api/tasks/{id}/cancel", c.cancelGroup))
}

// scriptVariable is one row of the form's variables.
type scriptVariable struct {
	Name, Value string
}

// scriptForm is what the operator entered in the script form. After a
// refusal it is shown again as it was, except that Secrets hold names
// only: a sensitive value is never written into a page.
type scriptForm struct {
	// Target is targetMachines or targetEnvironment.
	Target      string
	Agents      []string
	Environment string
	Script      string
	Shell       string
	Isolation   string
	// Locks are the lock names as typed, separated by commas or spaces.
	Locks     string
	Variables []scriptVariable
	Secrets   []scriptVariable
}

// formError is a mistake in the form that the console finds before
// asking the coordinator; its text is for the person who made it.
type formError string

func (e formError) Error() string { return string(e) }

// parseScriptForm reads the script form into the request the coordinator
// takes. The form comes back even when the request cannot be made, with
// the sensitive values dropped, to be shown again.
func parseScriptForm(f url.Values) (scriptForm, api.TaskRequest, error) {
	form := scriptForm{
		Target:      f.Get("target"),
		Environment: strings.TrimSpace(f.Get("environment")),
		// A browser sends a textarea's lines ended by CRLF, whatever the
		// person typed; a shell would take each CR as part of the line
		// (a file "out.txt\r"). Every shell Calamari runs reads LF.
		Script:    crlf.Replace(f.Get("script")),
		Shell:     f.Get("shell"),
		Isolation: f.Get("isolation"),
		Locks:     strings.TrimSpace(f.Get("locks")),
	}
	for _, a := range f["agent"] {
		if a = strings.TrimSpace(a); a != "" && !slices.Contains(form.Agents, a) {
			form.Agents = append(form.Agents, a)
		}
	}
	if form.Target != targetEnvironment {
		form.Target = targetMachines
	}
	if form.Isolation != api.IsolationNone {
		form.Isolation = api.IsolationFull
	}
	plain, errPlain := variableRows(f["var_name"], f["var_value"], false)
	secrets, errSecret := variableRows(f["secret_name"], f["secret_value"], true)
	for _, v := range plain {
		form.Variables = append(form.Variables, scriptVariable{Name: v.Name, Value: v.Value})
	}
	for _, v := range secrets {
		form.Secrets = append(form.Secrets, scriptVariable{Name: v.Name})
	}

	var req api.TaskRequest
	switch {
	case form.Target == targetMachines && len(form.Agents) == 0:
		return form, req, formError("Choose at least one machine, or an environment.")
	case form.Target == targetEnvironment && form.Environment == "":
		return form, req, formError("Choose an environment.")
	case strings.TrimSpace(form.Script) == "":
		return form, req, formError("Enter a script to run.")
	case form.Shell != "" && !slices.Contains(scriptShells, form.Shell):
		return form, req, formError(fmt.Sprintf("Unknown shell %q: choose one of %s.", form.Shell, strings.Join(scriptShells, ", ")))
	case errPlain != nil:
		return form, req, errPlain
	case errSecret != nil:
		return form, req, errSecret
	}
	if form.Target == targetEnvironment {
		req.Environment = form.Environment
	} else {
		req.Agents = form.Agents
	}
	req.Args = []string{"run-script", "--inline", form.Script}
	if form.Shell != "" {
		req.Args = append(req.Args, "--shell", form.Shell)
	}
	req.Isolation = form.Isolation
	if locks := strings.FieldsFunc(form.Locks, func(r rune) bool { return r == ',' || r == ' ' }); len(locks) > 0 {
		req.Locks = locks
	}
	req.Variables = append(plain, secrets...)
	return form, req, nil
}

// crlf turns a textarea's line ends into LF.
var crlf = strings.NewReplacer("\r\n", "\n", "\r", "\n")

// variableRows pairs a form's name and value inputs, which the browser
// sends in the page's order, skipping rows left empty. A value without a
// name is a mistake; the message never quotes the value, which may be a
// secret.
func variableRows(names, values []string, sensitive bool) ([]api.Variable, error) {
	what := "A variable"
	if sensitive {
		what = "A sensitive variable"
	}
	var vs []api.Variable
	var err error
	for i := range max(len(names), len(values)) {
		var name, value string
		if i < len(names) {
			name = strings.TrimSpace(names[i])
		}
		if i < len(values) {
			value = values[i]
		}
		switch {
		case name == "" && value == "":
			continue
		case name == "" && err == nil:
			err = formError(what + " has a value but no name.")
		}
		if name != "" {
			vs = append(vs, api.Variable{Name: name, Value: value, Sensitive: sensitive})
		}
	}
	return vs, err
}

// scriptMachine is a machine offered as a target.
type scriptMachine struct {
	Name      string
	Connected bool
	Checked   bool
}

// scriptEnvironment is an environment offered as a target, with its
// machines.
type scriptEnvironment struct {
	Name     string
	Machines []scriptMachine
}

// consoleScript is the body of the script console's page.
type consoleScript struct {
	CSRF string
	Form scriptForm
	// Error is why the last submission was refused; nothing ran.
	Error        string
	Environments []scriptEnvironment
	Shells       []string
	// Variables and Secrets are the rows of inputs to show: those kept,
	// then empty ones.
	Variables, Secrets []scriptVariable
}

// scriptBody makes the script page's body around form.
func (c *Console) scriptBody(ctx context.Context, si sessionInfo, form scriptForm, msg string) (consoleScript, error) {
	agents, err := c.scope(si).Agents(ctx)
	if err != nil {
		return consoleScript{}, fmt.Errorf("console: list agents for the script console: %w", err)
	}
	b := consoleScript{CSRF: si.csrf, Form: form, Error: msg, Shells: scriptShells,
		Variables: append(slices.Clone(form.Variables), make([]scriptVariable, spareVariableRows)...),
		Secrets:   append(slices.Clone(form.Secrets), make([]scriptVariable, spareSensitiveRows)...)}
	// Grouped case-insensitively, as the environments page groups them.
	byKey := map[string]int{}
	for _, v := range agents {
		k := strings.ToLower(v.Environment)
		i, ok := byKey[k]
		if !ok {
			i = len(b.Environments)
			byKey[k] = i
			b.Environments = append(b.Environments, scriptEnvironment{Name: v.Environment})
		}
		b.Environments[i].Machines = append(b.Environments[i].Machines,
			scriptMachine{Name: v.Name, Connected: v.Connected, Checked: slices.Contains(form.Agents, v.Name)})
	}
	slices.SortFunc(b.Environments, func(x, y scriptEnvironment) int {
		return strings.Compare(strings.ToLower(x.Name), strings.ToLower(y.Name))
	})
	for _, e := range b.Environments {
		slices.SortFunc(e.Machines, func(x, y scriptMachine) int { return strings.Compare(x.Name, y.Name) })
	}
	// An environment asked for by another case is the one listed.
	for _, e := range b.Environments {
		if strings.EqualFold(e.Name, form.Environment) {
			b.Form.Environment = e.Name
		}
	}
	return b, nil
}

// scriptPage is the empty form, its target chosen by the link that led
// here: ?agent=NAME (repeatable) or ?environment=NAME.
func (c *Console) scriptPage(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	q := r.URL.Query()
	form := scriptForm{Target: targetMachines, Agents: q["agent"], Environment: q.Get("environment"), Isolation: api.IsolationFull}
	if form.Environment != "" && len(form.Agents) == 0 {
		form.Target = targetEnvironment
	}
	b, err := c.scriptBody(r.Context(), si, form, "")
	if err != nil {
		c.serverError(w, r, &si, err)
		return
	}
	c.render(w, r, &si, http.StatusOK, "script", "script", b)
}

// runScript starts the form's script and shows its group. A refusal, by
// the form or the coordinator, shows the form again with the reason; the
// coordinator refuses a request whole, so nothing ran anywhere.
func (c *Console) runScript(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	form, req, err := parseScriptForm(r.PostForm)
	var tasks []api.TaskView
	if err == nil {
		// A deployer's request is refused whole outside its environments,
		// as the API refuses it.
		err = c.scope(si).CheckTaskRequest(r.Context(), req)
	}
	if err == nil {
		tasks, err = c.co.CreateTasks(r.Context(), req)
	}
	if err == nil && len(tasks) == 0 {
		// The coordinator refuses a target without machines; should it
		// not, there is no group to show.
		err = formError("No machine to run on.")
	}
	if err != nil {
		status, msg := c.refusal(err)
		b, berr := c.scriptBody(r.Context(), si, form, msg)
		if berr != nil {
			c.serverError(w, r, &si, berr)
			return
		}
		c.render(w, r, &si, status, "script", "script", b)
		return
	}
	names := make([]string, len(tasks))
	for i, t := range tasks {
		names[i] = t.Agent
	}
	group := tasks[0].Group
	// The script itself is not logged here: the coordinator logs the
	// arguments of every request, and variables' values are never logged.
	c.log.Info("console: script started", zap.String("group", group), zap.Strings("agents", names), zap.String("by", si.name))
	c.sessions.addFlash(si.id, consoleFlash{Kind: "ok", Text: fmt.Sprintf("Script started on %s.", strings.Join(names, ", "))})
	http.Redirect(w, r, "/script/"+url.PathEscape(group), http.StatusSeeOther)
}

// refusal is the status and message for a refused script: the form's own
// message, or the coordinator's as the API would answer it.
func (c *Console) refusal(err error) (int, string) {
	var fe formError
	if errors.As(err, &fe) {
		return http.StatusBadRequest, fe.Error()
	}
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, kind.ErrBadRequest):
		status = http.StatusBadRequest
	case errors.Is(err, kind.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, kind.ErrConflict), errors.Is(err, kind.ErrNotConnected):
		status = http.StatusConflict
	case errors.Is(err, kind.ErrForbidden):
		status = http.StatusForbidden
	}
	return status, c.failed("Run the script", err).Text
}

// consoleGroup is the body of a group view and its fragment: the tasks
// one request made, one a machine.
type consoleGroup struct {
	CSRF  string
	Can   consoleCan
	Group string
	// Tasks are sorted by machine.
	Tasks []api.TaskView
	// Unfinished counts the tasks that Cancel all would cancel.
	Unfinished int
	// Counts are how many tasks are in each state, for the summary line.
	Counts []stateCount
	// OpenLogs says whether every log is open (and followed) at first.
	OpenLogs bool
}

// stateCount is how many of a group's tasks are in one state.
type stateCount struct {
	State string
	N     int
}

// First is the task whose request the group shares: its command,
// isolation and variables are every task's.
func (g consoleGroup) First() api.TaskView { return g.Tasks[0] }

func (c *Console) group(ctx context.Context, si sessionInfo, id string) (consoleGroup, error) {
	// A request makes one task per machine, and tasks are listed at most
	// 1000 at a time.
	ts, err := c.scope(si).Tasks(ctx, api.TaskFilter{Group: id, Limit: 1000})
	if err != nil {
		return consoleGroup{}, fmt.Errorf("console: tasks of group %s: %w", id, err)
	}
	if len(ts) == 0 {
		return consoleGroup{}, kind.Errorf(kind.ErrNotFound, "no tasks in group %q", id)
	}
	slices.SortFunc(ts, func(x, y api.TaskView) int { return strings.Compare(x.Agent, y.Agent) })
	g := consoleGroup{CSRF: si.csrf, Can: canOf(si), Group: id, Tasks: ts, OpenLogs: len(ts) <= groupOpenLogs}
	for _, state := range []string{api.TaskQueued, api.TaskRunning, api.TaskSucceeded, api.TaskFailed, api.TaskCancelled} {
		n := 0
		for _, t := range ts {
			if t.State == state {
				n++
			}
		}
		if n > 0 {
			g.Counts = append(g.Counts, stateCount{state, n})
		}
	}
	for _, t := range ts {
		if !t.Finished() {
			g.Unfinished++
		}
	}
	return g, nil
}

func (c *Console) groupPage(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	id := r.PathValue("group")
	g, err := c.group(r.Context(), si, id)
	if errors.Is(err, kind.ErrNotFound) {
		c.renderError(w, r, &si, http.StatusNotFound, "No such script run", fmt.Sprintf("There are no tasks in group %q.", id))
		return
	}
	if err != nil {
		c.serverError(w, r, &si, err)
		return
	}
	c.render(w, r, &si, http.StatusOK, "group", "script", g)
}

func (c *Console) groupFragment(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	g, err := c.group(r.Context(), si, r.PathValue("group"))
	if err != nil {
		httpapi.Fail(w, c.log, err)
		return
	}
	c.renderFragment(w, "group-body", g)
}

// cancelGroup cancels every unfinished task of a group, as "tendril-server
// task cancel --group" does.
func (c *Console) cancelGroup(w http.ResponseWriter, r *http.Request, si sessionInfo) {
	id := r.PathValue("group")
	back := "/script/" + url.PathEscape(id)
	// Only the tasks the caller may see: a deployer cancels its
	// environments' part of a run.
	ts, err := c.scope(si).Tasks(r.Context(), api.TaskFilter{Group: id, Limit: 1000})
	if err != nil {
		c.done(w, r, si, back, c.failed("Cancel all", err))
		return
	}
	var sent []string
	var failed []string
	for _, t := range ts {
		if t.Finished() {
			continue
		}
		if _, err := c.co.CancelTask(r.Context(), t.ID); err != nil {
			failed = append(failed, c.failed("Cancel on "+t.Agent, err).Text)
			continue
		}
		sent = append(sent, t.Agent)
	}
	// Named in order, whatever order the tasks were listed in (created
	// at once, they tie).
	slices.Sort(sent)
	switch {
	case len(failed) > 0:
		if len(sent) > 0 {
			failed = append([]string{"Cancel sent to the tasks on " + strings.Join(sent, ", ") + "."}, failed...)
		}
		c.done(w, r, si, back, consoleFlash{Kind: "error", Text: strings.Join(failed, "\n")})
	case len(sent) == 0:
		c.done(w, r, si, back, consoleFlash{Kind: "ok", Text: "Every task of this run had already finished."})
	default:
		c.done(w, r, si, back, consoleFlash{Kind: "ok", Text: "Cancel sent to the tasks on " + strings.Join(sent, ", ") + "."})
	}
}
