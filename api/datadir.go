package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// AdminKeyFile holds the admin API key (0600) so admin commands run on
// the coordinator's host need no --api-key.
const AdminKeyFile = "admin.key"

// RunFile is written while the coordinator runs and says where its
// listeners are, so admin commands given --data can find it.
const RunFile = "run.json"

// ErrNotInitialized means the data folder has no coordinator in it.
var ErrNotInitialized = errors.New("data folder is not initialized")

// RunInfo is the content of RunFile.
type RunInfo struct {
	PID       int    `json:"pid"`
	Version   string `json:"version"`
	HTTP      string `json:"http"`       // host:port of the API
	HTTPS     bool   `json:"https"`      // the API is served over TLS
	AgentAddr string `json:"agent_addr"` // host:port agents dial
}

// ReadRunInfo reads RunFile from a data folder.
func ReadRunInfo(dir string) (RunInfo, error) {
	b, err := os.ReadFile(filepath.Join(dir, RunFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return RunInfo{}, fmt.Errorf("no coordinator is running with data folder %s (start it with \"tendril-server run --data %s\")", dir, dir)
		}
		return RunInfo{}, fmt.Errorf("read %s: %w", RunFile, err)
	}
	var ri RunInfo
	if err := json.Unmarshal(b, &ri); err != nil {
		return RunInfo{}, fmt.Errorf("read %s: %w", RunFile, err)
	}
	return ri, nil
}

// IdentityKeyFile is the coordinator's TLS private key. Init writes it
// last, so its presence is what marks a data folder as initialized.
const IdentityKeyFile = "server.key"

// CheckInitialized returns an error wrapping ErrNotInitialized, saying how
// to make one, when dir holds no coordinator.
func CheckInitialized(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, IdentityKeyFile)); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w (run \"tendril-server init --data %s\" first)", dir, ErrNotInitialized, dir)
	}
	return nil
}
