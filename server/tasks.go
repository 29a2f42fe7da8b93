package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/idempotency"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

func taskView(t store.Task) api.TaskView {
	v := api.TaskView{ID: t.ID, Group: t.Group, Agent: t.AgentName, Args: t.Args, Calamari: t.Calamari, File: t.FileName,
		Isolation: t.Isolation, Locks: t.Locks,
		State: t.State, ExitCode: t.ExitCode, Error: t.Error, CreatedAt: t.CreatedAt, LogLines: t.LastSeq,
		Variables: variableViews(t), Outputs: t.Outputs, LostLines: t.LostLines, LostReason: t.LostReason}
	for _, a := range t.Artifacts {
		v.Artifacts = append(v.Artifacts, api.ArtifactView{Name: a.Name, Size: a.Size, SHA256: a.SHA256})
	}
	if v.Isolation == "" {
		v.Isolation = api.IsolationFull
	}
	if !t.StartedAt.IsZero() {
		v.StartedAt = &t.StartedAt
	}
	if !t.FinishedAt.IsZero() {
		v.FinishedAt = &t.FinishedAt
	}
	return v
}

// filesDir holds uploaded files by SHA-256.
func (s *Server) filesDir() string { return filepath.Join(s.cfg.DataDir, "files") }

var fileNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// CreateTasks validates a request and starts one task per target agent.
// Every target must be connected and the Calamari version must exist: a
// request that cannot run everywhere is refused whole, with the reason.
func (s *Server) CreateTasks(ctx context.Context, req api.TaskRequest) ([]api.TaskView, error) {
	if len(req.Args) == 0 {
		return nil, kind.Errorf(kind.ErrBadRequest, "no Calamari arguments given (e.g. run-script --inline 'echo hello')")
	}
	isolation, locks, err := taskIsolation(req)
	if err != nil {
		return nil, err
	}
	plain, sensitive, err := s.taskVariables(ctx, req)
	if err != nil {
		return nil, err
	}
	done, err := s.maint.Begin()
	if err != nil {
		return nil, err
	}
	defer done()
	agents, err := s.taskAgents(ctx, req)
	if err != nil {
		return nil, err
	}
	for _, a := range agents {
		if s.upgradeRequired(a) {
			proto := a.Protocol
			if as := s.sessions.get(a.ID); as != nil {
				proto = as.protocol
			}
			return nil, kind.Errorf(kind.ErrConflict, "agent %s must be upgraded before it can run tasks (its protocol %d is below this coordinator's minimum %d); run: tendril-server upgrade --environment %s",
				a.Name, proto, s.cfg.ProtocolMin, a.Environment)
		}
	}
	var notConnected []string
	for _, a := range agents {
		if !s.connectedAnywhere(a) {
			notConnected = append(notConnected, a.Name)
		}
	}
	if len(notConnected) > 0 {
		return nil, kind.Errorf(kind.ErrNotConnected, "%v not connected to this coordinator; nothing was started", notConnected)
	}
	if len(plain)+len(sensitive) > 0 {
		var old []string
		for _, a := range agents {
			if as := s.sessions.get(a.ID); as != nil && !as.variables {
				old = append(old, a.Name)
			}
		}
		if len(old) > 0 {
			who := "the agent on " + old[0] + " is"
			if len(old) > 1 {
				who = "the agents on " + strings.Join(old, ", ") + " are"
			}
			return nil, kind.Errorf(kind.ErrConflict, "%s too old for task variables; nothing was started (upgrade with: tendril-server upgrade --agent %s)", who, old[0])
		}
	}
	var bundle store.Bundle
	if req.Calamari == "" {
		if bundle, err = s.latestCalamari(ctx); err != nil {
			return nil, err
		}
		if bundle.Version == "" {
			return nil, kind.Errorf(kind.ErrBadRequest, "no Calamari bundle has been uploaded; run \"tendril-server calamari push FILE\" first")
		}
	} else if bundle, err = s.store.Bundle(ctx, req.Calamari); errors.Is(err, store.ErrNotFound) {
		return nil, kind.Errorf(store.ErrNotFound, "Calamari version %s does not exist on this coordinator (see \"tendril-server calamari list\")", req.Calamari)
	} else if err != nil {
		return nil, err
	}
	var fileName, fileSum string
	if req.File != nil {
		if !fileNamePattern.MatchString(req.File.Name) {
			return nil, kind.Errorf(kind.ErrBadRequest, "file name %q: use a plain name of letters, digits, '.', '_', '+' or '-'", req.File.Name)
		}
		if !sha256Pattern.MatchString(req.File.SHA256) || !s.uploads.Have(ctx, cluster.FileBlob(req.File.SHA256), filepath.Join(s.filesDir(), req.File.SHA256)) {
			return nil, kind.Errorf(store.ErrNotFound, "no uploaded file with SHA-256 %q (upload it with POST /api/files)", req.File.SHA256)
		}
		fileName, fileSum = req.File.Name, req.File.SHA256
	}
	// Under an Idempotency-Key the group is the key's ref: a retry of a
	// request whose answer was lost finds its tasks by it.
	group := idempotency.Ref(ctx)
	if group == "" {
		group = uuid.NewString()
	}
	now := time.Now().UTC()
	// The tasks whose agents this node holds are claimed by it as they
	// are stored, rather than by a claim after: one synced write less
	// before the start. The others are for the node that holds their
	// agent, or for a sweep.
	claim := !s.members.Draining()
	tasks := make([]store.Task, len(agents))
	for i, a := range agents {
		id := uuid.NewString()
		tasks[i] = store.Task{ID: id, Group: group, AgentID: a.ID, AgentName: a.Name, Args: req.Args,
			Calamari: bundle.Version, FileName: fileName, FileSHA256: fileSum, Isolation: isolation, Locks: locks,
			Variables: plain, Sensitive: s.sealVariables(id, sensitive),
			State: api.TaskQueued, CreatedAt: now}
		if claim && s.sessions.get(a.ID) != nil {
			tasks[i].Node = s.nodeID()
		}
	}
	if err := s.store.CreateTasks(ctx, tasks); err != nil {
		return nil, err
	}
	views := make([]api.TaskView, len(tasks))
	elsewhere := false
	for i, t := range tasks {
		views[i] = taskView(t)
		if t.Node == "" {
			elsewhere = true
			continue
		}
		s.startTask(t, &bundle)
	}
	if elsewhere {
		s.notifyCluster(cluster.NotifyTasks)
	}
	s.log.Info("tasks created", zap.String("group", group), zap.Int("agents", len(tasks)), zap.Strings("args", req.Args))
	return views, nil
}

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// taskIsolation checks a request's isolation and locks, and returns them
// as stored: the isolation spelt out, the locks sorted without
// duplicates.
func taskIsolation(req api.TaskRequest) (string, []string, error) {
	if err := api.ValidateIsolation(req.Isolation, req.Locks); err != nil {
		return "", nil, kind.Errorf(kind.ErrBadRequest, "%v", err)
	}
	isolation := req.Isolation
	if isolation == "" {
		isolation = api.IsolationFull
	}
	var locks []string
	if len(req.Locks) > 0 {
		locks = slices.Compact(slices.Sorted(slices.Values(req.Locks)))
	}
	return isolation, locks, nil
}

