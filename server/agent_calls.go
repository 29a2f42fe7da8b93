package server

// Any node answers for any agent. What needs an agent's session (a health
// check, a Calamari update, diagnostics, and whatever per-agent action
// comes next) can only be done by the node holding that session. Asked
// through another node, the request becomes a call in the database
// addressed to the holder (store.NodeCall): the holder takes it, does it
// over its session and writes its answer; the node asked waits for the
// answer and gives it as its own. A call is never passed on: the holder
// does it or answers that it holds no session for the agent, and the node
// that asked decides again from the agent's record, which says where the
// agent went. ARCHITECTURE.md says why calls go through the database
// rather than HTTP between the nodes.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/diagnostics"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// Per-agent actions, as calls between nodes name them.
const (
	actionHealthCheck    = "health-check"
	actionCalamariUpdate = "calamari-update"
	actionDiagnostics    = "diagnostics"
)

const (
	// callPoll is how often a node waiting on a call reads it again, in
	// case the notification of its answer is lost.
	callPoll = 250 * time.Millisecond
	// callHops bounds how often a node asks again after the node it asked
	// no longer held the agent's session.
	callHops = 3
	// callRetention is how long a call, and the file it made, are kept
	// once their asker went away without deleting them.
	callRetention = time.Hour
	// callGrace is how long, beyond the action's own bound, a node waits
	// for a node that took its call and still beats to answer.
	callGrace = time.Minute
)

// errNoSession means the node asked holds no session for the agent: it
// left, or moved to another node since the call was made.
var errNoSession = fmt.Errorf("%w: no session on the node asked", kind.ErrNotConnected)

// agentAction is one per-agent action.
type agentAction struct {
	// timeout bounds the action where the session is.
	timeout time.Duration
	// file says the action writes a file, which travels between nodes as
	// the blob cluster.CallBlob(call ID).
	file bool
	// run does the action over as with its JSON args, writes its file
	// (if it makes one) to path, and returns its result, which is encoded
	// as JSON.
	run func(ctx context.Context, as *agentSession, args json.RawMessage, path string) (any, error)
}

// agentAction returns the named action.
func (s *Server) agentAction(name string) (agentAction, bool) {
	switch name {
	case actionHealthCheck:
		return agentAction{timeout: s.cfg.HealthTimeout + time.Minute, run: s.healthCheckAction}, true
	case actionCalamariUpdate:
		return agentAction{timeout: 30 * time.Minute, run: s.calamariUpdateAction}, true
	case actionDiagnostics:
		return agentAction{timeout: 4 * time.Minute, file: true, run: s.diagnosticsAction}, true
	}
	return agentAction{}, false
}

// atHolder does the named action for agent a where its session is: here,
// or on the node holding it, asked through the database. args is the
// action's input; out, if not nil, receives its result; path, for an
// action that writes a file, receives the file. An agent connected to no
// live node is an error wrapping kind.ErrNotConnected; a node holding it
// that does not take the call within Config.NodeAnswerTimeout, or stops
// beating before it answers, one wrapping kind.ErrNoAnswer. Errors of the
// action itself keep their kind across nodes.
func (s *Server) atHolder(ctx context.Context, a store.Agent, action string, args, out any, path string) error {
	act, ok := s.agentAction(action)
	if !ok {
		return fmt.Errorf("%s for agent %s: no such action", action, a.Name)
	}
	in, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("%s for agent %s: %w", action, a.Name, err)
	}
	for hop := 1; ; hop++ {
		if as := s.sessions.get(a.ID); as != nil {
			return s.runHere(ctx, act, as, in, out, path)
		}
		err := s.askHolder(ctx, a, action, act, in, out, path)
		if !errors.Is(err, errNoSession) || hop == callHops {
			return err
		}
		// The node asked no longer held the session: the record says
		// where the agent went, if it is connected anywhere.
		now, rerr := s.store.AgentByID(ctx, a.ID)
		if rerr != nil {
			return fmt.Errorf("%s for agent %s: %w", action, a.Name, rerr)
		}
		if now.Node == a.Node && s.sessions.get(a.ID) == nil {
			return err
		}
		a = now
	}
}

