package diagnostics_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/server/diagnostics"
	"github.com/tendrildeploy/tendril/server/healthlog"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

// heldFleet is a coordinator whose agents send their archive once
// release is closed, saying on started when they were asked.
type heldFleet struct {
	started chan string
	release chan struct{}
	archive []byte
}

func (f heldFleet) Agent(_ context.Context, name string) (api.AgentView, error) {
	return api.AgentView{ID: "id-" + name, Name: name}, nil
}

func (heldFleet) HealthHistory(string) []healthlog.Point { return nil }

func (f heldFleet) AgentArchive(ctx context.Context, agentID, path string) error {
	f.started <- agentID
	select {
	case <-f.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return os.WriteFile(path, f.archive, 0o600)
}

// TestAgentCollectionsAreBounded: while two agents' archives are
// collected, a third is refused at once as a conflict that says why, and
// is collected once they are done; the agent's archive is inside whole.
func TestAgentCollectionsAreBounded(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var inner bytes.Buffer
	iw := diag.NewWriter(&inner, diag.KindAgent, "home", diag.Tool{})
	iw.Add("logs/agent.log", "log", []byte("the agent's log"))
	if err := iw.Close(); err != nil {
		t.Fatal(err)
	}
	f := heldFleet{started: make(chan string, 3), release: make(chan struct{}), archive: inner.Bytes()}
	c := diagnostics.New(diagnostics.Config{Store: st, Fleet: f, Version: "9.9.9", Node: "n1"})

	type result struct {
		a   *diagnostics.Archive
		err error
	}
	done := make(chan result, 2)
	for _, name := range []string{"web-1", "web-2"} {
		go func() {
			a, err := c.Agent(ctx, name)
			done <- result{a, err}
		}()
	}
	<-f.started
	<-f.started
	if _, err := c.Agent(ctx, "web-3"); !errors.Is(err, kind.ErrConflict) || !strings.Contains(err.Error(), "already collecting 2") {
		t.Fatalf("a third collection: got %v, want a conflict", err)
	}
	close(f.release)
	for range 2 {
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		a, err := diag.Read(r.a, 1<<20)
		r.a.Close()
		if err != nil {
			t.Fatal(err)
		}
		files, err := a.Flatten(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(files[diagnostics.AgentArchiveName+"/logs/agent.log"]); got != "the agent's log" {
			t.Errorf("the agent's log inside: got %q, want it whole", got)
		}
	}
	a, err := c.Agent(ctx, "web-3")
	if err != nil {
		t.Fatalf("a collection after the others: %v", err)
	}
	a.Close()
}