// Task returns one task.
func (s *Server) Task(ctx context.Context, id string) (api.TaskView, error) {
	t, err := s.store.Task(ctx, id)
	if err != nil {
		return api.TaskView{}, err
	}
	return s.describeTask(ctx, t)
}

// describeTask is a task's view with what only this coordinator knows of
// it: what a queued task waits for on its agent, and what holds an
// unfinished one up.
func (s *Server) describeTask(ctx context.Context, t store.Task) (api.TaskView, error) {
	v := taskView(t)
	if v.Finished() {
		return v, nil
	}
	if err := s.addWaitingFor(ctx, &v); err != nil {
		return api.TaskView{}, err
	}
	v.StateReason = s.stateReason(ctx, t)
	return v, nil
}

// stateReason says what keeps an unfinished task in its state and what
// ends it, "" when nothing holds it up.
func (s *Server) stateReason(ctx context.Context, t store.Task) string {
	if run := s.tasks.get(t.ID); run != nil {
		// Its runner is here: it knows best.
		return run.reason()
	}
	if s.sessions.get(t.AgentID) != nil {
		return "" // its runner is starting, or a sweep claims it in a moment
	}
	a, err := s.store.AgentByID(ctx, t.AgentID)
	if err != nil {
		return ""
	}
	if !s.connectedAnywhere(a) {
		if t.State == api.TaskQueued {
			return fmt.Sprintf("agent %s is not connected: the task starts once it connects again (cancel the task to give it up)", t.AgentName)
		}
		return fmt.Sprintf("agent %s is not connected: the task goes on there, and its log and result are collected once it connects again (deleting the agent fails the task)", t.AgentName)
	}
	if t.Node != "" && t.Node != s.nodeID() {
		if _, alive := s.nodeAlive(t.Node); !alive {
			return "its coordinator node stopped answering: the node that holds its agent takes it over once that node counts as dead"
		}
	}
	return ""
}

// waitLines is how much of a queued task's log is read for what it waits
// for: a queued task's log holds the coordinator's few lines and the
// agent's waiting lines, one per task it waited for.
const waitLines = 500

// addWaitingFor fills in what a queued task waits for on its agent: the
// agent's latest line saying so.
func (s *Server) addWaitingFor(ctx context.Context, v *api.TaskView) error {
	if v.State != api.TaskQueued {
		return nil
	}
	lines, err := s.store.TaskLogs(ctx, v.ID, max(1, v.LogLines-waitLines+1), waitLines)
	if err != nil {
		return fmt.Errorf("task %s: what it waits for: %w", v.ID, err)
	}
	v.WaitingFor = waitingLine(lines)
	return nil
}

// waitingLine is the latest of lines in which the agent says which task a
// queued task waits for ("waiting for task ID (NAME) to finish"), "" if
// there is none.
func waitingLine(lines []store.LogLine) string {
	for _, l := range slices.Backward(lines) {
		if l.Stream == "agent" && strings.HasPrefix(l.Text, "waiting for ") {
			return l.Text
		}
	}
	return ""
}