// runHere does an action over a session of this node.
func (s *Server) runHere(ctx context.Context, act agentAction, as *agentSession, args json.RawMessage, out any, path string) error {
	ctx, cancel := context.WithTimeout(ctx, act.timeout)
	defer cancel()
	res, err := act.run(ctx, as, args, path)
	if err != nil || out == nil {
		return err
	}
	b, err := json.Marshal(res)
	if err == nil {
		err = json.Unmarshal(b, out)
	}
	return err
}

// askHolder asks the node that holds a's session, as a's record says, to
// do the action, and waits for its answer.
func (s *Server) askHolder(ctx context.Context, a store.Agent, action string, act agentAction, args json.RawMessage, out any, path string) error {
	if a.Node == "" || a.Node == s.nodeID() {
		return kind.Errorf(kind.ErrNotConnected, "agent %s is not connected", a.Name)
	}
	// Read now: the node may have died since the last heartbeat read.
	if _, err := s.members.Refresh(ctx); err != nil {
		return fmt.Errorf("%s for agent %s: %w", action, a.Name, err)
	}
	n, known := s.members.Node(a.Node)
	switch {
	case !known:
		return kind.Errorf(kind.ErrNotConnected, "agent %s is not connected: the coordinator node that held its session is gone", a.Name)
	case !n.StoppedAt.IsZero():
		return kind.Errorf(kind.ErrNotConnected, "agent %s is not connected: coordinator node %s, which held its session, has stopped", a.Name, n.Name)
	case !n.Alive():
		return kind.Errorf(kind.ErrNotConnected, "agent %s is not connected: coordinator node %s, which held its session, stopped beating %s ago",
			a.Name, n.Name, n.HeartbeatAge.Round(time.Second))
	case !n.Answers:
		return kind.Errorf(kind.ErrConflict, "agent %s is connected to coordinator node %s, whose version (%s) cannot act for other nodes: ask through that node, or upgrade it",
			a.Name, n.Name, n.Version)
	}

	id := uuid.NewString()
	wake := s.calls.add(id)
	defer s.calls.remove(id)
	call := store.NodeCall{ID: id, Node: n.ID, From: s.nodeID(), AgentID: a.ID, Action: action, Args: args, CreatedAt: time.Now().UTC()}
	if err := s.store.CreateNodeCall(ctx, call); err != nil {
		return fmt.Errorf("%s for agent %s: ask coordinator node %s: %w", action, a.Name, n.Name, err)
	}
	defer func() {
		// Read or given up: the call, and its file, are of no more use.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := s.store.DeleteNodeCall(dctx, id); err != nil {
			s.log.Warn("delete a call to another node failed; it is pruned later", zap.String("call", id), zap.Error(err))
		}
		if act.file {
			if err := s.store.DeleteBlob(dctx, cluster.CallBlob(id)); err != nil {
				s.log.Warn("delete the file of a call to another node failed; it is pruned later", zap.String("call", id), zap.Error(err))
			}
		}
	}()
	s.notifyCluster(cluster.NotifyCall, n.ID, id)

	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, s.cfg.NodeAnswerTimeout+act.timeout+callGrace)
	defer cancel()
	answerBy := time.Now().Add(s.cfg.NodeAnswerTimeout)
	tick := time.NewTicker(callPoll)
	defer tick.Stop()
	for {
		// A failed read (the database, for a moment) is read again on
		// the next tick, within the deadline.
		c, err := s.store.NodeCall(ctx, id)
		switch {
		case err != nil:
		case c.Answered():
			return s.readAnswer(ctx, c, a.Name, n.Name, out, path)
		case c.AcceptedAt.IsZero() && (s.sessions.get(a.ID) != nil || !time.Now().Before(answerBy)):
			// Given up on, unless the node took it meanwhile: then its
			// answer is awaited.
			if withdrawn, err := s.store.WithdrawNodeCall(ctx, id); err == nil && withdrawn {
				if s.sessions.get(a.ID) != nil {
					// The agent came here: atHolder finds its session.
					return kind.Errorf(errNoSession, "agent %s moved to this node", a.Name)
				}
				return kind.Errorf(kind.ErrNoAnswer, "agent %s is connected to coordinator node %s, which did not answer within %s",
					a.Name, n.Name, s.cfg.NodeAnswerTimeout)
			}
		case !c.AcceptedAt.IsZero():
			if _, alive := s.members.Alive(n.ID); !alive {
				return kind.Errorf(kind.ErrNoAnswer, "coordinator node %s stopped beating while it acted for agent %s (%s): whether it finished is not known",
					n.Name, a.Name, action)
			}
		}
		select {
		case <-ctx.Done():
			if err := parent.Err(); err != nil {
				return fmt.Errorf("%s for agent %s through coordinator node %s: %w", action, a.Name, n.Name, err)
			}
			return kind.Errorf(kind.ErrNoAnswer, "coordinator node %s took the %s for agent %s but did not answer within %s",
				n.Name, action, a.Name, s.cfg.NodeAnswerTimeout+act.timeout+callGrace)
		case <-wake:
		case <-tick.C:
		}
	}
}

