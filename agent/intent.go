package agent

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

// maxNonces bounds the replay cache; past it, expired nonces are dropped.
const maxNonces = 4096

// checkRequest decides whether a request that makes the agent act may be
// served: signed by the coordinator's signing key the agent pinned, for
// this agent, within its lifetime and never seen before; or unsigned from
// a coordinator that has never signed to this agent (an older release).
// The first signed request accepted makes signatures required from then
// on: a coordinator cannot be talked back into unsigned requests.
func (a *Agent) checkRequest(f protocol.Frame, now time.Time) error {
	a.stateMu.Lock()
	st := a.state
	a.stateMu.Unlock()
	if f.Intent == nil {
		if st.SignedRequests {
			return fmt.Errorf("%w: %s is not signed, and this agent takes only signed requests from its coordinator since it first received one", protocol.ErrIntent, f.Type)
		}
		return nil
	}
	if st.SigningKey == "" {
		return fmt.Errorf("%w: %s is signed, but this agent has no coordinator signing key to check it with", protocol.ErrIntent, f.Type)
	}
	err := protocol.CheckIntent(f.Intent, f.Type, f.Body, st.AgentID, now, func(msg, sig []byte) error {
		return certs.Verify(st.SigningKey, msg, sig)
	})
	if err != nil {
		return err
	}
	if err := a.useNonce(f.Intent.Nonce, f.Intent.Expires.Add(protocol.IntentSkew), now); err != nil {
		return fmt.Errorf("%w: %s: %v", protocol.ErrIntent, f.Type, err)
	}
	if !st.SignedRequests {
		a.requireSigned()
	}
	return nil
}

// useNonce records a nonce until it expires, and refuses one seen before.
func (a *Agent) useNonce(nonce string, until, now time.Time) error {
	a.noncesMu.Lock()
	defer a.noncesMu.Unlock()
	if a.nonces == nil {
		a.nonces = make(map[string]time.Time)
	}
	if _, seen := a.nonces[nonce]; seen {
		return fmt.Errorf("the request was received before (a replay)")
	}
	if len(a.nonces) >= maxNonces {
		for n, exp := range a.nonces {
			if now.After(exp) {
				delete(a.nonces, n)
			}
		}
		if len(a.nonces) >= maxNonces {
			return fmt.Errorf("more than %d signed requests within their lifetime; try again shortly", maxNonces)
		}
	}
	a.nonces[nonce] = until
	return nil
}

// requireSigned records that the coordinator signs: from now on unsigned
// requests are refused. If the file cannot be written, the agent still
// requires signatures until it restarts, and the next state it saves
// records it.
func (a *Agent) requireSigned() {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	if a.state.SignedRequests {
		return
	}
	a.state.SignedRequests = true
	if err := saveState(a.cfg.Home, a.state); err != nil {
		a.log.Error("could not record that the coordinator signs its requests", zap.Error(err))
		return
	}
	a.log.Info("the coordinator signs its requests; unsigned ones are refused from now on")
}
