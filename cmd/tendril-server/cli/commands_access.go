package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
)

// maxPasswordInput bounds what is read for a password: the coordinator
// refuses anything longer than server.MaxPasswordLen anyway.
const maxPasswordInput = 64 << 10

func newUserCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "user",
		Short: "People who sign in to the web console with a password (admin key needed)",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)

	var (
		passwordFile string
		createJSON   bool
		userRole     roleFlags
	)
	create := &cobra.Command{
		Use:   "create NAME [--role ROLE [--environment ENV]...] [--password-file FILE]",
		Short: "Add a console user; the password is asked for twice on a terminal, else read from --password-file or stdin",
		Long: `Add a user who signs in to the web console with a name and password.

The password is never a flag value, which would show in the process list
and the shell's history. On a terminal it is asked for twice, without
echo. Otherwise it is read from --password-file FILE ("-" for stdin) or
from stdin: the whole input less one trailing newline. It must have at
least 8 characters. The coordinator stores it as an argon2id hash.

` + roleHelp,
		Args: oneArg("user name"),
		RunE: func(c *cobra.Command, args []string) error {
			role, envs, err := userRole.role(c)
			if err != nil {
				return err
			}
			password, err := readNewPassword(e, passwordFile, args[0])
			if err != nil {
				return err
			}
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				u, err := cl.CreateUser(ctx, args[0], password, role, envs)
				if err != nil {
					return err
				}
				if createJSON {
					return writeJSON(e.Stdout, u)
				}
				_, err = fmt.Fprintf(e.Stdout, "Created user %s, role %s: they can sign in to the console now.\n", u.Name, roleText(u.Role, u.Environments))
				return err
			})
		},
	}
	create.Flags().StringVar(&passwordFile, "password-file", "", `file holding the password ("-": stdin); one trailing newline is dropped`)
	create.Flags().BoolVar(&createJSON, "json", false, "print the user as JSON")
	userRole.add(create, false)

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the console users",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				us, err := cl.Users(ctx)
				if err != nil {
					return err
				}
				if listJSON {
					return writeJSON(e.Stdout, us)
				}
				return writeUsers(e.Stdout, us)
			})
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print the GET /api/users array")

	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Remove a console user; their console sessions end",
		Args:  oneArg("user name"),
		RunE: func(c *cobra.Command, args []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				if err := cl.DeleteUser(ctx, args[0]); err != nil {
					return err
				}
				_, err := fmt.Fprintf(e.Stdout, "Deleted user %s; their console sessions have ended.\n", args[0])
				return err
			})
		},
	}
	group.AddCommand(create, list, del)
	return group
}

func newAPIKeyCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "apikey",
		Short: "API keys for the HTTP API and the admin commands (admin key needed)",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)

	var (
		keyRole    roleFlags
		createJSON bool
	)
	create := &cobra.Command{
		Use:   "create NAME [--role ROLE [--environment ENV]...] [--admin]",
		Short: "Make an API key and print it; it is shown only this once",
		Long: `Make an API key and print it. Only its hash is kept: the key is shown
only this once. The key init wrote to the data folder's admin.key is an
admin key.

` + roleHelp,
		Args: oneArg("key name"),
		RunE: func(c *cobra.Command, args []string) error {
			role, envs, err := keyRole.role(c)
			if err != nil {
				return err
			}
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				k, err := cl.CreateAPIKey(ctx, args[0], role, envs)
				if err != nil {
					return err
				}
				if createJSON {
					return writeJSON(e.Stdout, k)
				}
				if _, err := fmt.Fprintln(e.Stdout, k.Key); err != nil {
					return err
				}
				// On stderr, so that `KEY=$(tendril-server apikey create ci)`
				// captures the key alone.
				fmt.Fprintf(e.Stderr, "Created API key %s (id %s), role %s. Keep the key now: it is not shown again.\n", k.Name, k.ID, roleText(k.Role, k.Environments))
				return nil
			})
		},
	}
	create.Flags().BoolVar(&createJSON, "json", false, "print the key and its record as JSON")
	keyRole.add(create, true)

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the API keys, revoked ones too (never the keys themselves)",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				ks, err := cl.APIKeys(ctx)
				if err != nil {
					return err
				}
				if listJSON {
					return writeJSON(e.Stdout, ks)
				}
				return writeAPIKeys(e.Stdout, ks)
			})
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print the GET /api/api-keys array")

	var revokeJSON bool
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key: the API refuses it and console sessions signed in with it end",
		Args:  oneArg("key id (see apikey list)"),
		RunE: func(c *cobra.Command, args []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				k, err := cl.RevokeAPIKey(ctx, args[0])
				if err != nil {
					return err
				}
				if revokeJSON {
					return writeJSON(e.Stdout, k)
				}
				_, err = fmt.Fprintf(e.Stdout, "Revoked API key %s (id %s).\n", k.Name, k.ID)
				return err
			})
		},
	}
	revoke.Flags().BoolVar(&revokeJSON, "json", false, "print the revoked key's record as JSON")
	group.AddCommand(create, list, revoke)
	return group
}

