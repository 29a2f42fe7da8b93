package agent

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

type testSigner struct {
	key   *certs.SigningKey
	agent string
	nonce string
}

func (s testSigner) SignRequest(typ string, body []byte) (*protocol.Intent, error) {
	in := &protocol.Intent{Agent: s.agent, Expires: time.Now().Add(protocol.IntentLifetime), Nonce: s.nonce}
	in.Signature = s.key.Sign(protocol.IntentSigningBytes(typ, body, in.Agent, in.Expires, in.Nonce))
	return in, nil
}

// request is the frame an agent receives for a request sent with sign.
func request(t *testing.T, sign protocol.Signer, typ string, body any) protocol.Frame {
	t.Helper()
	var buf bytes.Buffer
	if err := protocol.WriteRequest(&buf, sign, typ, body); err != nil {
		t.Fatal(err)
	}
	f, err := protocol.ReadFrame(&buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestCheckRequest: unsigned requests pass until the first signed one,
// and never after, also once the agent restarts; a signature by another
// key, for another agent, or replayed is refused.
func TestCheckRequest(t *testing.T) {
	key, _ := certs.NewSigningKey()
	rogue, _ := certs.NewSigningKey()
	home := t.TempDir()
	st := State{AgentID: "agent-1", Name: "web-1", Servers: []string{"127.0.0.1:1"}, ServerThumbprints: []string{strings.Repeat("a", 64)}, SigningKey: key.Public()}
	if err := saveState(home, st); err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: Config{Home: home}, log: zaptest.NewLogger(t), state: st}
	start := protocol.TaskStart{Ticket: "t1", Calamari: "1.0.0", Args: []string{"run-script"}}
	good := request(t, testSigner{key, "agent-1", "n1"}, protocol.TypeTaskStart, start)
	steps := []struct {
		name string
		f    protocol.Frame
		want string
	}{
		{"unsigned, before any signed one", request(t, nil, protocol.TypeTaskStart, start), ""},
		{"signed by another key", request(t, testSigner{rogue, "agent-1", "n0"}, protocol.TypeTaskStart, start), "not signed by the coordinator's signing key this agent trusts"},
		{"unsigned, still before any good one", request(t, nil, protocol.TypeTaskStart, start), ""},
		{"signed for another agent", request(t, testSigner{key, "agent-2", "n2"}, protocol.TypeTaskStart, start), `signed for agent "agent-2"`},
		{"signed", good, ""},
		{"replayed", good, "a replay"},
		{"unsigned, after a signed one", request(t, nil, protocol.TypeTaskStart, start), "takes only signed requests"},
		{"a downgrade, unsigned", request(t, nil, protocol.TypeAgentUpgrade, protocol.AgentUpgrade{AllowDowngrade: true}), "takes only signed requests"},
	}
	for _, s := range steps {
		err := a.checkRequest(s.f, time.Now())
		if s.want == "" && err != nil || s.want != "" && (!errors.Is(err, protocol.ErrIntent) || !strings.Contains(err.Error(), s.want)) {
			t.Fatalf("%s: got %v, want %q", s.name, err, s.want)
		}
	}
	// Recorded: a restarted agent requires signatures too.
	saved, err := LoadState(home)
	if err != nil || !saved.SignedRequests {
		t.Fatalf("state after a signed request: got %+v, %v; want signed_requests set", saved, err)
	}
	restarted := &Agent{cfg: Config{Home: home}, log: zaptest.NewLogger(t), state: saved}
	if err := restarted.checkRequest(request(t, nil, protocol.TypeCalamariPush, protocol.CalamariPush{}), time.Now()); err == nil {
		t.Fatal("unsigned push after a restart: got nil error, want a refusal")
	}
}