// Tasks lists tasks, newest first. An unknown agent is an error wrapping
// kind.ErrNotFound.
func (s *Server) Tasks(ctx context.Context, q api.TaskFilter) ([]api.TaskView, error) {
	f := store.TaskFilter{Group: q.Group, Limit: q.Limit}
	if q.Agent != "" {
		a, err := s.store.AgentByName(ctx, q.Agent)
		if err != nil {
			return nil, fmt.Errorf("agent %q: %w", q.Agent, err)
		}
		f.AgentID = a.ID
	}
	ts, err := s.store.ListTasks(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]api.TaskView, len(ts))
	for i, t := range ts {
		if out[i], err = s.describeTask(ctx, t); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TaskLog returns up to limit lines of a task's log from line from on.
func (s *Server) TaskLog(ctx context.Context, id string, from int64, limit int) ([]api.LogLineView, error) {
	lines, err := s.store.TaskLogs(ctx, id, from, limit)
	if err != nil {
		return nil, err
	}
	out := make([]api.LogLineView, len(lines))
	for i, l := range lines {
		out[i] = api.LogLineView{Seq: l.Seq, Time: l.Time, Stream: l.Stream, Text: l.Text}
	}
	return out, nil
}

// TaskChanged returns a channel closed at the task's next change: a new
// log line or a new state. A reader takes it before reading, so that a
// change between the read and the wait is never missed, and calls
// ForgetTask once the task is finished and read to the end.
func (s *Server) TaskChanged(id string) <-chan struct{} { return s.tasks.changed(id) }

// ForgetTask drops the change signals of a finished task: it never changes
// again, and waking any other reader only makes it re-read and finish too.
func (s *Server) ForgetTask(id string) { s.tasks.notify(id) }

// taskRuns tracks the tasks this coordinator is driving, so each has one
// runner, can be cancelled before it reaches the agent, and can be
// abandoned when its agent is deleted.
type taskRuns struct {
	// starts orders the starts of each agent's tasks.
	starts startQueues

	mu   sync.Mutex
	runs map[string]*taskRun
	// watch is closed and replaced whenever a task's log or state changes,
	// waking every reader following it.
	watch map[string]chan struct{}
}

type taskRun struct {
	agentID     string
	cancelStart context.CancelFunc // stops the task before it reaches the agent
	abandon     context.CancelFunc // stops the runner altogether
	// retry wakes a runner waiting to try again (a cancellation asks for
	// the next try at once).
	retry chan struct{}

	mu sync.Mutex
	// why says what holds the task up while the runner waits to try
	// again, "" while nothing does: TaskView.StateReason. failures
	// counts the attempts that failed so, since the runner started.
	why      string
	failures int
}

func newTaskRun(agentID string, cancelStart, abandon context.CancelFunc) *taskRun {
	return &taskRun{agentID: agentID, cancelStart: cancelStart, abandon: abandon, retry: make(chan struct{}, 1)}
}

// kick asks a waiting runner to try again now.
func (r *taskRun) kick() {
	select {
	case r.retry <- struct{}{}:
	default:
	}
}

// held records what holds the task up, "" once nothing does.
func (r *taskRun) held(why string) {
	r.mu.Lock()
	r.why = why
	if why != "" {
		r.failures++
	}
	r.mu.Unlock()
}

func (r *taskRun) reason() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.why
}

// A runner that fails for a reason that may pass (its database, its data
// folder, the agent's session) tries again after a wait that doubles
// from taskRetryMin up to taskRetryMax, with jitter so that many tasks
// do not come back at the database at once.
const (
	taskRetryMin = 500 * time.Millisecond
	taskRetryMax = 10 * time.Second
)

func taskRetryWait(attempt int) time.Duration {
	d := min(taskRetryMin<<min(attempt, 10), taskRetryMax)
	return d/2 + rand.N(d/2+1)
}

// pause waits before a runner's next attempt: the backoff of attempt, cut
// short by a retry asked for, or by the end of the agent's session (as,
// if not nil). It reports false once ctx is done.
func (s *Server) pause(ctx context.Context, run *taskRun, as *agentSession, attempt int) bool {
	t := time.NewTimer(taskRetryWait(attempt))
	defer t.Stop()
	var gone <-chan struct{}
	if as != nil {
		gone = as.sess.CloseChan()
	}
	select {
	case <-t.C:
	case <-run.retry:
	case <-gone:
	case <-ctx.Done():
		return false
	}
	return true
}

// storeError is a failure of the coordinator's own storage (its database,
// its data folder), not of the agent or its session: the runner keeps
// the session and tries again until the store works.
type storeError struct {
	op  string
	err error
}

func (e *storeError) Error() string { return e.op + ": " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

func storeFailed(op string, err error) error {
	if err == nil {
		return nil
	}
	return &storeError{op: op, err: err}
}

// startQueues holds, per agent, the tasks waiting to be sent to it, in
// the order they were started.
type startQueues struct {
	mu sync.Mutex
	q  map[string][]*startTurn
}

// startTurn is one task's place in its agent's queue; ready is closed when
// it is first.
type startTurn struct {
	ready chan struct{}
	first bool
}

// join queues a task's start on agentID.
func (sq *startQueues) join(agentID string) *startTurn {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	if sq.q == nil {
		sq.q = make(map[string][]*startTurn)
	}
	t := &startTurn{ready: make(chan struct{})}
	sq.q[agentID] = append(sq.q[agentID], t)
	sq.wakeLocked(agentID)
	return t
}

// leave takes a task out of its agent's queue, wherever it is, and lets
// the next one go. It is idempotent.
func (sq *startQueues) leave(agentID string, t *startTurn) {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	q := sq.q[agentID]
	i := slices.Index(q, t)
	if i < 0 {
		return
	}
	q = slices.Delete(q, i, i+1)
	if len(q) == 0 {
		delete(sq.q, agentID)
		return
	}
	sq.q[agentID] = q
	sq.wakeLocked(agentID)
}

func (sq *startQueues) wakeLocked(agentID string) {
	if q := sq.q[agentID]; len(q) > 0 && !q[0].first {
		q[0].first = true
		close(q[0].ready)
	}
}

// changed returns a channel closed at the task's next change.
func (r *taskRuns) changed(id string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watch == nil {
		r.watch = make(map[string]chan struct{})
	}
	ch, ok := r.watch[id]
	if !ok {
		ch = make(chan struct{})
		r.watch[id] = ch
	}
	return ch
}

func (r *taskRuns) notify(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.watch[id]; ok {
		close(ch)
		delete(r.watch, id)
	}
}

func (r *taskRuns) get(id string) *taskRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[id]
}

