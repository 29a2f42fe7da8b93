package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/diagnostics"
	"github.com/tendrildeploy/tendril/server/healthlog"
	"github.com/tendrildeploy/tendril/server/httpapi"
)

// diagnosticsIdle is how long the agent's archive may go without a byte
// arriving before the transfer is taken for dead.
const diagnosticsIdle = time.Minute

// AgentDiagnostics collects one agent's diagnostics archive (package
// server/diagnostics), complete before it is returned.
func (s *Server) AgentDiagnostics(ctx context.Context, name string) (httpapi.Download, error) {
	a, err := s.diagnostics.Agent(ctx, name)
	if err != nil {
		return httpapi.Download{}, err
	}
	return httpapi.Download{Name: a.Name, Size: a.Size, Body: a}, nil
}

// Goroutines dumps this coordinator's goroutines.
func (s *Server) Goroutines() ([]byte, error) { return diag.Goroutines() }

// diagnosticsFleet is the core as server/diagnostics sees it.
type diagnosticsFleet struct{ s *Server }

func (f diagnosticsFleet) Agent(ctx context.Context, name string) (api.AgentView, error) {
	return f.s.Agent(ctx, name)
}

func (f diagnosticsFleet) HealthHistory(agentID string) []healthlog.Point {
	return f.s.HealthHistory(agentID)
}

// AgentArchive asks the node holding the agent's session, this one or
// another, for the agent's archive.
func (f diagnosticsFleet) AgentArchive(ctx context.Context, agentID, path string) error {
	a, err := f.s.store.AgentByID(ctx, agentID)
	if err != nil {
		return fmt.Errorf("ask for diagnostics: %w", err)
	}
	return f.s.atHolder(ctx, a, actionDiagnostics, nil, nil, path)
}

// diagnosticsAction is the diagnostics' agentAction: the agent's archive,
// received into path.
func (s *Server) diagnosticsAction(ctx context.Context, as *agentSession, _ json.RawMessage, path string) (any, error) {
	return nil, receiveDiagnostics(ctx, as.sess, as.sign, path)
}

// sha256Hex is a transfer header's SHA-256.
var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// receiveDiagnostics asks the agent on sess for its diagnostics archive
// and receives it into path (protocol.ReceiveBulk checks its size and
// SHA-256). An agent that does not know the request answers
// CodeUnknownType: that is diagnostics.ErrUnsupported. ctx bounds the
// whole exchange; the agent collects before it answers.
func receiveDiagnostics(ctx context.Context, sess *yamux.Session, sign protocol.Signer, path string) error {
	st, err := sess.OpenStream()
	if err != nil {
		return fmt.Errorf("ask for diagnostics: %w", err)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	defer stop()
	st.SetWriteDeadline(time.Now().Add(protocol.RequestTimeout))
	if err := protocol.WriteRequest(st, sign, protocol.TypeDiagnostics, protocol.Diagnostics{}); err != nil {
		return fmt.Errorf("ask for diagnostics: %w", err)
	}
	f, err := protocol.ReadFrame(st, 0)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return fmt.Errorf("ask for diagnostics: %w", err)
	}
	var hdr protocol.DiagnosticsArchive
	if err := protocol.DecodeReply(f, protocol.TypeDiagnosticsArchive, &hdr); err != nil {
		if protocol.IsCode(err, protocol.CodeUnknownType) {
			return fmt.Errorf("%w: %v", diagnostics.ErrUnsupported, err)
		}
		return fmt.Errorf("ask for diagnostics: %w", err)
	}
	t := hdr.Archive
	if t.Size < 0 || t.Size > protocol.MaxDiagnosticsSize || !sha256Hex.MatchString(t.SHA256) {
		return fmt.Errorf("receive diagnostics: %w: %d bytes with SHA-256 %q (at most %d bytes)", protocol.ErrTransfer, t.Size, t.SHA256, protocol.MaxDiagnosticsSize)
	}
	if err := protocol.ReceiveBulk(idleReader{ctx, st}, path, t); err != nil {
		if ctx.Err() != nil && !errors.Is(err, protocol.ErrTransfer) {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return fmt.Errorf("receive diagnostics: %w", err)
	}
	return nil
}

// idleReader extends the stream's read deadline before every read, so a
// slow link that keeps moving is never cut and a stalled one is; never
// past ctx's deadline, and not at all once ctx is done, which would undo
// the deadline its cancellation set on the stream.
type idleReader struct {
	ctx context.Context
	st  *yamux.Stream
}

func (r idleReader) Read(p []byte) (int, error) {
	d := time.Now().Add(diagnosticsIdle)
	if dl, ok := r.ctx.Deadline(); ok && dl.Before(d) {
		d = dl
	}
	r.st.SetReadDeadline(d)
	// Checked after the deadline is set: a cancellation from here on sets
	// its own deadline after this one.
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.st.Read(p)
}
