package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/api/client"
	"github.com/tendrildeploy/tendril/server/backup"
	"github.com/tendrildeploy/tendril/version"
)

func newBackupCmd(e Env) *cobra.Command {
	var (
		data, out, passFile string
		asJSON              bool
	)
	c := &cobra.Command{
		Use:   "backup --data DIR --out FILE --passphrase-file FILE",
		Short: "Write one archive of the coordinator: database snapshot, keys (encrypted under a passphrase), Calamari, agent packages and files",
		Long: `Write one archive of the coordinator in DIR, running or not.

A running coordinator (found through DIR/run.json) takes the database
snapshot itself, so the backup is consistent while it keeps serving. The
master key and every private key are encrypted under the passphrase read
from --passphrase-file; without the passphrase the backup cannot be
restored. Restore it with "tendril-server restore".`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir, pass, err := dataDirOutPassphrase(c, e, data, out, passFile)
			if err != nil {
				return err
			}
			opts := backup.Options{DataDir: dir, Out: out, Passphrase: pass, Version: version.Version}
			if _, running := backup.RunningCoordinator(dir); running {
				cl, err := client.FromDataDir(dir)
				if err != nil {
					return err
				}
				defer cl.CloseIdleConnections()
				opts.Snapshot = cl.Snapshot
			}
			res, err := backup.Backup(c.Context(), opts)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.Stdout, res)
			}
			_, err = fmt.Fprintf(e.Stdout, "Backed up %s to %s (%d entries, %d bytes; coordinator %s, schema %d).\nKeep the passphrase apart from the backup: without it the backup cannot be restored.\n",
				dir, res.Out, len(res.Manifest.Entries), res.Size, res.Manifest.CoordinatorVersion, res.Manifest.SchemaVersion)
			if err == nil && res.NoSigningKey {
				_, err = fmt.Fprintln(e.Stdout, "The data folder holds no signing key (kept outside it, see signing-key seal): this backup does not hold it either; keep a copy of the sealed key apart.")
			}
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&data, "data", "", "the coordinator's data folder (default $"+envData+")")
	f.StringVar(&out, "out", "", "the archive to write (must not exist)")
	f.StringVar(&passFile, "passphrase-file", "", "file holding the passphrase that encrypts the keys")
	f.BoolVar(&asJSON, "json", false, "print the result and manifest as JSON")
	return c
}

func newRestoreCmd(e Env) *cobra.Command {
	var (
		data, in, passFile string
		force, asJSON      bool
	)
	c := &cobra.Command{
		Use:   "restore --in FILE --data DIR --passphrase-file FILE",
		Short: "Restore a backup into a stopped coordinator's (empty or new) data folder",
		Long: `Restore a backup made by "tendril-server backup" into DIR.

DIR must not be used by a running coordinator, and must be empty or new
unless --force is given. The archive is checked whole (checksums,
passphrase, schema version) in a temporary folder next to DIR, which
replaces DIR only when everything checked out: a failed restore changes
nothing. Start the coordinator afterwards with "tendril-server run".`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir, err := dataDir(c, data, e)
			if err != nil {
				return err
			}
			if in == "" || passFile == "" {
				return usageErrorf(c, "give --in FILE and --passphrase-file FILE")
			}
			pass, err := readPassphrase(passFile)
			if err != nil {
				return err
			}
			res, err := backup.Restore(c.Context(), backup.RestoreOptions{In: in, DataDir: dir, Passphrase: pass, Force: force})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.Stdout, res)
			}
			m := res.Manifest
			_, err = fmt.Fprintf(e.Stdout, "Restored the backup of %s (coordinator %s, schema %d) into %s.\nThumbprint: %s\nStart the coordinator with: tendril-server run --data %s\n",
				m.CreatedAt.Local().Format("2006-01-02 15:04:05 MST"), m.CoordinatorVersion, m.SchemaVersion, res.DataDir, res.Thumbprint, res.DataDir)
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&in, "in", "", "the backup archive")
	f.StringVar(&data, "data", "", "the data folder to restore into (default $"+envData+")")
	f.StringVar(&passFile, "passphrase-file", "", "file holding the backup's passphrase")
	f.BoolVar(&force, "force", false, "replace a data folder that is not empty")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}

// dataDirOutPassphrase checks the flags of a command that writes --out
// under a passphrase from a data folder, and reads the passphrase.
func dataDirOutPassphrase(c *cobra.Command, e Env, data, out, passFile string) (string, []byte, error) {
	dir, err := dataDir(c, data, e)
	if err != nil {
		return "", nil, err
	}
	if out == "" || passFile == "" {
		return "", nil, usageErrorf(c, "give --out FILE and --passphrase-file FILE")
	}
	pass, err := readPassphrase(passFile)
	if err != nil {
		return "", nil, err
	}
	return dir, pass, nil
}

// readPassphrase reads a passphrase file. One trailing newline is dropped,
// since "echo pass > file" adds it; anything else is part of the
// passphrase.
func readPassphrase(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("read passphrase: %s is empty", path)
	}
	return b, nil
}
