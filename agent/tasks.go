package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tendrildeploy/tendril/agent/task"
	"github.com/tendrildeploy/tendril/protocol"
)

const (
	// maxFollows is how many task follows one session may hold open. A
	// follow lasts as long as its task, so follows do not use the request
	// slots (maxHandlers) that health checks and pushes need; they have
	// their own, larger, bound.
	maxFollows = 64
	// cancelTimeout bounds a cancellation: the task's grace period, the
	// kill, and the reaping. Past it the coordinator hears why.
	cancelTimeout = time.Minute
)

// handleFilePush receives a file into a task's folder: PushReady with the
// offset to resume from (or Done), the bytes, then an Ack or an error.
func (a *Agent) handleFilePush(s *liveSession, st *yamux.Stream, f protocol.Frame) error {
	var req protocol.FilePush
	if err := f.Decode(&req); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	ls := newLongStream(st)
	p, err := a.tasks.BeginFilePush(s.ctx, req)
	if err != nil {
		return a.replyFailure(ls, f.Type, err)
	}
	defer p.Close()
	if err := protocol.WriteFrame(ls, protocol.TypePushReady, protocol.PushReady{Offset: p.Offset, Done: p.Done}); err != nil {
		return err
	}
	if p.Done {
		return nil
	}
	if err := p.Receive(ls); err != nil {
		if interrupted(err) {
			return err // the next push resumes; nobody is left to answer
		}
		return a.replyFailure(ls, f.Type, err)
	}
	return protocol.WriteFrame(ls, protocol.TypeAck, nil)
}

func (a *Agent) handleTaskStart(s *liveSession, st *yamux.Stream, f protocol.Frame) error {
	var req protocol.TaskStart
	if err := f.Decode(&req); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	// Held shared until the task runs (or not), so an upgrade that
	// counts running tasks counts this one.
	a.gate.RLock()
	defer a.gate.RUnlock()
	if a.upgrading {
		return protocol.WriteError(st, protocol.CodeUnavailable, "the agent is upgrading itself; start the task once it is done")
	}
	// Start verifies the bundle, and may wait for a start of the same
	// ticket to finish doing so; the stream's deadline bounds both.
	ctx, cancel := context.WithTimeout(s.ctx, streamTimeout)
	defer cancel()
	started, err := a.tasks.Start(ctx, req)
	var ce *task.CalamariError
	if req.ReportMissingCalamari && errors.As(err, &ce) {
		// The coordinator did not check first: it pushes the version
		// and starts the task again.
		return protocol.WriteError(st, protocol.CodeCalamariMissing, err.Error())
	}
	if err != nil {
		return a.replyFailure(st, f.Type, err)
	}
	return protocol.WriteFrame(st, protocol.TypeTaskStarted, started)
}

func (a *Agent) handleTaskCancel(s *liveSession, st *yamux.Stream, f protocol.Frame) error {
	var req protocol.TaskCancel
	if err := f.Decode(&req); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	ls := newLongStream(st)
	ctx, cancel := context.WithTimeout(s.ctx, cancelTimeout)
	defer cancel()
	if err := a.tasks.Cancel(ctx, req.Ticket); err != nil {
		return a.replyFailure(ls, f.Type, err)
	}
	return protocol.WriteFrame(ls, protocol.TypeAck, nil)
}

// handleTaskFollow streams a task's log until it ends: TaskLog frames,
// then one TaskEnd. It gives back its request slot first, because it lasts
// as long as the task.
func (a *Agent) handleTaskFollow(s *liveSession, st *yamux.Stream, f protocol.Frame, release func()) error {
	var req protocol.TaskFollow
	if err := f.Decode(&req); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	select {
	case s.follows <- struct{}{}:
		defer func() { <-s.follows }()
	default:
		return protocol.WriteError(st, protocol.CodeUnavailable, fmt.Sprintf("too many task follows at once (%d); try again when one ends", maxFollows))
	}
	release()
	ls := newLongStream(st)
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// The coordinator sends nothing after the request, so a read that
	// returns means it closed or reset the stream: the follow ends then,
	// rather than when a quiet task next prints something.
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(io.Discard, st) // no deadline: this read waits for as long as the follow lasts
		cancel()
	})
	defer wg.Wait()
	defer st.SetReadDeadline(time.Now()) // ends the reader; runs before the Wait above
	end, err := a.tasks.Follow(ctx, req.Ticket, req.From, func(l protocol.TaskLog) error {
		return protocol.WriteFrame(ls, protocol.TypeTaskLog, l)
	})
	if err != nil {
		if ctx.Err() != nil || interrupted(err) {
			return err // the coordinator went away; it follows again from where it got to
		}
		return a.replyFailure(ls, f.Type, err)
	}
	return protocol.WriteFrame(ls, protocol.TypeTaskEnd, end)
}

// handleArtifactFetch sends a file a task attached: ArtifactData, then
// its bytes from the offset asked for.
func (a *Agent) handleArtifactFetch(st *yamux.Stream, f protocol.Frame) error {
	var req protocol.ArtifactFetch
	if err := f.Decode(&req); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	file, art, err := a.tasks.OpenArtifact(req.Ticket, req.Name)
	if err != nil {
		return a.replyFailure(st, f.Type, err)
	}
	defer file.Close()
	if req.Offset < 0 || req.Offset > art.Size {
		return protocol.WriteError(st, protocol.CodeBadRequest, fmt.Sprintf("offset %d outside artifact %s of %d bytes", req.Offset, art.Name, art.Size))
	}
	ls := newLongStream(st)
	if err := protocol.WriteFrame(ls, protocol.TypeArtifactData, protocol.ArtifactData{File: protocol.Transfer{Size: art.Size, SHA256: art.SHA256}}); err != nil {
		return err
	}
	return protocol.SendBulk(ls, file, req.Offset, art.Size)
}