// readAnswer turns an answered call into the action's result, or its
// error with the kind it had where it happened.
func (s *Server) readAnswer(ctx context.Context, c store.NodeCall, agent, node string, out any, path string) error {
	if c.ErrorKind != "" || c.Error != "" {
		return callError(c.ErrorKind, c.Error)
	}
	if path != "" {
		if err := s.fetchCallFile(ctx, c.ID, path); err != nil {
			return fmt.Errorf("%s for agent %s: fetch what coordinator node %s collected: %w", c.Action, agent, node, err)
		}
	}
	if out != nil {
		if err := json.Unmarshal(c.Result, out); err != nil {
			return fmt.Errorf("%s for agent %s: the answer of coordinator node %s: %w", c.Action, agent, node, err)
		}
	}
	return nil
}

// fetchCallFile writes the file a call made to path, checked against the
// SHA-256 it was stored with.
func (s *Server) fetchCallFile(ctx context.Context, id, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	b, err := s.store.ReadBlob(ctx, cluster.CallBlob(id), io.MultiWriter(f, h))
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.SHA256 {
		return fmt.Errorf("its SHA-256 is %s, want %s", got, b.SHA256)
	}
	return f.Close()
}

// takeCalls takes the calls waiting for this node and answers each in a
// goroutine of its own.
func (s *Server) takeCalls(ctx context.Context) {
	calls, err := s.store.AcceptNodeCalls(ctx, s.nodeID(), time.Now().UTC())
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("take the calls of other nodes failed", zap.Error(err))
		}
		return
	}
	for _, c := range calls {
		s.goFunc(func() { s.answerCall(c) })
	}
}

// answerCall does a call another node made and records the answer.
func (s *Server) answerCall(c store.NodeCall) {
	log := s.log.With(zap.String("call", c.ID), zap.String("action", c.Action), zap.String("agent", c.AgentID), zap.String("from", c.From))
	log.Debug("acting for another node")
	answer := store.NodeCall{ID: c.ID}
	result, shared, err := s.doCall(s.ctx, c)
	if err != nil {
		answer.ErrorKind, answer.Error = callErrorWord(err), err.Error()
	} else {
		answer.Result = result
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 10*time.Second)
	defer cancel()
	answer.AnsweredAt = time.Now().UTC()
	err = s.store.AnswerNodeCall(ctx, answer)
	if errors.Is(err, store.ErrNotFound) {
		// The node that asked gave up: nobody will read the file.
		if shared {
			if err := s.store.DeleteBlob(ctx, cluster.CallBlob(c.ID)); err != nil {
				log.Warn("delete the file of an abandoned call failed; it is pruned later", zap.Error(err))
			}
		}
		log.Info("the node that asked gave up before the answer")
		return
	}
	if err != nil {
		log.Error("record the answer to another node failed", zap.Error(err))
		return
	}
	s.notifyCluster(cluster.NotifyAnswer, c.ID)
}