// startTask runs the runner of a task this node claimed, unless one is
// already running. A fresh task is one this node has just created and
// claimed: t is as the store has it and fresh is its Calamari bundle
// (bundles never change), so the runner starts with them rather than
// read them back. fresh is nil for any other task.
func (s *Server) startTask(t store.Task, fresh *store.Bundle) {
	s.tasks.mu.Lock()
	if s.tasks.runs == nil {
		s.tasks.runs = make(map[string]*taskRun)
	}
	if _, running := s.tasks.runs[t.ID]; running {
		s.tasks.mu.Unlock()
		return
	}
	runCtx, abandon := context.WithCancel(s.ctx)
	startCtx, cancelStart := context.WithCancel(runCtx)
	run := newTaskRun(t.AgentID, cancelStart, abandon)
	s.tasks.runs[t.ID] = run
	// Joined here, in the order tasks are started, not in the order their
	// goroutines happen to run.
	turn := s.tasks.starts.join(t.AgentID)
	s.tasks.mu.Unlock()
	s.goFunc(func() {
		released := false
		defer func() {
			s.tasks.starts.leave(t.AgentID, turn)
			s.tasks.mu.Lock()
			delete(s.tasks.runs, t.ID)
			s.tasks.mu.Unlock()
			abandon()
			if released {
				// For the node the agent is connected to now, this one
				// included should the agent be back already.
				s.notifyCluster(cluster.NotifyTasks)
			}
			if s.members.Draining() {
				s.moveIdleAgents()
			}
		}()
		var first *store.Task
		if fresh != nil {
			first = &t
		}
		released = s.runTask(runCtx, startCtx, run, t.ID, first, fresh, turn)
	})
}

// taskLog writes the coordinator's own line into a task's log, for lines
// that say what happens; a line the task's record depends on goes
// through appendTaskLine, which returns its failure.
func (s *Server) taskLog(id, text string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 10*time.Second)
	defer cancel()
	if err := s.appendTaskLine(ctx, id, text); err != nil {
		s.log.Error("write task log failed", zap.String("task", id), zap.Error(err))
	}
}

// appendTaskLine writes the coordinator's own line into a task's log.
func (s *Server) appendTaskLine(ctx context.Context, id, text string) error {
	if _, err := s.store.AppendTaskLogs(ctx, id, []store.LogLine{{Stream: "coordinator", Text: text}}); err != nil {
		return storeFailed("store the task's log", err)
	}
	s.tasks.notify(id)
	return nil
}

// finishTask records a final state.
func (s *Server) finishTask(id, state string, exitCode int, errText string) error {
	return s.finishTaskWith(id, store.TaskUpdate{State: state, ExitCode: exitCode, Error: errText})
}

// finishTaskWith records a final state with what else the update says
// (outputs, artifacts, when it finished: now if not said).
func (s *Server) finishTaskWith(id string, u store.TaskUpdate) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 10*time.Second)
	defer cancel()
	if u.FinishedAt.IsZero() {
		u.FinishedAt = time.Now().UTC()
	}
	// Read first for the metrics: a task already final (a cancel racing
	// its end) is not counted twice, and its start gives its duration.
	before, berr := s.store.Task(ctx, id)
	if err := s.store.UpdateTask(ctx, id, u); err != nil {
		return storeFailed("record the task's result", err)
	}
	s.tasks.notify(id)
	if berr == nil && !before.Finished() {
		s.countEnd(before, u)
	}
	return nil
}

// countEnd counts the end u made of t, which was unfinished until then:
// the finished tasks by state and their durations.
func (s *Server) countEnd(t store.Task, u store.TaskUpdate) {
	s.metrics.TasksFinished.WithLabelValues(u.State).Inc()
	start := t.StartedAt
	if start.IsZero() {
		start = t.CreatedAt
	}
	s.metrics.TaskDuration.WithLabelValues(u.State).Observe(max(u.FinishedAt.Sub(start), 0).Seconds())
}

// endTask records a task's last line and final state, trying again while
// the store fails, until it works or ctx ends: a task the coordinator
// gives up on must not stay queued or running because its database was
// away for a moment.
func (s *Server) endTask(ctx context.Context, run *taskRun, id, line string, u store.TaskUpdate) {
	logged := false
	for attempt := 0; ; attempt++ {
		err := error(nil)
		if !logged {
			if err = s.appendTaskLine(ctx, id, line); err == nil {
				logged = true
			}
		}
		if err == nil {
			if err = s.finishTaskWith(id, u); err == nil {
				run.held("")
				return
			}
		}
		run.held(fmt.Sprintf("the task is %s, but the coordinator cannot record it yet (%v); it tries again", u.State, err))
		s.log.Warn("record a task's end failed; trying again", zap.String("task", id), zap.Int("attempt", attempt), zap.Error(err))
		if !s.pause(ctx, run, nil, attempt) {
			return
		}
	}
}

