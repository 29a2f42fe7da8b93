package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/server/store"
)

func TestOpenCreatesPrivateFiles(t *testing.T) {
	s, path := openTest(t)
	enroll(t, s, "web-1", "prod", "tp-1") // makes sure the WAL files exist
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s: got mode %o, want 600", filepath.Base(p), got)
		}
	}
}

func TestOpenPathNeedingEscapes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a dir?x=1#frag%20", "tendril.db")
	if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	defer s.Close()
	if err := s.SetSetting(context.Background(), "k", "v"); err != nil {
		t.Fatalf("SetSetting: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at the given path: %v", err)
	}
}

func TestOpenPragmas(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	for _, tt := range []struct {
		db        *sql.DB
		queryOnly int
	}{
		{s.wdb, 0},
		{s.rdb, 1},
	} {
		db := tt.db
		var mode string
		var fk, sync, busy, queryOnly int
		if err := db.QueryRowContext(ctx, `PRAGMA query_only`).Scan(&queryOnly); err != nil {
			t.Fatal(err)
		}
		if queryOnly != tt.queryOnly {
			t.Errorf("got query_only=%d, want %d", queryOnly, tt.queryOnly)
		}
		if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" || fk != 1 || sync != 1 || busy != int(busyTimeout.Milliseconds()) {
			t.Errorf("got journal_mode=%s foreign_keys=%d synchronous=%d busy_timeout=%d, want wal 1 1 %d",
				mode, fk, sync, busy, busyTimeout.Milliseconds())
		}
	}
}

func TestLoadMigrations(t *testing.T) {
	migs, err := loadMigrations()
	if err != nil {
		t.Fatalf("loadMigrations: %v", err)
	}
	if got := len(migs); got != SchemaVersion {
		t.Fatalf("got %d migrations, want %d", got, SchemaVersion)
	}
	for i, m := range migs {
		if m.version != i+1 {
			t.Errorf("migration %d: got version %d, want %d", i, m.version, i+1)
		}
	}
}

func TestSchemaTooNew(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)`, SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	// Out of WAL mode, so that merely opening the file the normal way,
	// which turns WAL on, would rewrite its header.
	if _, err := db.Exec(`PRAGMA journal_mode(DELETE)`); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Let a rewrite, if one happened, show in the mtime.
	time.Sleep(10 * time.Millisecond)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fiBefore, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	s2, err := OpenSQLite(ctx, path)
	if err == nil {
		s2.Close()
		t.Fatal("OpenSQLite: got nil error, want ErrSchemaTooNew")
	}
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Errorf("got error %v, want one wrapping ErrSchemaTooNew", err)
	}
	for _, v := range []int{SchemaVersion, SchemaVersion + 1} {
		if !strings.Contains(err.Error(), fmt.Sprint(v)) {
			t.Errorf("error %q does not mention version %d", err, v)
		}
	}

	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fiAfter, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("refused database file was modified")
	}
	if !fiAfter.ModTime().Equal(fiBefore.ModTime()) || fiAfter.Size() != fiBefore.Size() {
		t.Errorf("got mtime %v size %d, want %v %d", fiAfter.ModTime(), fiAfter.Size(), fiBefore.ModTime(), fiBefore.Size())
	}
}

func TestOpenNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junk.db")
	if err := os.WriteFile(path, bytes.Repeat([]byte("not sqlite "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenSQLite(context.Background(), path)
	if err == nil {
		s.Close()
		t.Fatal("got nil error, want one")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file", err)
	}
}

func TestBackup(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	a := enroll(t, s, "web-1", "prod", "tp-1")

	// Writes carry on while the snapshot is taken.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.SetSetting(ctx, "counter", fmt.Sprint(i)); err != nil {
				t.Errorf("SetSetting during backup: %v", err)
				return
			}
		}
	})
	dest := filepath.Join(t.TempDir(), "backup.db")
	err := s.Backup(ctx, dest)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}

	fi, err := os.Stat(dest)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("backup: got mode %o, want 600", got)
	}
	b, err := OpenSQLite(ctx, dest)
	if err != nil {
		t.Fatalf("open backup: %v", err)
	}
	defer b.Close()
	if got := mustAgent(t, b, a.ID); !reflect.DeepEqual(got, a) {
		t.Errorf("backup: got %+v, want %+v", got, a)
	}

	if err := s.Backup(ctx, dest); err == nil || !errors.Is(err, os.ErrExist) {
		t.Errorf("existing destination: got %v, want an error wrapping os.ErrExist", err)
	}
}

func TestTimeRoundTrip(t *testing.T) {
	tests := []time.Time{
		t0,
		t0.In(time.FixedZone("x", 5*3600)),
		time.Unix(0, 1),
		time.Date(1700, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for _, in := range tests {
		arg, err := timeArg(in)
		if err != nil {
			t.Errorf("timeArg(%v): %v", in, err)
			continue
		}
		got := fromNanos(sql.NullInt64{Int64: arg.(int64), Valid: true})
		if !got.Equal(in) {
			t.Errorf("round trip of %v: got %v", in, got)
		}
	}
	if arg, err := timeArg(time.Time{}); arg != nil || err != nil {
		t.Errorf("zero time: got %v, %v, want nil, nil", arg, err)
	}
	if got := fromNanos(sql.NullInt64{}); !got.IsZero() {
		t.Errorf("NULL: got %v, want the zero time", got)
	}
}

func TestBackupNameLikeURI(t *testing.T) {
	s, _ := openTest(t)
	dir := t.TempDir()
	t.Chdir(dir)
	if err := s.Backup(context.Background(), "file:backup.db"); err != nil {
		t.Fatalf("Backup: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "file:backup.db"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() == 0 {
		t.Error("got an empty backup, want the database")
	}
}

// TestTransactionStatementsPrepared runs a transaction three times: its
// statement runs unprepared the first time, is prepared once the
// transaction has given its connection back (the writer's only one), and
// the same prepared statement serves the later transactions.
func TestTransactionStatementsPrepared(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	const q = `SELECT count(*) FROM schema_migrations WHERE version = ?` // run by this test only
	run := func() {
		t.Helper()
		err := s.tx(ctx, func(tx *sqlTx) error {
			var n int
			if err := tx.QueryRowContext(ctx, q, 1).Scan(&n); err != nil {
				return err
			}
			if n != 1 {
				return fmt.Errorf("got %d migrations numbered 1, want 1", n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	run()
	first := s.stmts.lookup(s.db, q)
	if first == nil {
		t.Fatal("after the first transaction: got no prepared statement, want one")
	}
	run()
	run()
	if got := s.stmts.lookup(s.db, q); got != first {
		t.Errorf("after three transactions: got statement %p, want the first one, %p", got, first)
	}
}
