package datadir

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tendrildeploy/tendril/atomicfile"

	"github.com/tendrildeploy/tendril/server/secret"
)

// DatabaseFile records, sealed under the master key, the PostgreSQL URL a
// data folder was made for (init --database): a folder started without
// --database then uses it, rather than becoming a lone coordinator with
// the fleet's identity and an empty SQLite database. Sealed, because the
// URL usually holds the database's password.
const DatabaseFile = "database.sealed"

// databaseContext binds the sealed URL to its use.
const databaseContext = "data folder database url"

// SaveDatabase records url as the folder's database.
func SaveDatabase(dir, url string) error {
	s, err := secret.LoadSealer(filepath.Join(dir, MasterFile))
	if err != nil {
		return fmt.Errorf("record the database of %s: %w", dir, err)
	}
	sealed := base64.StdEncoding.EncodeToString(s.Seal([]byte(url), databaseContext))
	if err := atomicfile.Write(filepath.Join(dir, DatabaseFile), []byte(sealed+"\n"), 0o600); err != nil {
		return fmt.Errorf("record the database of %s: %w", dir, err)
	}
	return nil
}

// LoadDatabase returns the PostgreSQL URL the folder was made for, "" for
// a folder that keeps its state in its own SQLite database.
func LoadDatabase(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, DatabaseFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the database of %s: %w", dir, err)
	}
	sealed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("read the database of %s: %s is damaged: %v", dir, DatabaseFile, err)
	}
	s, err := secret.LoadSealer(filepath.Join(dir, MasterFile))
	if err != nil {
		return "", fmt.Errorf("read the database of %s: %w", dir, err)
	}
	url, err := s.Open(sealed, databaseContext)
	if err != nil {
		return "", fmt.Errorf("read the database of %s: %s does not open with this folder's master key: %w", dir, DatabaseFile, err)
	}
	return string(url), nil
}