func newTokenListCmd(e Env, t *targetFlags) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List enrollment tokens and whether each is unused, used or expired (never their secrets)",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, *t, e, func(ctx context.Context, cl *client.Client) error {
				ts, err := cl.Tokens(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(e.Stdout, ts)
				}
				return writeTokens(e.Stdout, ts)
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the GET /api/tokens array")
	return c
}

func newTokenRevokeCmd(e Env, t *targetFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an enrollment token: it can no longer enroll an agent",
		Args:  oneArg("token id (see token list)"),
		RunE: func(c *cobra.Command, args []string) error {
			return adminCall(c, *t, e, func(ctx context.Context, cl *client.Client) error {
				if err := cl.RevokeToken(ctx, args[0]); err != nil {
					return err
				}
				_, err := fmt.Fprintf(e.Stdout, "Revoked enrollment token %s.\n", args[0])
				return err
			})
		},
	}
}

// readNewPassword gets a new user's password: from --password-file, else
// asked twice on a terminal, else from stdin.
func readNewPassword(e Env, file, user string) (string, error) {
	if file != "" {
		var r io.Reader = e.Stdin
		if file != "-" {
			f, err := os.Open(file)
			if err != nil {
				return "", fmt.Errorf("read password: %w", err)
			}
			defer f.Close()
			r = f
		}
		return readPasswordFrom(r, file)
	}
	if fd, ok := terminalFd(e.Stdin); ok {
		return askPasswordTwice(e.Stderr, user, func() (string, error) {
			b, err := term.ReadPassword(fd)
			fmt.Fprintln(e.Stderr) // the newline the user typed was not echoed
			return string(b), err
		})
	}
	return readPasswordFrom(e.Stdin, "stdin")
}