// runTask drives one task, claimed by this node, to its end: Calamari
// checked (and pushed), the file sent, the task started, its log
// collected until it finishes. When the agent's session ends the task is
// released (and it reports so): it keeps running on the agent, and
// whichever node the agent connects to next, this one or another,
// claims it and collects its log from where it stopped. startCtx ends
// when the operator cancels the task; runCtx when its agent is deleted or
// the coordinator stops, which leaves the task claimed by a stopped node,
// for another node, or the next run of this one, to take over.
//
// Whatever fails while the session lasts (this node's database or data
// folder, a request to the agent) is tried again with a growing wait,
// and run says meanwhile what holds the task up; what the agent refuses
// for good fails the task at once with the agent's reason. So a task
// never stays queued or running for a reason that has passed.
//
// turn orders the start: tasks on one agent reach it in the order this
// node started driving them, so that with isolation they run in the
// order they were created. first and bundle, if not nil, are the task as
// just created and its Calamari bundle: two store reads less before the
// start.
func (s *Server) runTask(runCtx, startCtx context.Context, run *taskRun, id string, first *store.Task, bundle *store.Bundle, turn *startTurn) (released bool) {
	log := s.log.With(zap.String("task", id))
	var t store.Task
	if first != nil {
		t = *first
	}
	for attempt := 0; first == nil; attempt++ {
		var err error
		if t, err = s.store.Task(runCtx, id); err == nil {
			break
		}
		if errors.Is(err, store.ErrNotFound) || runCtx.Err() != nil {
			log.Error("load task failed", zap.Error(err))
			return false
		}
		run.held(fmt.Sprintf("the coordinator cannot read the task from its database (%v); it tries again", err))
		log.Warn("load task failed; trying again", zap.Int("attempt", attempt), zap.Error(err))
		if !s.pause(runCtx, run, nil, attempt) {
			return false
		}
	}
	attempt := 0
	// notes are the lines saying the task started, kept from an attempt
	// that could not record them for the next: it finds the task started
	// on the agent already.
	var notes []store.LogLine
	for t.State == api.TaskQueued {
		if startCtx.Err() != nil {
			if runCtx.Err() == nil { // cancelled by the operator
				s.endTask(runCtx, run, id, "Task cancelled before it started", store.TaskUpdate{State: api.TaskCancelled, ExitCode: -1, Error: "cancelled"})
				// In case the start raced the cancellation to the agent.
				if as := s.sessions.get(t.AgentID); as != nil {
					cctx, cancel := context.WithTimeout(runCtx, 30*time.Second)
					protocol.CallSigned(cctx, as.sess, as.sign, protocol.TypeTaskCancel, protocol.TaskCancel{Ticket: id}, protocol.TypeAck, nil)
					cancel()
				}
			}
			return false
		}
		select {
		case <-turn.ready:
		case <-startCtx.Done():
			continue // the loop's next turn says why
		}
		as := s.sessions.get(t.AgentID)
		if as == nil {
			return s.releaseTask(id)
		}
		err := s.startOnAgent(startCtx, as, &t, bundle, &notes)
		switch {
		case err == nil:
			t.State = api.TaskRunning
			run.held("")
		case startCtx.Err() != nil:
			// The loop's next turn reports why.
		case errors.Is(err, errTaskRefused):
			s.endTask(runCtx, run, id, err.Error(), store.TaskUpdate{State: api.TaskFailed, ExitCode: -1, Error: err.Error()})
			return false
		case as.sess.IsClosed():
			log.Info("start task failed; the agent's session ended, the task starts on its next one", zap.Error(err))
			s.waitGone(startCtx, as)
		default:
			run.held(fmt.Sprintf("starting it on %s failed (%v); the coordinator tries again", t.AgentName, err))
			log.Warn("start task failed; trying again", zap.Int("attempt", attempt), zap.Error(err))
			s.pause(startCtx, run, as, attempt)
			attempt++
		}
	}
	// Started (or waiting on the agent): the next task may go.
	s.tasks.starts.leave(t.AgentID, turn)
	var c collected
	attempt = 0
	for {
		if runCtx.Err() != nil {
			return false // the coordinator is stopping or the task was abandoned
		}
		as := s.sessions.get(t.AgentID)
		if as == nil {
			run.held("")
			return s.releaseTask(id)
		}
		err := s.collectTask(runCtx, as, &t, &c)
		if err == nil {
			run.held("")
			log.Info("task finished", zap.String("agent", t.AgentName), zap.String("state", c.end.State), zap.Int("exit_code", c.end.ExitCode))
			return false
		}
		if errors.Is(err, errTakenOver) {
			log.Info("task taken over by another node before its end was recorded here", zap.String("agent", t.AgentName))
			return false
		}
		if runCtx.Err() != nil {
			return false
		}
		if as.sess.IsClosed() {
			run.held("")
			log.Info("lost the task's log stream; will resume when the agent is back", zap.Error(err))
			s.waitGone(runCtx, as)
			attempt = 0
			continue
		}
		if refusedByAgent(err) {
			// The agent no longer knows the task (its work folder was
			// removed, its home replaced): nothing more will come.
			msg := fmt.Sprintf("the agent on %s cannot give the task's log and result: %v", t.AgentName, err)
			s.endTask(runCtx, run, id, msg, store.TaskUpdate{State: api.TaskFailed, ExitCode: -1, Error: msg})
			return false
		}
		run.held(c.heldReason(t, err))
		log.Warn("could not collect the task's log and result; trying again", zap.Int("attempt", attempt), zap.Error(err))
		s.pause(runCtx, run, as, attempt)
		attempt++
	}
}

// collected is what a runner has of a task's end, kept across attempts.
type collected struct {
	// ended is set once the agent reported the end.
	ended bool
	end   protocol.TaskEnd
	// missing counts the agent's lines that never arrived: sequence
	// numbers skipped in what it sent, once stored.
	missing int64
}

// heldReason says what holds a task up after err, for TaskView.StateReason.
func (c *collected) heldReason(t store.Task, err error) string {
	var se *storeError
	isStore := errors.As(err, &se)
	switch {
	case c.ended && isStore:
		return fmt.Sprintf("the task %s on %s, but the coordinator cannot record it yet (%v); it tries again, and the agent keeps the log until then", c.end.State, t.AgentName, err)
	case isStore:
		return fmt.Sprintf("the coordinator cannot store the task's log (%v); it reads it again from the agent, from where it stopped, once it can", err)
	default:
		return fmt.Sprintf("the coordinator cannot collect the task's log from %s (%v); it tries again", t.AgentName, err)
	}
}

