package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/pgtest"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

// pg is the test binary's PostgreSQL cluster, started by the first test
// that needs it.
var pg pgtest.Shared

func TestMain(m *testing.M) { pg.Main(m, true) }

// runInBackground starts "tendril-server run" with args and returns its
// stderr and a function that stops it and returns its exit code.
func runInBackground(t *testing.T, vars map[string]string, args ...string) (*syncBuffer, func() int) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr syncBuffer
	go func() {
		done <- Run(ctx, append([]string{"run", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"}, args...),
			Env{Stdout: &bytes.Buffer{}, Stderr: &stderr, Getenv: func(k string) string { return vars[k] }})
	}()
	var code int
	stopped := false
	wait := func() int {
		if !stopped {
			stop()
			code, stopped = <-done, true
		}
		return code
	}
	t.Cleanup(func() { wait() })
	return &stderr, wait
}

func TestRunWaitsForUnreachableDatabase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if code, _, stderr := cli(t, context.Background(), nil, "init", "--data", dir); code != 0 {
		t.Fatalf("init: %d %s", code, stderr)
	}
	addr := servertest.FreeAddr(t)
	// From the environment, as an operator keeping the password out of
	// the process list would give it.
	vars := map[string]string{envDatabase: "postgres://tendril:s3cret-pw@" + addr + "/tendril"}
	stderr, stop := runInBackground(t, vars, "--data", dir)

	const msg = "database unreachable, retrying"
	waitFor(t, "two retries logged", func() bool { return strings.Count(stderr.String(), msg) >= 2 })
	if _, err := api.ReadRunInfo(dir); err == nil {
		t.Error("the coordinator serves without its database")
	}
	if code := stop(); code != 130 {
		t.Errorf("interrupted while waiting: got exit code %d, want 130\n%s", code, stderr)
	}
	logs := stderr.String()
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, msg) && (!strings.Contains(line, addr) || !strings.Contains(line, "retry_in")) {
			t.Errorf("retry line %q does not name the database and the wait", line)
		}
	}
	if strings.Contains(logs, "s3cret-pw") {
		t.Errorf("logs leak the password:\n%s", logs)
	}
}

func TestRunDatabaseNeedsInitializedFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "never-initialized")
	code, _, stderr := cli(t, context.Background(), nil, "run", "--data", dir, "--database", "postgres://x@127.0.0.1:1/x")
	if code != 1 || !strings.Contains(stderr, "not initialized") {
		t.Fatalf("got %d %q, want 1 and the folder named as not initialized", code, stderr)
	}
}

// TestInitAndRunOnPostgres initializes a coordinator whose state is in
// PostgreSQL and runs it: the admin key init printed works against it, and
// what the admin commands create lands in the database, not the folder.
func TestInitAndRunOnPostgres(t *testing.T) {
	bg := context.Background()
	dbURL := pg.Cluster(t).NewDatabase(t)
	dir := filepath.Join(t.TempDir(), "data")
	code, stdout, stderr := cli(t, bg, nil, "init", "--data", dir, "--database", dbURL)
	if code != 0 || !strings.Contains(stdout, "Admin API key: tdk_") {
		t.Fatalf("init: %d %q %q", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "tendril.db")); !os.IsNotExist(err) {
		t.Errorf("init with --database made tendril.db: %v", err)
	}

	logs, stop := runInBackground(t, nil, "--data", dir, "--database", dbURL)
	waitFor(t, "the coordinator to start", func() bool { _, err := api.ReadRunInfo(dir); return err == nil })
	code, stdout, stderr = cli(t, bg, nil, "token", "create", "--data", dir, "--environment", "Prod")
	if code != 0 {
		t.Fatalf("token create: %d %q %q\n%s", code, stdout, stderr, logs)
	}
	if code := stop(); code != 0 {
		t.Errorf("run exited %d:\n%s", code, logs)
	}

	st, err := sqlstore.OpenPostgres(bg, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tokens, err := st.ListTokens(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 1 || tokens[0].Environment != "Prod" {
		t.Errorf("tokens in PostgreSQL: got %+v, want one for Prod", tokens)
	}
	if _, err := os.Stat(filepath.Join(dir, "tendril.db")); !os.IsNotExist(err) {
		t.Errorf("run with --database made tendril.db: %v", err)
	}
}

// TestDataFolderKnowsItsDatabase: a folder made with init --database
// records the URL, sealed (the password is not in the folder in clear),
// and run started as init said, without --database, uses that database:
// the admin key init stored there signs in.
func TestDataFolderKnowsItsDatabase(t *testing.T) {
	bg := context.Background()
	dbURL := pg.Cluster(t).NewDatabase(t)
	dir := filepath.Join(t.TempDir(), "data")
	code, stdout, stderr := cli(t, bg, nil, "init", "--data", dir, "--database", dbURL)
	if code != 0 || !strings.Contains(stdout, "Start the coordinator with: tendril-server run --data "+dir+"\n") {
		t.Fatalf("init: %d %q %q", code, stdout, stderr)
	}
	sealed, err := os.ReadFile(filepath.Join(dir, datadir.DatabaseFile))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(dbURL)) || bytes.Contains(sealed, []byte("postgres")) {
		t.Fatalf("%s holds the URL in clear: %q", datadir.DatabaseFile, sealed)
	}
	if got, err := datadir.LoadDatabase(dir); err != nil || got != dbURL {
		t.Fatalf("LoadDatabase: got %q, %v; want the URL init was given", got, err)
	}

	// The command init printed, as it printed it.
	_, stop := runInBackground(t, nil, "--data", dir, "--health-interval", "1h")
	defer stop()
	waitFor(t, "the coordinator to start", func() bool { _, err := api.ReadRunInfo(dir); return err == nil })
	if code, stdout, stderr := cli(t, bg, nil, "agents", "list", "--data", dir, "--json"); code != 0 || strings.TrimSpace(stdout) != "[]" {
		t.Fatalf("agents list with init's admin key (only in PostgreSQL): %d %q %q", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "tendril.db")); err == nil {
		t.Error("the folder got a SQLite database beside its PostgreSQL one")
	}
}
