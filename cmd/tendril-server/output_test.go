package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/server"
	"github.com/tendrildeploy/tendril/server/admin"
)

func TestWriteAgentsTable(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	agents := []server.AgentView{
		{Name: "web01", Environment: "Production", Version: "1.4.0", Connected: true, Health: "healthy",
			TLSVersion: "1.3", CalamariVersion: "29.0.0", CalamariCurrent: true, Upgrade: "none",
			LastSeen: now.Format(time.RFC3339)},
		{Name: "legacy-db", Environment: "Production", Version: "1.2.0", Connected: true, Health: "warning",
			TLSVersion: "1.0", CalamariVersion: "28.1.0", CalamariCurrent: false, Upgrade: "recommended",
			LastSeen:     now.Format(time.RFC3339),
			HealthDetail: "connected with TLS 1.0, which is deprecated; enable TLS 1.2 on the agent's host"},
		{Name: "old", Environment: "Test", Version: "0.9.0", Health: "unavailable", HealthDetail: "not connected",
			TLSVersion: "1.2", CalamariCurrent: true, Upgrade: "required",
			LastSeen: now.Add(-90 * time.Minute).Format(time.RFC3339)},
		{Name: "fresh", Environment: "Test", Health: "unavailable", CalamariCurrent: true, Upgrade: "none"},
	}
	var b strings.Builder
	if err := writeAgents(&b, agents, now); err != nil {
		t.Fatal(err)
	}
	want := `NAME       ENVIRONMENT  VERSION  CONNECTED  HEALTH       TLS  CALAMARI              UPGRADE      LAST SEEN
web01      Production   1.4.0    yes        healthy      1.3  29.0.0                -            now
legacy-db  Production   1.2.0    yes        warning      1.0  28.1.0 (out of date)  recommended  now
old        Test         0.9.0    no         unavailable  1.2  -                     required     1h ago
fresh      Test         -        no         unavailable  -    -                     -            never

legacy-db (warning): connected with TLS 1.0, which is deprecated; enable TLS 1.2 on the agent's host
`
	if b.String() != want {
		t.Fatalf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteAgentsEmpty(t *testing.T) {
	var b strings.Builder
	if err := writeAgents(&b, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "No agents yet.") || strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("got %q", b.String())
	}
}

func TestLastSeen(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) server.AgentView {
		return server.AgentView{LastSeen: now.Add(-d).Format(time.RFC3339)}
	}
	for _, tc := range []struct {
		a    server.AgentView
		want string
	}{
		{server.AgentView{Connected: true, LastSeen: "2000-01-01T00:00:00Z"}, "now"},
		{server.AgentView{}, "never"},
		{server.AgentView{LastSeen: "yesterday"}, "yesterday"},
		{ago(-5 * time.Second), "0s ago"}, // clock skew: never "in the future"
		{ago(42 * time.Second), "42s ago"},
		{ago(5 * time.Minute), "5m ago"},
		{ago(47 * time.Hour), "47h ago"},
		{ago(72 * time.Hour), "3d ago"},
	} {
		if got := lastSeen(tc.a, now); got != tc.want {
			t.Errorf("lastSeen(%q) = %q, want %q", tc.a.LastSeen, got, tc.want)
		}
	}
}

func TestWriteRotation(t *testing.T) {
	r := server.RotationResult{Thumbprint: "new", Previous: "old", Notified: 2, Failed: []string{"a", "b"}}
	var b strings.Builder
	if err := writeRotation(&b, r, true); err != nil {
		t.Fatal(err)
	}
	want := `Coordinator certificate rotated.
Thumbprint: new
Previous:   old (still served to agents that have not learned the new one)
Connected agents told: 2. Not reached: a, b. Agents not reached learn the new thumbprint when they reconnect.
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	writeRotation(&b, server.RotationResult{Thumbprint: "new", Previous: "old"}, false)
	if !strings.Contains(b.String(), "old (retired: every agent trusts the new one)") {
		t.Fatalf("got:\n%s", b.String())
	}
}

func TestErrorLine(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("list agents: %w", &admin.Error{Status: 401, Message: "the API key is not valid"}),
			"tendril-server: list agents: the API key is not valid (HTTP 401)"},
		{fmt.Errorf("get agent %q: %w", "x", &admin.Error{Status: 404, Message: `no agent named "x"`}),
			`tendril-server: get agent "x": no agent named "x" (HTTP 404)`},
		{&admin.Error{Status: 502}, "tendril-server: bad gateway (HTTP 502)"},
		{errors.New("first line\nsecond  line\n"), "tendril-server: first line; second line;"},
		{&usageError{err: errors.New("--environment is required"), cmd: "tendril-server token create"},
			`tendril-server: --environment is required (see "tendril-server token create --help")`},
	} {
		if got := errorLine(tc.err); got != tc.want {
			t.Errorf("errorLine(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
