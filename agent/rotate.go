package agent

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/protocol"
)

// rotate runs at every rotation check. It presents a pending certificate
// to the coordinator over the live session s, promotes it on disk, and
// then makes a new session with it. The new session is returned only once
// the coordinator welcomed it, so the agent is never without a session
// (make-before-break); on any failure s stays live and the next check
// tries again from where this one stopped.
func (a *Agent) rotate(ctx context.Context, s *liveSession) *liveSession {
	if err := a.presentPending(ctx, s); err != nil {
		a.rotationFailed(ctx, err)
		return nil
	}
	id := a.identity()
	if id.Thumbprint == s.thumbprint {
		return nil
	}
	ns, err := a.establish(ctx, s.addr, id)
	if err != nil {
		a.rotationFailed(ctx, fmt.Errorf("connect with the new certificate: %w", err))
		return nil
	}
	a.setConnected(ns)
	a.lastRotationErr = ""
	a.log.Info("certificate rotation done",
		zap.String("server", ns.addr),
		zap.String("old_thumbprint", s.thumbprint),
		zap.String("thumbprint", id.Thumbprint))
	return ns
}

// presentPending has the coordinator trust the pending certificate, if
// there is one, and then makes it the agent's identity, on disk first.
func (a *Agent) presentPending(ctx context.Context, s *liveSession) error {
	next := certSlot(a.cfg.Home, nextSlot)
	if !exists(next.cert) {
		return nil
	}
	id, err := next.load()
	if err != nil {
		return fmt.Errorf("load pending certificate: %w", err)
	}
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req := protocol.RotateCertificate{Certificate: id.DER()}
	if err := protocol.Call(callCtx, s.ys, protocol.TypeRotateCertificate, req, protocol.TypeAck, nil); err != nil {
		return fmt.Errorf("present new certificate to coordinator %s: %w", s.addr, err)
	}
	// The coordinator now trusts both certificates, so whichever one a
	// crash leaves in place still connects.
	if err := promote(a.cfg.Home); err != nil {
		return err
	}
	a.setIdentity(id)
	a.log.Info("coordinator accepted the new certificate", zap.String("thumbprint", id.Thumbprint))
	return nil
}

// rotationFailed logs a rotation problem once, not at every check.
func (a *Agent) rotationFailed(ctx context.Context, err error) {
	if ctx.Err() != nil || err.Error() == a.lastRotationErr {
		return
	}
	a.lastRotationErr = err.Error()
	a.log.Warn("certificate rotation failed; will retry", zap.Error(err))
}