// doCall does a call's action over this node's session of its agent. It
// returns the JSON result and whether a file was shared for the asker.
func (s *Server) doCall(ctx context.Context, c store.NodeCall) (result []byte, shared bool, err error) {
	act, ok := s.agentAction(c.Action)
	if !ok {
		return nil, false, kind.Errorf(kind.ErrBadRequest, "coordinator node %s (version %s) does not know the action %q", s.members.Name(), s.cfg.Version, c.Action)
	}
	as := s.sessions.get(c.AgentID)
	if as == nil {
		name := c.AgentID
		if a, err := s.store.AgentByID(ctx, c.AgentID); err == nil {
			name = a.Name
		}
		return nil, false, kind.Errorf(errNoSession, "agent %s is not connected to coordinator node %s", name, s.members.Name())
	}
	path := ""
	if act.file {
		f, err := os.CreateTemp("", "tendril-call-*")
		if err != nil {
			return nil, false, fmt.Errorf("%s for agent %s: %w", c.Action, as.name, err)
		}
		f.Close()
		path = f.Name()
		defer os.Remove(path)
	}
	rctx, cancel := context.WithTimeout(ctx, act.timeout)
	res, err := act.run(rctx, as, c.Args, path)
	cancel()
	if err != nil {
		return nil, false, err
	}
	if result, err = json.Marshal(res); err != nil {
		return nil, false, fmt.Errorf("%s for agent %s: %w", c.Action, as.name, err)
	}
	if act.file {
		if err := s.shareCallFile(ctx, c.ID, path); err != nil {
			return nil, false, fmt.Errorf("%s for agent %s: hand the file to the node that asked: %w", c.Action, as.name, err)
		}
	}
	return result, act.file, nil
}

// shareCallFile stores the file a call made for the node that asked.
func (s *Server) shareCallFile(ctx context.Context, id, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	b := store.Blob{Key: cluster.CallBlob(id), SHA256: hex.EncodeToString(h.Sum(nil)), Size: size, StoredAt: time.Now().UTC()}
	return s.store.PutBlob(ctx, b, f)
}

// pruneCalls deletes the calls, and their files, that their askers left
// behind (a node killed while it waited).
func (s *Server) pruneCalls(ctx context.Context) {
	before := time.Now().Add(-callRetention).UTC()
	if _, err := s.store.PruneNodeCalls(ctx, before); err != nil && ctx.Err() == nil {
		s.log.Warn("prune old calls between nodes failed", zap.Error(err))
	}
	if _, err := s.store.DeleteBlobs(ctx, cluster.CallBlobPrefix, before); err != nil && ctx.Err() == nil {
		s.log.Warn("prune old files of calls between nodes failed", zap.Error(err))
	}
}

// callErrorKinds name the kinds of failure as a call's answer carries
// them, most specific first.
var callErrorKinds = []struct {
	word string
	kind error
}{
	{"no-session", errNoSession},
	{"not-connected", kind.ErrNotConnected},
	{"bad-request", kind.ErrBadRequest},
	{"conflict", kind.ErrConflict},
	{"not-found", kind.ErrNotFound},
	{"forbidden", kind.ErrForbidden},
	{"no-answer", kind.ErrNoAnswer},
	{"unsupported", diagnostics.ErrUnsupported},
}

// callErrorWord is the word for err's kind; "error" for an error of no
// known kind.
func callErrorWord(err error) string {
	for _, k := range callErrorKinds {
		if errors.Is(err, k.kind) {
			return k.word
		}
	}
	return "error"
}

// callError is the error an answer carries, of the kind its word names.
func callError(word, msg string) error {
	for _, k := range callErrorKinds {
		if k.word == word {
			return kind.Errorf(k.kind, "%s", msg)
		}
	}
	return errors.New(msg)
}

// callWaiters wakes the calls this node waits on when their answer is
// announced.
type callWaiters struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

// add registers a call; its channel receives when the answer is
// announced.
func (w *callWaiters) add(id string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = make(map[string]chan struct{})
	}
	ch := make(chan struct{}, 1)
	w.m[id] = ch
	return ch
}

func (w *callWaiters) remove(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, id)
}

// wake announces a call's answer, if this node waits on it.
func (w *callWaiters) wake(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case w.m[id] <- struct{}{}:
	default:
	}
}
