// Package datadir is the layout of a coordinator's data folder: the file
// and folder names that the coordinator, backup and restore, and the
// commands run on its host agree on. Init makes a folder (keys, identity,
// database and admin key); LoadIdentity reads the coordinator's identity
// from one. Everything else about the folder belongs to its users.
package datadir

import (
	"path/filepath"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/certs"
)

// Files in the data folder. The client-facing ones, api.RunFile and
// api.AdminKeyFile, are part of the API's contract.
const (
	CertFile     = "server.crt"
	KeyFile      = api.IdentityKeyFile
	PrevCertFile = "server.prev.crt" // served during a rotation to agents that ask for it
	PrevKeyFile  = "server.prev.key"
	NextCertFile = "server.next.crt" // being announced to agents, not yet served
	NextKeyFile  = "server.next.key"
	SigningFile  = "signing.key"
	MasterFile   = "master.key"
	DBFile       = "tendril.db"
)

// Folders in the data folder.
const (
	// Calamari holds uploaded Calamari bundles, one file per version.
	Calamari = "calamari"
	// AgentPackages holds uploaded agent binaries.
	AgentPackages = "agent-packages"
	// Files holds files uploaded for tasks, named by SHA-256.
	Files = "files"
	// Backups holds the database copies taken before schema migrations.
	Backups = "backups"
)

// LoadIdentity reads the coordinator's current TLS identity from dir. An
// uninitialized folder is an error wrapping api.ErrNotInitialized.
func LoadIdentity(dir string) (*certs.Identity, error) {
	if err := api.CheckInitialized(dir); err != nil {
		return nil, err
	}
	return certs.LoadIdentity(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
}

// ReadThumbprint returns the thumbprint of the coordinator in dir without
// starting it.
func ReadThumbprint(dir string) (string, error) {
	id, err := LoadIdentity(dir)
	if err != nil {
		return "", err
	}
	return id.Thumbprint, nil
}
