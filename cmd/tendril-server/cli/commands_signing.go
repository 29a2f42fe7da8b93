package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tendrildeploy/tendril/atomicfile"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/server/datadir"
)

func newSigningKeyCmd(e Env) *cobra.Command {
	group := &cobra.Command{
		Use:   "signing-key",
		Short: "Keep the coordinator's signing key outside its data folder",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	group.AddCommand(newSigningKeySealCmd(e))
	return group
}

func newSigningKeySealCmd(e Env) *cobra.Command {
	var data, out, passFile string
	var remove bool
	c := &cobra.Command{
		Use:   "seal --data DIR --out FILE --passphrase-file FILE [--remove]",
		Short: "Write the signing key sealed under a passphrase, to keep it away from the data folder",
		Long: `Write the data folder's signing key (DIR/signing.key) to FILE, encrypted
under a key derived from the passphrase (argon2id, AES-256-GCM). With
--remove, DIR/signing.key is deleted once FILE is written and read back.

The signing key is what agents trust for bundles, packages and the requests
that make them act; a copy of the data folder without it cannot drive
agents. Start the coordinator with
  tendril-server run --data DIR --signing-key FILE --signing-key-passphrase-file PASSFILE
and keep FILE (and a copy) where the data folder's backups are not: backups
of a data folder without signing.key do not hold it.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir, pass, err := dataDirOutPassphrase(c, e, data, out, passFile)
			if err != nil {
				return err
			}
			src := filepath.Join(dir, datadir.SigningFile)
			key, err := certs.LoadSigningKey(src)
			if err != nil {
				return fmt.Errorf("seal signing key: %w", err)
			}
			if _, err := os.Stat(out); err == nil {
				return fmt.Errorf("seal signing key: %s exists; choose another --out", out)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("seal signing key: %w", err)
			}
			b, err := key.Seal(pass)
			if err != nil {
				return err
			}
			if err := atomicfile.Write(out, b, 0o600); err != nil {
				return fmt.Errorf("seal signing key: %w", err)
			}
			// Read back before anything is removed: a key lost here
			// locks every agent out of new bundles and upgrades.
			if again, err := certs.LoadSigningKeyFile(out, pass); err != nil || again.Public() != key.Public() {
				return fmt.Errorf("seal signing key: %s does not open to the same key (%v); %s was kept", out, err, src)
			}
			if remove {
				if err := os.Remove(src); err != nil {
					return fmt.Errorf("seal signing key: %w", err)
				}
			}
			_, err = fmt.Fprintf(e.Stdout, "Sealed signing key %s written to %s.\nStart the coordinator with: --signing-key %s --signing-key-passphrase-file %s\n",
				key.Public(), out, out, passFile)
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&data, "data", "", "the coordinator's data folder (default $"+envData+")")
	f.StringVar(&out, "out", "", "file to write the sealed key to")
	f.StringVar(&passFile, "passphrase-file", "", "file holding the passphrase that seals the key")
	f.BoolVar(&remove, "remove", false, "delete DIR/signing.key once the sealed copy is written and checked")
	return c
}
