package protocol

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/certs"
)

type keySigner struct {
	key   *certs.SigningKey
	agent string
	now   time.Time
}

func (k keySigner) SignRequest(typ string, body []byte) (*Intent, error) {
	in := &Intent{Agent: k.agent, Expires: k.now.Add(IntentLifetime), Nonce: "n-" + typ}
	in.Signature = k.key.Sign(IntentSigningBytes(typ, body, in.Agent, in.Expires, in.Nonce))
	return in, nil
}

func TestIntentRoundTrip(t *testing.T) {
	key, err := certs.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := certs.NewSigningKey()
	now := time.Now()
	// Characters JSON encoders like to rewrite: the signature covers the
	// bytes as they travel.
	body := TaskStart{Ticket: "t1", Calamari: "1.0.0", Args: []string{"run-script", "--inline", "echo '<a & b>' \u2028 é"}}
	var buf bytes.Buffer
	if err := WriteRequest(&buf, keySigner{key, "agent-1", now}, TypeTaskStart, body); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFrame(&buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(k *certs.SigningKey) func(msg, sig []byte) error {
		return func(msg, sig []byte) error { return certs.Verify(k.Public(), msg, sig) }
	}
	tampered := bytes.Replace(f.Body, []byte("t1"), []byte("t2"), 1)
	tests := []struct {
		name  string
		in    *Intent
		typ   string
		body  []byte
		agent string
		now   time.Time
		key   *certs.SigningKey
		want  string
	}{
		{"good", f.Intent, TypeTaskStart, f.Body, "agent-1", now, key, ""},
		{"unsigned", nil, TypeTaskStart, f.Body, "agent-1", now, key, "is not signed"},
		{"body changed", f.Intent, TypeTaskStart, tampered, "agent-1", now, key, "not signed by the coordinator's signing key"},
		{"other type", f.Intent, TypeTaskCancel, f.Body, "agent-1", now, key, "not signed by the coordinator's signing key"},
		{"other agent", f.Intent, TypeTaskStart, f.Body, "agent-2", now, key, `signed for agent "agent-1"`},
		{"expired", f.Intent, TypeTaskStart, f.Body, "agent-1", now.Add(IntentLifetime + IntentSkew + time.Second), key, "expired"},
		{"from the future", f.Intent, TypeTaskStart, f.Body, "agent-1", now.Add(-IntentSkew - time.Minute), key, "longer than a request may be"},
		{"other key", f.Intent, TypeTaskStart, f.Body, "agent-1", now, other, "not signed by the coordinator's signing key"},
	}
	for _, tt := range tests {
		err := CheckIntent(tt.in, tt.typ, tt.body, tt.agent, tt.now, verify(tt.key))
		if tt.want == "" && err != nil || tt.want != "" && (!errors.Is(err, ErrIntent) || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}

	// Only the requests that make an agent act are signed.
	buf.Reset()
	if err := WriteRequest(&buf, keySigner{key, "agent-1", now}, TypeHealthRequest, HealthRequest{}); err != nil {
		t.Fatal(err)
	}
	if f, _ := ReadFrame(&buf, 0); f.Intent != nil {
		t.Errorf("a health request: got an intent, want none")
	}
}