// collectTask follows the task's log to its end, collects its artifacts
// and records its end. Each step picks up where the last attempt left
// off: the log from the last line stored, the end as c has it.
func (s *Server) collectTask(ctx context.Context, as *agentSession, t *store.Task, c *collected) error {
	end, tailGap, err := s.followTask(ctx, as, t, &c.missing)
	if err != nil {
		return err
	}
	c.ended, c.end = true, end
	arts, err := s.collectArtifacts(ctx, as, *t, end.Artifacts)
	if err != nil {
		return err
	}
	t.Artifacts = arts // a second attempt fetches them no more
	lost, why := lostOutput(end, as.taskOutcome, c.missing+tailGap)
	// The last line with the final state, in one write: a reader stops
	// once the task is final, and finds the line there.
	line := fmt.Sprintf("Task %s (exit code %d)", end.State, end.ExitCode)
	if lost > 0 {
		line += fmt.Sprintf(", but %d %s of its output %s lost: %s", lost, plural(lost, "line", "lines"), plural(lost, "was", "were"), why)
	}
	u := store.TaskUpdate{State: end.State, ExitCode: end.ExitCode, Error: end.Error, Outputs: end.Outputs, Artifacts: arts,
		LostLines: lost, LostReason: why, Lines: []store.LogLine{{Stream: "coordinator", Text: line}}}
	if as.taskOutcome && !end.FinishedAt.IsZero() {
		u.FinishedAt = end.FinishedAt.UTC()
	}
	return s.recordEnd(t, u)
}

// recordEnd records the end the agent reported of a task this node
// drives: made only while the task is unfinished and still claimed by
// this node, in the same write as the end. Otherwise another node took
// it over (the agent reconnected to it) and records the end itself, as
// it reads it from the agent too; recordEnd reports errTakenOver then.
func (s *Server) recordEnd(t *store.Task, u store.TaskUpdate) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 10*time.Second)
	defer cancel()
	if u.FinishedAt.IsZero() {
		u.FinishedAt = time.Now().UTC()
	}
	u.IfNode = s.nodeID()
	err := s.store.UpdateTask(ctx, t.ID, u)
	if errors.Is(err, store.ErrNotClaimed) {
		return errTakenOver
	}
	if err != nil {
		return storeFailed("record the task's result", err)
	}
	s.tasks.notify(t.ID)
	// Counted once: the write was made only while the task was
	// unfinished.
	s.countEnd(*t, u)
	return nil
}

