package agent

import (
	"context"
	"sync"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/protocol"
)

// Disk retention of task folders: the rule is the coordinator's machine
// policy, heard in Welcome and in TypeWorkRetention requests; the agent
// applies it through its task runner (agent/task retention.go), which
// keeps its own default until a coordinator says one. The rule is not
// saved: every session's Welcome says it again.

// adoptRetention applies the rule a Welcome carried; nil (an older
// coordinator) keeps the rule in force.
func (a *Agent) adoptRetention(rule *protocol.WorkRetention) {
	if rule == nil {
		return
	}
	if err := a.tasks.SetRetention(*rule); err != nil {
		// The session is good either way; the rule in force stays.
		a.log.Warn("could not apply the coordinator's work retention rule", zap.Error(err))
	}
}

// handleWorkRetention applies a changed machine policy's rule.
func (a *Agent) handleWorkRetention(st *yamux.Stream, f protocol.Frame) error {
	var rule protocol.WorkRetention
	if err := f.Decode(&rule); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	if err := a.tasks.SetRetention(rule); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	return protocol.WriteFrame(st, protocol.TypeAck, nil)
}

// startRetention runs the task runner's retention until the returned
// function is called, which waits for it to end.
func (a *Agent) startRetention(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { a.tasks.RunRetention(ctx, a.cfg.RetentionInterval) })
	return func() {
		cancel()
		wg.Wait()
	}
}
