package server

import (
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

// requestSigner signs the requests this coordinator sends one agent with
// its signing key (protocol.Intent).
type requestSigner struct {
	key     *certs.SigningKey
	agentID string
	now     func() time.Time
}

// SignRequest implements protocol.Signer.
func (r requestSigner) SignRequest(typ string, body []byte) (*protocol.Intent, error) {
	n := make([]byte, 16)
	rand.Read(n) // never fails; see crypto/rand
	in := &protocol.Intent{Agent: r.agentID, Expires: r.now().Add(protocol.IntentLifetime).UTC(), Nonce: hex.EncodeToString(n)}
	in.Signature = r.key.Sign(protocol.IntentSigningBytes(typ, body, in.Agent, in.Expires, in.Nonce))
	return in, nil
}

// signer is the Signer of requests to an agent.
func (s *Server) signer(agentID string) protocol.Signer {
	return requestSigner{key: s.signing, agentID: agentID, now: time.Now}
}
