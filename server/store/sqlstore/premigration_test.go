package sqlstore

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// oldDatabase makes a database as the previous coordinator left it: every
// migration but the newest.
func oldDatabase(t *testing.T, path string) int {
	t.Helper()
	migs, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	s, err := openSQLite(context.Background(), path, Options{}, migs[:len(migs)-1])
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	return len(migs) - 1
}

func TestBackupBeforeMigration(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path, backups := filepath.Join(dir, "tendril.db"), filepath.Join(dir, "backups")
	old := oldDatabase(t, path)

	s, err := OpenSQLiteWith(ctx, path, Options{BackupDir: backups})
	if err != nil {
		t.Fatal(err)
	}
	b := s.PreMigrationBackup()
	s.Close()
	if !strings.HasPrefix(filepath.Base(b), "tendril-schema"+strconv.Itoa(old)+"-") || filepath.Dir(b) != backups {
		t.Fatalf("backup %q: want %s/tendril-schema%d-<time>.db", b, backups, old)
	}
	if v, err := checkVersion(ctx, b); err != nil || v != old {
		t.Fatalf("backup is at schema %d (%v), want the old %d", v, err, old)
	}
	if v, _ := checkVersion(ctx, path); v != SchemaVersion {
		t.Fatalf("database is at schema %d, want %d", v, SchemaVersion)
	}
	if st, err := os.Stat(b); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup mode: got %v (%v), want 0600", st.Mode().Perm(), err)
	}
	// Nothing to migrate, nothing copied: reopening, and a fresh database.
	s, err = OpenSQLiteWith(ctx, path, Options{BackupDir: backups})
	if err != nil {
		t.Fatal(err)
	}
	if s.PreMigrationBackup() != "" {
		t.Errorf("reopening a current database took a copy")
	}
	s.Close()
	fresh, err := OpenSQLiteWith(ctx, filepath.Join(dir, "fresh.db"), Options{BackupDir: backups})
	if err != nil {
		t.Fatal(err)
	}
	if fresh.PreMigrationBackup() != "" {
		t.Errorf("a new database took a copy")
	}
	fresh.Close()
	if n, _ := filepath.Glob(filepath.Join(backups, "*.db")); len(n) != 1 {
		t.Errorf("backups: got %d files, want 1", len(n))
	}
}

func TestNoMigrationWithoutBackup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "tendril.db")
	old := oldDatabase(t, path)
	notADir := filepath.Join(dir, "file")
	os.WriteFile(notADir, nil, 0o600)
	_, err := OpenSQLiteWith(ctx, path, Options{BackupDir: filepath.Join(notADir, "backups")})
	if err == nil || !strings.Contains(err.Error(), "back up the database before migrating") {
		t.Fatalf("got %v, want a refusal to migrate without a backup", err)
	}
	if v, _ := checkVersion(ctx, path); v != old {
		t.Fatalf("database is at schema %d, want it left at %d", v, old)
	}
}
