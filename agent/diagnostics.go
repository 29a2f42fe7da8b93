package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/agent/diagnostics"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/protocol"
)

// liveStatus is what the running agent says of itself in a diagnostics
// archive, beyond what its home holds.
type liveStatus struct {
	Status
	Version      string    `json:"version"`
	Started      time.Time `json:"started"`
	Uptime       string    `json:"uptime"`
	Hostname     string    `json:"hostname"`
	Proxy        string    `json:"proxy"` // without credentials
	Servers      []string  `json:"servers"`
	RunningTasks int       `json:"running_tasks"`
	Service      string    `json:"service,omitempty"`
	Supervised   bool      `json:"supervised,omitempty"`
}

func (a *Agent) liveStatus() liveStatus {
	a.stateMu.Lock()
	servers := serverList(a.state)
	a.stateMu.Unlock()
	return liveStatus{
		Status: a.Status(), Version: a.cfg.Version, Started: a.started.UTC(),
		Uptime: time.Since(a.started).Round(time.Second).String(), Hostname: a.hostname, Proxy: a.Proxy(),
		Servers: slices.Clip(servers), RunningTasks: a.tasks.Running(), Service: a.cfg.Service, Supervised: a.cfg.Supervised,
	}
}

// handleDiagnostics collects the agent's diagnostics archive, the same
// one "tendril-agent diagnostics" writes, with the running agent's own
// status and goroutine dump, into a temporary file, then sends its header
// and its bytes. One collection runs at a time.
func (a *Agent) handleDiagnostics(s *liveSession, st *yamux.Stream, f protocol.Frame) error {
	var req protocol.Diagnostics
	if err := f.Decode(&req); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	select {
	case a.diagnosticsSlot <- struct{}{}:
		defer func() { <-a.diagnosticsSlot }()
	default:
		return protocol.WriteError(st, protocol.CodeUnavailable, "a diagnostics collection is already under way on this agent")
	}
	ls := newLongStream(st) // collecting reads every Calamari file's hash
	tmp, err := os.CreateTemp("", "tendril-diagnostics-*.tar.gz")
	if err != nil {
		return a.replyFailure(ls, f.Type, fmt.Errorf("collect diagnostics: %w", err))
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	goroutines, err := diag.Goroutines()
	if err != nil {
		a.log.Warn("could not dump goroutines for diagnostics", zap.Error(err))
	}
	h := sha256.New()
	m, err := diagnostics.Collect(s.ctx, io.MultiWriter(tmp, h), diagnostics.Config{
		Home: a.cfg.Home, Tool: diag.ThisTool("tendril-agent", a.cfg.Version),
		Live: &diagnostics.Live{Version: a.cfg.Version, Status: a.liveStatus(), Goroutines: goroutines},
	})
	if err != nil {
		return a.replyFailure(ls, f.Type, err)
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return a.replyFailure(ls, f.Type, fmt.Errorf("collect diagnostics: %w", err))
	}
	if size > protocol.MaxDiagnosticsSize {
		return a.replyFailure(ls, f.Type, fmt.Errorf("diagnostics archive is %d bytes, more than the %d a coordinator accepts", size, protocol.MaxDiagnosticsSize))
	}
	hdr := protocol.DiagnosticsArchive{Archive: protocol.Transfer{Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}}
	if err := protocol.WriteFrame(ls, protocol.TypeDiagnosticsArchive, hdr); err != nil {
		return err
	}
	if err := protocol.SendBulk(ls, tmp, 0, size); err != nil {
		return err
	}
	a.log.Info("diagnostics sent to the coordinator", zap.Int64("bytes", size), zap.Int("entries", len(m.Entries)), zap.Int("missing", len(m.Missing)))
	return nil
}