// lostOutput adds up the output a task lost: what the agent says it lost
// (agents with protocol.FeatureTaskOutcome), and what it no longer had
// when the coordinator came for it.
func lostOutput(end protocol.TaskEnd, outcome bool, missing int64) (int64, string) {
	var n int64
	var why []string
	if outcome && end.LostLines > 0 {
		n += end.LostLines
		why = append(why, cmp.Or(end.LostReason, "the agent lost them"))
	}
	if missing > 0 {
		n += missing
		why = append(why, fmt.Sprintf("%d never reached the coordinator: the agent no longer had them when it came for them", missing))
	}
	return n, strings.Join(why, "; ")
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// errTakenOver says that another node took the task over (the agent
// reconnected to it) and records its end, which it reads from the agent
// too.
var errTakenOver = errors.New("task taken over by another node")

// abandonAgentTasks fails the unfinished tasks of a deleted agent: no one
// will ever collect their result.
func (s *Server) abandonAgentTasks(ctx context.Context, agentID string) {
	ts, err := s.store.ListTasks(ctx, store.TaskFilter{AgentID: agentID, Unfinished: true, Limit: 1000})
	if err != nil {
		s.log.Error("list tasks of deleted agent failed", zap.Error(err))
		return
	}
	for _, t := range ts {
		if run := s.tasks.get(t.ID); run != nil {
			run.abandon()
		}
		s.taskLog(t.ID, "The agent was deleted; the task's result will never be known")
		if err := s.finishTask(t.ID, api.TaskFailed, -1, "agent deleted"); err != nil {
			s.log.Error("fail a deleted agent's task failed", zap.String("task", t.ID), zap.Error(err))
		}
	}
}

// refusedByAgent reports whether the agent refused a request for a reason
// that sending it again on this session will not change: any answer but
// "unavailable" (the agent is stopping or upgrading itself, and its next
// session may take the request). The request itself (bad request), its
// signature (unauthorized), or the agent's own trouble (internal: a full
// disk, say) fail the task at once with the agent's reason rather than
// leave it waiting for a reconnect that may never come.
func refusedByAgent(err error) bool {
	var re *protocol.RemoteError
	return errors.As(err, &re) && re.Code != protocol.CodeUnavailable
}

// errTaskRefused marks failures that retrying cannot fix.
var errTaskRefused = errors.New("task refused")

// startOnAgent ensures Calamari, sends the file and starts the task.
// known, if not nil, is the task's Calamari bundle, already read. notes
// holds the lines saying the task started until they are stored.
func (s *Server) startOnAgent(ctx context.Context, as *agentSession, t *store.Task, known *store.Bundle, notes *[]store.LogLine) error {
	if as.upgradeOnly {
		return kind.Errorf(errTaskRefused, "agent %s must be upgraded before it can run tasks (its protocol is below this coordinator's minimum)", as.name)
	}
	vars, err := s.wireVariables(*t)
	if err != nil {
		return kind.Errorf(errTaskRefused, "%v", err)
	}
	if len(vars) > 0 && !as.variables {
		return kind.Errorf(errTaskRefused, "the agent on %s is too old for task variables; upgrade it (tendril-server upgrade --agent %s) and run the task again", as.name, as.name)
	}
	var b store.Bundle
	if known != nil {
		b = *known
	} else if b, err = s.store.Bundle(ctx, t.Calamari); errors.Is(err, store.ErrNotFound) {
		return kind.Errorf(errTaskRefused, "Calamari %s: %v", t.Calamari, err)
	} else if err != nil {
		return storeFailed("read the task's Calamari bundle", err)
	}
	ensure := func() error {
		if _, err := s.ensureCalamari(ctx, as, b, func(line string) { s.taskLog(t.ID, line) }); err != nil {
			if refusedByAgent(err) {
				return kind.Errorf(errTaskRefused, "installing Calamari %s on %s failed: %v", b.Version, as.name, err)
			}
			return err
		}
		return nil
	}
	if !as.startsCalamari {
		// An older agent answers a start whose Calamari it lacks like
		// any bad request: check, and push if need be, first.
		if err := ensure(); err != nil {
			return err
		}
	}
	if t.FileName != "" {
		s.taskLog(t.ID, fmt.Sprintf("Sending %s to %s", t.FileName, as.name))
		path := filepath.Join(s.filesDir(), t.FileSHA256)
		if err := s.uploads.Fetch(ctx, cluster.FileBlob(t.FileSHA256), path, t.FileSHA256); err != nil {
			return kind.Errorf(errTaskRefused, "file %s: %v", t.FileName, err)
		}
		f, err := os.Open(path)
		if err != nil {
			return kind.Errorf(errTaskRefused, "file %s: %v", t.FileName, err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		hdr := protocol.FilePush{Ticket: t.ID, Name: t.FileName, File: protocol.Transfer{Size: st.Size(), SHA256: t.FileSHA256}}
		_, err = protocol.PushSigned(ctx, as.sess, as.sign, protocol.TypeFilePush, hdr, f, st.Size(), protocol.TypeAck, nil, nil)
		f.Close()
		if refusedByAgent(err) {
			return kind.Errorf(errTaskRefused, "sending %s to %s: %v", t.FileName, as.name, err)
		}
		if err != nil {
			return fmt.Errorf("send %s to %s: %w", t.FileName, as.name, err)
		}
	}
	var started protocol.TaskStarted
	req := protocol.TaskStart{Ticket: t.ID, Calamari: t.Calamari, Args: t.Args,
		Isolation: t.Isolation, Locks: t.Locks, Name: taskName(*t), Variables: vars,
		ReportMissingCalamari: as.startsCalamari}
	call := func() error {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.HealthTimeout+30*time.Second)
		defer cancel()
		return protocol.CallSigned(cctx, as.sess, as.sign, protocol.TypeTaskStart, req, protocol.TypeTaskStarted, &started)
	}
	err = call()
	if protocol.IsCode(err, protocol.CodeCalamariMissing) {
		// The agent verified the version as it started the task, in
		// place of the CalamariCheck round trip older agents get first
		// (1.2 ms of a 15 ms task round trip), and kept nothing of the
		// task: push the version, then start again.
		if err := ensure(); err != nil {
			return err
		}
		err = call()
	}
	if refusedByAgent(err) {
		return kind.Errorf(errTaskRefused, "%v", err)
	}
	if err != nil {
		return err
	}
	if !started.Existing {
		*notes = []store.LogLine{{Stream: "coordinator", Text: fmt.Sprintf("Started on %s: calamari %s", as.name, t.Calamari)}}
		if !as.isolates {
			// Run rather than refuse, so that nothing breaks while the
			// agents are being upgraded; the log says what was lost.
			*notes = append(*notes, store.LogLine{Stream: "coordinator",
				Text: fmt.Sprintf("The agent on %s is too old to isolate tasks: this one runs at once, whatever else runs there (isolation and locks need a newer agent)", as.name)})
		}
	}
	if started.State == protocol.TaskQueued {
		// It waits on the agent for its turn; following it tells when it
		// runs.
		if len(*notes) > 0 {
			if _, err := s.store.AppendTaskLogs(context.WithoutCancel(ctx), t.ID, *notes); err != nil {
				s.log.Error("write task log failed", zap.String("task", t.ID), zap.Error(err))
			}
			*notes = nil
			s.tasks.notify(t.ID)
		}
		return nil
	}
	// The lines and the state in one write: each write is a transaction
	// synced to disk, and this one runs beside the task's process.
	startedAt := time.Now().UTC()
	if err := s.store.UpdateTask(ctx, t.ID, store.TaskUpdate{State: api.TaskRunning, StartedAt: startedAt, Lines: *notes}); err != nil {
		return storeFailed("record that the task started", err)
	}
	t.StartedAt = startedAt // for the task's duration, once it ends
	*notes = nil
	s.metrics.TasksStarted.Inc()
	s.tasks.notify(t.ID)
	return nil
}

// taskName says what a task runs, for the log of a task that waits for
// it on the agent: Calamari's first arguments, shortened.
func taskName(t store.Task) string {
	const maxName = 60
	name := strings.Join(t.Args, " ")
	if len(name) > maxName {
		name = strings.ToValidUTF8(name[:maxName], "") + "..."
	}
	return name
}

// followTask collects the task's log from where the store left off until
// the agent reports the end. Sequence numbers the agent skipped are added
// to missing once the lines after them are stored; tailGap counts those
// between the last line it sent and the last it numbered.
func (s *Server) followTask(ctx context.Context, as *agentSession, t *store.Task, missing *int64) (end protocol.TaskEnd, tailGap int64, err error) {
	cur, err := s.store.Task(ctx, t.ID)
	if err != nil {
		return protocol.TaskEnd{}, 0, storeFailed("read the task", err)
	}
	st, err := as.sess.OpenStream()
	if err != nil {
		return protocol.TaskEnd{}, 0, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	defer stop()
	next := cur.AgentSeq + 1
	if err := protocol.WriteFrame(st, protocol.TypeTaskFollow, protocol.TaskFollow{Ticket: t.ID, From: next}); err != nil {
		return protocol.TaskEnd{}, 0, err
	}
	for {
		f, err := protocol.ReadFrame(st, 0)
		if err != nil {
			return protocol.TaskEnd{}, 0, err
		}
		switch f.Type {
		case protocol.TypeTaskLog:
			var tl protocol.TaskLog
			if err := f.Decode(&tl); err != nil {
				return protocol.TaskEnd{}, 0, err
			}
			lines := make([]store.LogLine, len(tl.Entries))
			var skipped int64
			for i, e := range tl.Entries {
				lines[i] = store.LogLine{AgentSeq: e.Seq, Time: e.Time, Stream: e.Stream, Text: e.Text}
				if e.Seq > next {
					skipped += e.Seq - next
				}
				next = max(next, e.Seq+1)
			}
			if _, err := s.store.AppendTaskLogs(context.WithoutCancel(ctx), t.ID, lines); err != nil {
				return protocol.TaskEnd{}, 0, storeFailed("store the task's log", err)
			}
			*missing += skipped
			if tl.State == protocol.TaskRunning && cur.State == api.TaskQueued {
				// The task waited on the agent for its turn, and runs now.
				startedAt := time.Now().UTC()
				if err := s.store.UpdateTask(context.WithoutCancel(ctx), t.ID, store.TaskUpdate{State: api.TaskRunning, StartedAt: startedAt}); err != nil {
					return protocol.TaskEnd{}, 0, storeFailed("record that the task started", err)
				}
				t.StartedAt = startedAt
				s.metrics.TasksStarted.Inc()
				cur.State = api.TaskRunning
			}
			s.tasks.notify(t.ID)
		case protocol.TypeTaskEnd:
			var end protocol.TaskEnd
			if err := f.Decode(&end); err != nil {
				return protocol.TaskEnd{}, 0, err
			}
			if end.LastSeq >= next {
				tailGap = end.LastSeq - next + 1
			}
			return end, tailGap, nil
		default:
			return protocol.TaskEnd{}, 0, protocol.DecodeReply(f, protocol.TypeTaskLog, nil)
		}
	}
}

// CancelTask stops a task: before it reaches the agent it never starts;
// after, the agent kills its whole process tree. The node that drives the
// task, or holds its agent's session, does the stopping.
func (s *Server) CancelTask(ctx context.Context, id string) (api.TaskView, error) {
	t, err := s.store.Task(ctx, id)
	if err != nil {
		return api.TaskView{}, err
	}
	if t.Finished() {
		return api.TaskView{}, kind.Errorf(kind.ErrConflict, "task %s already %s", id, t.State)
	}
	me := s.nodeID()
	if t.State == api.TaskQueued && s.tasks.get(id) == nil {
		// No runner here. Unless a live node drives it, take it so that
		// no node starts it, and record its end.
		if _, alive := s.nodeAlive(t.Node); t.Node == "" || t.Node == me || !alive {
			ok, err := s.store.ClaimTask(ctx, id, t.Node, me)
			if err != nil {
				return api.TaskView{}, fmt.Errorf("cancel task %s: %w", id, err)
			}
			if ok {
				s.taskLog(id, "Cancellation requested")
				if err := s.appendTaskLine(ctx, id, "Task cancelled before it started"); err != nil {
					return api.TaskView{}, fmt.Errorf("cancel task %s: %w", id, err)
				}
				if err := s.finishTask(id, api.TaskCancelled, -1, "cancelled"); err != nil {
					return api.TaskView{}, fmt.Errorf("cancel task %s: %w", id, err)
				}
				// It may have reached its agent and wait there for its
				// turn (its driver died): it must never run.
				if as := s.sessions.get(t.AgentID); as != nil {
					cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					protocol.CallSigned(cctx, as.sess, as.sign, protocol.TypeTaskCancel, protocol.TaskCancel{Ticket: id}, protocol.TypeAck, nil)
					cancel()
				}
				return s.Task(ctx, id)
			}
			if t, err = s.store.Task(ctx, id); err != nil { // claimed meanwhile
				return api.TaskView{}, err
			}
		}
	}
	if run := s.tasks.get(id); run != nil {
		if t.State == api.TaskQueued {
			run.cancelStart()
		}
		// A runner waiting to try again (its database was away, say)
		// tries now: the task may be over on the agent already.
		run.kick()
	}
	if as := s.sessions.get(t.AgentID); as != nil {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := protocol.CallSigned(cctx, as.sess, as.sign, protocol.TypeTaskCancel, protocol.TaskCancel{Ticket: id}, protocol.TypeAck, nil)
		if err != nil && !protocol.IsCode(err, protocol.CodeBadRequest) { // BadRequest: not started there yet
			return api.TaskView{}, fmt.Errorf("cancel task %s on %s: %w", id, t.AgentName, err)
		}
	} else {
		a, err := s.store.AgentByID(ctx, t.AgentID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return api.TaskView{}, fmt.Errorf("cancel task %s: %w", id, err)
		}
		if t.State == api.TaskRunning && (err != nil || !s.connectedAnywhere(a)) {
			return api.TaskView{}, kind.Errorf(kind.ErrNotConnected, "agent %s is not connected; the task cannot be cancelled until it is back", t.AgentName)
		}
		// The node that holds the agent, or drives the task, stops it.
		s.notifyCluster(cluster.NotifyCancel, id)
	}
	s.taskLog(id, "Cancellation requested")
	return s.Task(ctx, id)
}

// waitGone waits until the session has ended (or ctx is done), so the next
// attempt uses the agent's next session.
func (s *Server) waitGone(ctx context.Context, as *agentSession) {
	select {
	case <-as.sess.CloseChan():
	case <-ctx.Done():
	}
}
