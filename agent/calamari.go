package agent

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/agent/calamari"
	"github.com/tendrildeploy/tendril/agent/task"
	"github.com/tendrildeploy/tendril/agent/upgrade"
	"github.com/tendrildeploy/tendril/protocol"
)

// transferIdle is how long a push may go without a byte arriving before
// the agent gives up on it (and keeps what arrived for the next push).
const transferIdle = 60 * time.Second

// longStream is a request's stream once its exchange may outlast
// streamTimeout (a bundle on a slow link, a task's log while it runs):
// every read and every frame written gets a deadline of its own, so an
// exchange that keeps moving goes on and one that stalls ends.
type longStream struct{ st *yamux.Stream }

func newLongStream(st *yamux.Stream) longStream {
	st.SetDeadline(time.Time{}) // the request's deadline no longer applies
	return longStream{st}
}

func (l longStream) Read(p []byte) (int, error) {
	l.st.SetReadDeadline(time.Now().Add(transferIdle))
	return l.st.Read(p)
}

// Write is called once per frame (protocol.WriteFrame writes a frame in
// one call), so this is a deadline per frame.
func (l longStream) Write(p []byte) (int, error) {
	l.st.SetWriteDeadline(time.Now().Add(streamTimeout))
	return l.st.Write(p)
}

// errorCode picks the error code for a failed request: bad_request when
// the request or what it sent is at fault, unavailable while stopping,
// internal for the agent's own trouble.
func errorCode(err error) string {
	switch {
	case calamari.IsBadRequest(err) || task.IsBadRequest(err) || upgrade.IsRefused(err):
		return protocol.CodeBadRequest
	case errors.Is(err, task.ErrClosed), errors.Is(err, upgrade.ErrBusy),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// Gone with the agent's stopping or the request's time: the
		// coordinator asks again, where it would fail the task for
		// anything else the agent answers.
		return protocol.CodeUnavailable
	default:
		return protocol.CodeInternal
	}
}

// replyFailure tells the coordinator why a request failed. The agent's
// own troubles (a full disk, an unreadable folder) are logged here too,
// because the agent's operator may never see the coordinator's side.
func (a *Agent) replyFailure(w io.Writer, typ string, err error) error {
	code := errorCode(err)
	if code == protocol.CodeInternal {
		a.log.Warn("could not serve a coordinator request", zap.String("type", typ), zap.Error(err))
	}
	return protocol.WriteError(w, code, err.Error())
}

func (a *Agent) handleCalamariCheck(st *yamux.Stream, f protocol.Frame) error {
	var req protocol.CalamariCheck
	if err := f.Decode(&req); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	state, err := a.calamari.Check(req.Version)
	if err != nil {
		return a.replyFailure(st, f.Type, err)
	}
	return protocol.WriteFrame(st, protocol.TypeCalamariState, state)
}

// handleCalamariPush receives and installs a bundle: PushReady with the
// offset to resume from (or Done), the bytes, then CalamariInstalled or an
// error. A connection that breaks mid-transfer leaves the bytes that
// arrived for the next push.
func (a *Agent) handleCalamariPush(s *liveSession, st *yamux.Stream, f protocol.Frame) error {
	var req protocol.CalamariPush
	if err := f.Decode(&req); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	ls := newLongStream(st)
	p, err := a.calamari.BeginPush(s.ctx, req)
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
	installed, err := p.Receive(s.ctx, ls)
	if err != nil {
		if interrupted(err) {
			// Nobody is left to tell; the next push resumes.
			a.log.Info("calamari push interrupted; kept what arrived", zap.String("version", req.Version), zap.Error(err))
			return nil
		}
		return a.replyFailure(ls, f.Type, err)
	}
	a.log.Info("calamari installed", zap.String("version", installed.Version), zap.Int64("resumed_at", p.Offset), zap.Strings("pruned", installed.Pruned))
	return protocol.WriteFrame(ls, protocol.TypeCalamariInstalled, installed)
}

// interrupted reports an error that means the coordinator's side of a
// stream went away (closed, reset, silent for too long), not that the
// agent failed.
func interrupted(err error) bool {
	for _, target := range []error{io.EOF, io.ErrUnexpectedEOF, yamux.ErrTimeout, yamux.ErrConnectionReset, yamux.ErrStreamClosed, yamux.ErrSessionShutdown, yamux.ErrKeepAliveTimeout, context.Canceled} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
