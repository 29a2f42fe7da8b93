package pgtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
)

var shared Shared

func TestMain(m *testing.M) { shared.Main(m, true) }

func TestNewDatabase(t *testing.T) {
	ctx := context.Background()
	c := shared.Cluster(t)
	var urls []string
	for range 2 {
		urls = append(urls, c.NewDatabase(t))
	}
	if urls[0] == urls[1] {
		t.Fatalf("got the same database twice: %s", urls[0])
	}
	for i, u := range urls {
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatalf("connect to %s: %v", u, err)
		}
		defer conn.Close(ctx)
		// A table in one database must not be visible in the other.
		if i == 0 {
			if _, err := conn.Exec(ctx, `CREATE TABLE only_in_first (x int)`); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass('only_in_first') IS NOT NULL`).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists {
			t.Error("second database sees the first one's table")
		}
	}
}

// Databases get a linguistic default collation where ICU is available, so
// that code that needs bytewise order and does not ask for it fails.
func TestLinguisticCollation(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, shared.Cluster(t).NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var provider string
	if err := conn.QueryRow(ctx, `SELECT datlocprovider::text FROM pg_database WHERE datname = current_database()`).Scan(&provider); err != nil {
		t.Fatal(err)
	}
	if provider != "i" {
		t.Skipf("got locale provider %q: this PostgreSQL has no ICU", provider)
	}
	var linguistic bool
	if err := conn.QueryRow(ctx, `SELECT 'a' < 'B'`).Scan(&linguistic); err != nil {
		t.Fatal(err)
	}
	if !linguistic {
		t.Error("got 'a' > 'B', want the linguistic order 'a' < 'B'")
	}
}

func TestDatabaseIsDroppedAfterTest(t *testing.T) {
	ctx := context.Background()
	c := shared.Cluster(t)
	var name string
	t.Run("uses", func(t *testing.T) {
		u := c.NewDatabase(t)
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		name = conn.Config().Database
		// Left open on purpose: the drop must disconnect it.
		t.Cleanup(func() { conn.Close(ctx) })
	})
	var n int
	if err := c.admin.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s: got %d after the test, want 0", name, n)
	}
}

func TestStartStop(t *testing.T) {
	shared.Cluster(t) // skips, or fails under CI, without PostgreSQL
	ctx := context.Background()
	c, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	owner, err := os.ReadFile(filepath.Join(c.Dir(), ownerFile))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(owner), strconv.Itoa(os.Getpid())+"\n"; got != want {
		t.Errorf("owner file: got %q, want %q", got, want)
	}
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	var user string
	if err := conn.QueryRow(ctx, `SELECT current_user`).Scan(&user); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if user != Superuser {
		t.Errorf("got user %q, want %q", user, Superuser)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(c.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("folder after Stop: got %v, want it gone", err)
	}
	if _, err := pgx.Connect(ctx, c.URL("postgres")); err == nil {
		t.Error("connect after Stop: got nil error, want one")
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: got %v, want nil", err)
	}
}

func TestRemoveStale(t *testing.T) {
	shared.Cluster(t)
	tests := []struct {
		name     string
		owner    string
		wantKept bool
	}{
		{"owner gone", "2147483646\n", false},
		{"owner alive", strconv.Itoa(os.Getpid()) + "\n", true},
		{"no owner file yet", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := os.MkdirTemp("", dirPrefix)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(d) })
			if tt.owner != "" {
				if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(tt.owner), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			removeStale()
			_, err = os.Stat(d)
			if kept := err == nil; kept != tt.wantKept {
				t.Errorf("got kept %v, want %v", kept, tt.wantKept)
			}
		})
	}
}

func TestFindBinaries(t *testing.T) {
	touch := func(t *testing.T, paths ...string) {
		for _, p := range paths {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name    string
		path    []string // files in a folder on PATH
		debian  []string // files under the Debian root
		want    string   // relative to the PATH folder ("path") or the Debian root
		wantErr error
	}{
		{name: "nothing", wantErr: ErrNotInstalled},
		{name: "on PATH", path: []string{"initdb", "postgres"}, debian: []string{"15/bin/initdb", "15/bin/postgres"}, want: "path"},
		{name: "initdb alone on PATH", path: []string{"initdb"}, debian: []string{"15/bin/initdb", "15/bin/postgres"}, want: "15/bin"},
		{name: "newest complete Debian version", debian: []string{
			"9.6/bin/initdb", "13/bin/initdb", "13/bin/postgres", "15/bin/initdb", "15/bin/postgres", "16/bin/initdb",
		}, want: "15/bin"},
		{name: "Debian client only", debian: []string{"15/bin/psql"}, wantErr: ErrNotInstalled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pathDir, root := t.TempDir(), t.TempDir()
			for _, f := range tt.path {
				touch(t, filepath.Join(pathDir, f))
			}
			for _, f := range tt.debian {
				touch(t, filepath.Join(root, f))
			}
			t.Setenv("PATH", pathDir)
			got, err := findBinariesIn(root)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got error %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			want := filepath.Join(root, tt.want)
			if tt.want == "path" {
				want = pathDir
			}
			if got != want {
				t.Errorf("got %s, want %s", got, want)
			}
		})
	}
}

// TestDownUpInPlace: a cluster that is down refuses connections, and once
// up again serves the same databases, with their data, at the same URL;
// Down and Up twice do nothing more, and Stop works on a cluster down.
func TestDownUpInPlace(t *testing.T) {
	shared.Cluster(t) // skips, or fails under CI, without PostgreSQL
	ctx := context.Background()
	c, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	// Not NewDatabase: the cluster is stopped, and its databases gone,
	// before the test's cleanup would drop it.
	url, err := c.CreateDatabase(ctx, "down")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)`); err != nil {
		t.Fatal(err)
	}

	if err := c.Down(); err != nil {
		t.Fatalf("Down: %v", err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Error("a connection opened before Down: got a ping through, want it cut")
	}
	conn.Close(ctx)
	if _, err := pgx.Connect(ctx, url); err == nil {
		t.Error("connect while down: got nil error, want a refusal")
	}
	if err := c.Down(); err != nil {
		t.Errorf("second Down: got %v, want nil", err)
	}

	if err := c.Up(ctx); err != nil {
		t.Fatalf("Up: %v", err)
	}
	conn, err = pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect after Up: %v", err)
	}
	defer conn.Close(ctx)
	var x int
	if err := conn.QueryRow(ctx, `SELECT x FROM kept`).Scan(&x); err != nil || x != 42 {
		t.Errorf("after Up: got %d (%v), want the row written before Down, 42", x, err)
	}
	if err := c.Up(ctx); err != nil {
		t.Errorf("second Up: got %v, want nil", err)
	}
	// The cluster's own connection, for creating and dropping databases,
	// works again too.
	if _, err := c.CreateDatabase(ctx, "after_up"); err != nil {
		t.Errorf("create a database after Up: %v", err)
	}
	if err := c.DropDatabase(ctx, "after_up"); err != nil {
		t.Errorf("drop a database after Up: %v", err)
	}

	// Stop works whether the cluster runs or is down.
	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("Stop of a down cluster: %v", err)
	}
	if _, err := os.Stat(c.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("folder after Stop: got %v, want it gone", err)
	}
}
