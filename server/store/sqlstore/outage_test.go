package sqlstore

import (
	"bytes"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tendrildeploy/tendril/internal/pgtest"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

func TestUnreachable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"shutting down", fmt.Errorf("get agent: %w", &pgconn.PgError{Code: "57P01"}), true},
		{"starting up", &pgconn.PgError{Code: "57P03"}, true},
		{"too many clients", &pgconn.PgError{Code: "53300"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"broken mid-query", fmt.Errorf("failed to receive message: %w", io.ErrUnexpectedEOF), true},
		{"bad connection", driver.ErrBadConn, true},
		{"marked already", fmt.Errorf("x: %w", store.ErrUnavailable), true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, false},
		{"wrong password", &pgconn.PgError{Code: "28P01"}, false},
		{"syntax error", &pgconn.PgError{Code: "42601"}, false},
		{"not found", store.ErrNotFound, false},
		{"anything else", errors.New("boom"), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		if got := unreachable(tt.err); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
		marked := markUnreachable(context.Background(), tt.err)
		if errors.Is(marked, store.ErrUnavailable) != tt.want {
			t.Errorf("%s: marked %v, want marked %v", tt.name, marked, tt.want)
		}
		if tt.err != nil && (!errors.Is(marked, tt.err) || marked.Error() != tt.err.Error()) {
			t.Errorf("%s: marking changed the error: got %q, want %q and what it matched", tt.name, marked, tt.err)
		}
	}
	// A query whose caller gave up is not an outage.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := markUnreachable(ctx, io.ErrUnexpectedEOF); errors.Is(err, store.ErrUnavailable) {
		t.Errorf("cancelled: got %v marked, want it left alone", err)
	}
}

// TestPostgresOutageErrors halts PostgreSQL under an open store: every
// kind of call (a read, a write, a transaction, a large object) fails with
// an error matching store.ErrUnavailable, while a record that does not
// exist stays ErrNotFound; once PostgreSQL is back the same store works,
// with no reopening.
func TestPostgresOutageErrors(t *testing.T) {
	pg.Cluster(t) // skips, or fails on CI, where PostgreSQL is not installed
	ctx := context.Background()
	c, err := pgtest.Start(ctx) // of its own: halting the shared one would disturb the tests beside
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	s, err := OpenPostgres(ctx, c.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := enroll(t, s, "web-1", "prod", "tp-1")
	if _, err := s.AgentByID(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("missing agent with the database up: got %v, want ErrNotFound only", err)
	}

	calls := []struct {
		name string
		call func() error
	}{
		{"read one row", func() error { _, err := s.AgentByID(ctx, a.ID); return err }},
		{"read rows", func() error { _, err := s.ListAgents(ctx); return err }},
		{"write", func() error { return s.SetSetting(ctx, "k", "v") }},
		{"transaction", func() error {
			_, err := s.Register(ctx, store.RegisterParams{TokenHash: hashOf("none"), Thumbprint: "tp-2", Name: "web-2", Now: t0, NewID: "agent-web-2"})
			return err
		}},
		{"large object", func() error { _, err := s.ReadBlob(ctx, "calamari/1.0.0", io.Discard); return err }},
	}
	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range calls {
		// The first call meets the pool's connections that the shutdown
		// ended, the later ones a refused connection: both are outages.
		for i := range 2 {
			if err := tc.call(); !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("%s, call %d during the outage: got %v, want an error matching store.ErrUnavailable", tc.name, i+1, err)
			}
		}
	}
	if err := c.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := s.AgentByID(ctx, a.ID); err != nil || got.Name != "web-1" {
		t.Fatalf("after the outage: got %+v, %v", got, err)
	}
	if err := s.SetSetting(ctx, "k", "v"); err != nil {
		t.Fatalf("write after the outage: %v", err)
	}
}

// TestSQLiteDiskFull fills the file system holding a SQLite store: a
// write, a transaction and a backup fail with errors of kind
// kind.ErrNoSpace (SQLITE_FULL), reads go on, and once space is freed
// the same store writes again.
func TestSQLiteDiskFull(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("tmpfs mounts are Linux's")
	}
	mount := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", mount).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mount).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mount, err, out)
		}
	})
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(mount, "tendril.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close() // before the unmount
	a := enroll(t, s, "web-1", "prod", "tp-1")
	createToken(t, s, "secret-web-2", "prod", t0.Add(time.Hour))

	ballast := filepath.Join(mount, "ballast")
	f, err := os.Create(ballast)
	if err != nil {
		t.Fatal(err)
	}
	for chunk := make([]byte, 64<<10); ; {
		if _, err := f.Write(chunk); errors.Is(err, syscall.ENOSPC) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	f.Close()

	big := bytes.Repeat([]byte("m"), 1<<20)
	writes := []struct {
		name string
		call func() error
	}{
		{"write", func() error { return s.SetSetting(ctx, "k", string(big)) }},
		{"transaction", func() error {
			_, err := s.Register(ctx, store.RegisterParams{TokenHash: hashOf("secret-web-2"), Thumbprint: "tp-2", Name: "web-2", Now: t0, NewID: "agent-web-2"})
			return err
		}},
		{"backup", func() error { return s.Backup(ctx, filepath.Join(mount, "snapshot.db")) }},
	}
	for _, w := range writes {
		if err := w.call(); !errors.Is(err, kind.ErrNoSpace) {
			t.Errorf("%s on a full disk: got %v, want an error of kind ErrNoSpace", w.name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(mount, "snapshot.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed backup left its file: %v", err)
	}
	if got, err := s.AgentByID(ctx, a.ID); err != nil || got.Name != "web-1" {
		t.Fatalf("read on a full disk: got %+v, %v", got, err)
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSetting(ctx, "k", string(big)); err != nil {
		t.Fatalf("write once space is freed: %v", err)
	}
}
