package pgtest

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

// runFunc stands in for testing.M.
type runFunc func() int

func (f runFunc) Run() int { return f() }

func TestMainStopsClusterAndKeepsCode(t *testing.T) {
	shared.Cluster(t) // skips, or fails under CI, without PostgreSQL
	var s Shared
	var c *Cluster
	var stderr bytes.Buffer
	code := s.runTests(runFunc(func() int { c = s.Cluster(t); return 3 }), false, &stderr)
	if code != 3 || stderr.Len() != 0 {
		t.Errorf("got %d %q, want the tests' 3 and nothing on stderr", code, stderr.String())
	}
	if conn, err := pgx.Connect(context.Background(), c.URL("postgres")); err == nil {
		conn.Close(context.Background())
		t.Error("connect after Main: got nil error, want the cluster stopped")
	}
}

func TestMainWithoutCluster(t *testing.T) {
	var s Shared
	var stderr bytes.Buffer
	if code := s.runTests(runFunc(func() int { return 0 }), true, &stderr, goleak.IgnoreCurrent()); code != 0 {
		t.Errorf("got %d %q, want 0: no cluster to stop, no goroutine left", code, stderr.String())
	}
}

func TestMainFindsLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	release := make(chan struct{})
	defer close(release)
	leak := runFunc(func() int {
		go func() { <-release }()
		return 0
	})
	for _, tt := range []struct {
		leaks bool
		want  int
	}{{false, 0}, {true, 1}} {
		var s Shared
		var stderr bytes.Buffer
		code := s.runTests(leak, tt.leaks, &stderr, ignore)
		if code != tt.want || tt.leaks != strings.HasPrefix(stderr.String(), "goleak: ") {
			t.Errorf("leaks=%v: got %d %q, want %d and goleak's report only when leaks are checked", tt.leaks, code, stderr.String(), tt.want)
		}
	}
}