// terminalFd returns the file descriptor of r if it is a terminal.
func terminalFd(r io.Reader) (int, bool) {
	f, ok := r.(interface{ Fd() uintptr })
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

// askPasswordTwice prompts on w and reads with read until two entries
// match, at most three times.
func askPasswordTwice(w io.Writer, user string, read func() (string, error)) (string, error) {
	for range 3 {
		fmt.Fprintf(w, "Password for %s: ", user)
		first, err := read()
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if len(first) < api.MinPasswordLen {
			fmt.Fprintf(w, "Use at least %d characters.\n", api.MinPasswordLen)
			continue
		}
		fmt.Fprint(w, "Again: ")
		second, err := read()
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if first == second {
			return first, nil
		}
		fmt.Fprintln(w, "The passwords differ; try again.")
	}
	return "", errors.New("read password: no two matching entries; nothing was changed")
}

// readPasswordFrom reads a whole password file or stream, less one
// trailing newline.
func readPasswordFrom(r io.Reader, what string) (string, error) {
	if r == nil {
		return "", fmt.Errorf("read password from %s: nothing to read; give --password-file FILE or run on a terminal", what)
	}
	b, err := io.ReadAll(io.LimitReader(bufio.NewReader(r), maxPasswordInput+1))
	if err != nil {
		return "", fmt.Errorf("read password from %s: %w", what, err)
	}
	if len(b) > maxPasswordInput {
		return "", fmt.Errorf("read password from %s: more than %d bytes", what, maxPasswordInput)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return "", fmt.Errorf("read password from %s: it is empty", what)
	}
	return string(b), nil
}

// roleHelp is what the create commands' help says about roles.
const roleHelp = `--role gives what it may do (default operator):
  admin     everything, managing users and API keys included
  operator  everything but managing users and API keys, exports and
            imports, the machine policy and goroutine dumps
  deployer  run, cancel and read tasks and read agents in the environments
            given with --environment (repeatable, at least one); upload
            task files; read the coordinator's settings
  viewer    only read, and not users, API keys, exports, goroutine dumps
            or diagnostics archives`

// roleFlags are --role and --environment of the create commands, and
// --admin, the alias of --role admin that scripts made before roles use.
type roleFlags struct {
	name  string
	envs  []string
	admin bool
}

func (f *roleFlags) add(c *cobra.Command, adminAlias bool) {
	c.Flags().StringVar(&f.name, "role", "", "admin, operator, deployer or viewer (default operator)")
	c.Flags().StringArrayVar(&f.envs, "environment", nil, "an environment a deployer may act in (repeatable)")
	if adminAlias {
		c.Flags().BoolVar(&f.admin, "admin", false, "the same as --role admin")
	}
}

// role checks the flags before anything is asked or sent: a deployer
// without an environment, environments for another role, or --admin
// with another role are usage errors.
func (f *roleFlags) role(c *cobra.Command) (api.Role, []string, error) {
	role := api.Role(f.name)
	if f.admin {
		if f.name != "" && !strings.EqualFold(f.name, string(api.RoleAdmin)) {
			return "", nil, usageErrorf(c, "--admin is --role admin: it cannot go with --role %s", f.name)
		}
		role = api.RoleAdmin
	}
	role, envs, err := api.ValidateRole(role, f.envs)
	if err != nil {
		return "", nil, usageErrorf(c, "%s", err.Error())
	}
	return role, envs, nil
}

// roleText is a role for a person: "deployer for Dev, Test".
func roleText(role api.Role, envs []string) string {
	if len(envs) == 0 {
		return string(role)
	}
	return string(role) + " for " + strings.Join(envs, ", ")
}

// writeUsers prints the users table.
func writeUsers(w io.Writer, us []api.UserView) error {
	if len(us) == 0 {
		_, err := fmt.Fprintln(w, "No users yet. Add one with \"tendril-server user create NAME\".")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tENVIRONMENTS\tCREATED")
	for _, u := range us {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Name, u.Role, environmentsCell(u.Environments), u.CreatedAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// writeAPIKeys prints the API keys table.
func writeAPIKeys(w io.Writer, ks []api.APIKeyView) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tROLE\tENVIRONMENTS\tCREATED\tREVOKED")
	for _, k := range ks {
		revoked := "-"
		if k.RevokedAt != nil {
			revoked = k.RevokedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Role, environmentsCell(k.Environments), k.CreatedAt.UTC().Format(time.RFC3339), revoked)
	}
	return tw.Flush()
}

// environmentsCell is a deployer's environments in a table, "all" for
// the roles that act in every environment.
func environmentsCell(envs []string) string {
	if len(envs) == 0 {
		return "all"
	}
	return strings.Join(envs, ",")
}

// writeTokens prints the enrollment tokens table.
func writeTokens(w io.Writer, ts []api.TokenView) error {
	if len(ts) == 0 {
		_, err := fmt.Fprintln(w, "No enrollment tokens. Create one with \"tendril-server token create --environment ENV\".")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tENVIRONMENT\tSTATE\tEXPIRES\tUSED BY")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Environment, t.State, t.ExpiresAt.UTC().Format(time.RFC3339), dash(strings.TrimSpace(t.UsedBy)))
	}
	return tw.Flush()
}
