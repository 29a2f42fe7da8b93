package cli

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
)

// cliIn is cli with stdin.
func cliIn(t *testing.T, stdin string, vars map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	code = Run(context.Background(), args, Env{Stdout: &out, Stderr: &errOut, Stdin: strings.NewReader(stdin),
		Getenv: func(k string) string { return vars[k] }})
	return code, out.String(), errOut.String()
}

// TestAccessCommandsEndToEnd drives the user, apikey and token commands
// against a real coordinator.
func TestAccessCommandsEndToEnd(t *testing.T) {
	dir, ri := startCoordinatorCmd(t)
	apiURL, err := client.RunInfoURL(ri)
	if err != nil {
		t.Fatal(err)
	}
	pwFile := writeTempFile(t, "pw", []byte("bobs password\n"))

	steps := []struct {
		name       string
		stdin      string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"user from stdin", "correct horse\n", []string{"user", "create", "alice"}, 0, "Created user alice, role operator", ""},
		{"user from a file", "", []string{"user", "create", "bob", "--password-file", pwFile}, 0, "Created user bob", ""},
		{"user from stdin as a file", "carols password", []string{"user", "create", "carol", "--password-file", "-", "--json"}, 0, `"name": "carol"`, ""},
		{"empty password", "", []string{"user", "create", "dave"}, 1, "", "it is empty"},
		{"short password", "short\n", []string{"user", "create", "dave"}, 1, "", "too short"},
		{"missing password file", "", []string{"user", "create", "dave", "--password-file", dir + "/nope"}, 1, "", "read password"},
		{"taken name", "correct horse\n", []string{"user", "create", "ALICE"}, 1, "", "exists already (HTTP 409)"},
		{"bad name", "correct horse\n", []string{"user", "create", "../x"}, 1, "", `field "name": "../x" is not a name of 1-63 letters`},
		{"no name", "", []string{"user", "create"}, 2, "", "want exactly one user name"},
		{"user list", "", []string{"user", "list"}, 0, "alice", ""},
		{"delete bob", "", []string{"user", "delete", "bob"}, 0, "Deleted user bob", ""},
		{"delete bob again", "", []string{"user", "delete", "bob"}, 1, "", `no user named "bob" (HTTP 404)`},
		{"no id to revoke", "", []string{"apikey", "revoke"}, 2, "", "want exactly one key id"},
		{"unknown key", "", []string{"apikey", "revoke", "nope"}, 1, "", "no API key"},
		{"user group alone", "", []string{"user"}, 2, "", "no command given"},
		{"deployer user", "correct horse\n", []string{"user", "create", "erin", "--role", "deployer", "--environment", "Dev", "--environment", "Test"}, 0, "Created user erin, role deployer for Dev, Test", ""},
		{"viewer user", "correct horse\n", []string{"user", "create", "fred", "--role", "viewer"}, 0, "role viewer", ""},
		{"deployer without environment", "correct horse\n", []string{"user", "create", "gina", "--role", "deployer"}, 2, "", "a deployer needs at least one environment"},
		{"viewer with an environment", "correct horse\n", []string{"user", "create", "gina", "--role", "viewer", "--environment", "Dev"}, 2, "", "environments limit a deployer only"},
		{"unknown role", "correct horse\n", []string{"user", "create", "gina", "--role", "root"}, 2, "", `role "root": want admin, operator, deployer or viewer`},
		{"user has no --admin", "correct horse\n", []string{"user", "create", "gina", "--admin"}, 2, "", "unknown flag: --admin"},
		{"deployer key", "", []string{"apikey", "create", "deploy", "--role", "deployer", "--environment", "Dev"}, 0, "tdk_", "role deployer for Dev"},
		{"admin alias", "", []string{"apikey", "create", "root-2", "--admin"}, 0, "tdk_", "role admin"},
		{"admin alias against a role", "", []string{"apikey", "create", "x", "--admin", "--role", "viewer"}, 2, "", "--admin is --role admin: it cannot go with --role viewer"},
		{"user list shows roles", "", []string{"user", "list"}, 0, "deployer  Dev,Test", ""},
		{"apikey list shows roles", "", []string{"apikey", "list"}, 0, "deployer  Dev", ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			code, stdout, stderr := cliIn(t, s.stdin, nil, append(s.args, "--data", dir)...)
			if code != s.wantCode || !strings.Contains(stdout, s.wantStdout) || !strings.Contains(stderr, s.wantStderr) {
				t.Fatalf("got %d, stdout %q, stderr %q; want %d with %q and %q", code, stdout, stderr, s.wantCode, s.wantStdout, s.wantStderr)
			}
		})
	}
	code, stdout, _ := cliIn(t, "", nil, "user", "list", "--json", "--data", dir)
	var users []api.UserView
	if code != 0 || json.Unmarshal([]byte(stdout), &users) != nil || len(users) != 4 || users[0].Name != "alice" || users[1].Name != "carol" ||
		users[2].Role != api.RoleDeployer || !slices.Equal(users[2].Environments, []string{"Dev", "Test"}) || users[3].Role != api.RoleViewer {
		t.Fatalf("user list --json: got %d %q, want alice, carol, erin the deployer for Dev and Test, fred the viewer", code, stdout)
	}

	// A user made on the command line signs in to the console.
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer hc.CloseIdleConnections()
	resp, err := hc.PostForm(apiURL+"/signin", url.Values{"user": {"alice"}, "password": {"correct horse"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) == 0 {
		t.Fatalf("console sign-in as alice: got %d, want 303 with a session cookie", resp.StatusCode)
	}

	// An API key: printed alone on stdout, usable, then revoked.
	code, stdout, stderr := cliIn(t, "", nil, "apikey", "create", "ci", "--data", dir)
	key := strings.TrimSpace(stdout)
	if code != 0 || !strings.HasPrefix(key, "tdk_") || strings.Count(stdout, "\n") != 1 || !strings.Contains(stderr, "not shown again") {
		t.Fatalf("apikey create: got %d, stdout %q, stderr %q; want the key alone on stdout", code, stdout, stderr)
	}
	withKey := map[string]string{envURL: apiURL, envAPIKey: key}
	if code, _, stderr := cliIn(t, "", withKey, "agents", "list"); code != 0 {
		t.Fatalf("agents list with the new key: got %d %q, want 0", code, stderr)
	}
	if code, _, stderr := cliIn(t, "", withKey, "user", "list"); code != 1 || !strings.Contains(stderr, `API key "ci" has the role operator`) ||
		!strings.Contains(stderr, "GET /api/users needs the role admin") || !strings.Contains(stderr, "(HTTP 403)") {
		t.Fatalf("user list with an operator key: got %d %q, want 1 saying its role and the one needed", code, stderr)
	}
	if code, _, stderr := cliIn(t, "", withKey, "apikey", "create", "escalate", "--admin"); code != 1 || !strings.Contains(stderr, "HTTP 403") {
		t.Fatalf("apikey create with a standard key: got %d %q, want 1 with 403", code, stderr)
	}
	code, stdout, _ = cliIn(t, "", nil, "apikey", "list", "--json", "--data", dir)
	var keys []api.APIKeyView
	if code != 0 || json.Unmarshal([]byte(stdout), &keys) != nil || len(keys) != 4 || keys[0].Name != "ci" || keys[0].Admin || keys[0].Role != api.RoleOperator {
		t.Fatalf("apikey list --json: got %d %q, want ci (operator) first of four", code, stdout)
	}
	// Newest first: ci, then root-2 and deploy from the steps, then the
	// key init made.
	keys = []api.APIKeyView{keys[0], keys[3]}
	if keys[1].Role != api.RoleAdmin || !keys[1].Admin {
		t.Fatalf("apikey list --json: got %+v last, want the admin key init made", keys[1])
	}
	if strings.Contains(stdout, key) {
		t.Fatal("apikey list shows a key")
	}
	if code, stdout, _ := cliIn(t, "", nil, "apikey", "list", "--data", dir); code != 0 || !strings.Contains(stdout, "ID") || !strings.Contains(stdout, "operator") {
		t.Fatalf("apikey list: got %d %q, want a table", code, stdout)
	}
	if code, stdout, stderr := cliIn(t, "", nil, "apikey", "revoke", keys[0].ID, "--data", dir); code != 0 || !strings.Contains(stdout, "Revoked API key ci") {
		t.Fatalf("apikey revoke: got %d %q %q", code, stdout, stderr)
	}
	if code, _, stderr := cliIn(t, "", withKey, "agents", "list"); code != 1 || !strings.Contains(stderr, "HTTP 401") {
		t.Fatalf("agents list with the revoked key: got %d %q, want 1 with 401", code, stderr)
	}
	if code, stdout, stderr := cliIn(t, "", nil, "apikey", "list", "--json", "--data", dir); code != 0 || !strings.Contains(stdout, `"root-2"`) {
		t.Fatalf("apikey list: got %d %q %q", code, stdout, stderr)
	}
	var all []api.APIKeyView
	_, stdout, _ = cliIn(t, "", nil, "apikey", "list", "--json", "--data", dir)
	json.Unmarshal([]byte(stdout), &all)
	for _, k := range all {
		if k.Name == "root-2" {
			if code, _, stderr := cliIn(t, "", nil, "apikey", "revoke", k.ID, "--data", dir); code != 0 {
				t.Fatalf("revoke root-2: got %d %q", code, stderr)
			}
		}
	}
	if code, _, stderr := cliIn(t, "", nil, "apikey", "revoke", keys[1].ID, "--data", dir); code != 1 || !strings.Contains(stderr, "last valid admin key") ||
		!strings.Contains(stderr, "tendril-server apikey create NAME --role admin") {
		t.Fatalf("revoke the last admin key: got %d %q, want refused, naming the command that makes another", code, stderr)
	}

	// Tokens: listed without their secrets, revoked by id.
	code, join, _ := cliIn(t, "", nil, "token", "create", "--environment", "Prod", "--data", dir)
	if code != 0 {
		t.Fatalf("token create: %d", code)
	}
	code, stdout, _ = cliIn(t, "", nil, "token", "list", "--json", "--data", dir)
	var tokens []api.TokenView
	if code != 0 || json.Unmarshal([]byte(stdout), &tokens) != nil || len(tokens) != 1 || tokens[0].State != api.TokenUnused || tokens[0].Environment != "Prod" {
		t.Fatalf("token list --json: got %d %q, want one unused token for Prod", code, stdout)
	}
	if secret := join[strings.LastIndex(join, "=")+1:]; strings.Contains(stdout, strings.TrimSpace(secret)) {
		t.Fatal("token list shows the token's secret")
	}
	if code, stdout, _ := cliIn(t, "", nil, "token", "revoke", tokens[0].ID, "--data", dir); code != 0 || !strings.Contains(stdout, "Revoked") {
		t.Fatalf("token revoke: got %d %q", code, stdout)
	}
	if code, stdout, _ := cliIn(t, "", nil, "token", "list", "--data", dir); code != 0 || !strings.Contains(stdout, "No enrollment tokens") {
		t.Fatalf("token list after the revoke: got %d %q, want none", code, stdout)
	}
	if code, _, stderr := cliIn(t, "", nil, "token", "revoke", tokens[0].ID, "--data", dir); code != 1 || !strings.Contains(stderr, "HTTP 404") {
		t.Fatalf("token revoke again: got %d %q, want 1 with 404", code, stderr)
	}
}

func TestAskPasswordTwice(t *testing.T) {
	errTTY := errors.New("terminal went away")
	tests := []struct {
		name    string
		entries []string
		want    string
		wantErr string
	}{
		{"matching", []string{"correct horse", "correct horse"}, "correct horse", ""},
		{"a typo, then matching", []string{"correct horse", "correct hose", "correct horse", "correct horse"}, "correct horse", ""},
		{"too short, then matching", []string{"short", "correct horse", "correct horse"}, "correct horse", ""},
		{"never matching", []string{"aaaaaaaa", "bbbbbbbb", "aaaaaaaa", "bbbbbbbb", "aaaaaaaa", "bbbbbbbb"}, "", "no two matching entries"},
		{"the terminal fails", nil, "", "terminal went away"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prompts strings.Builder
			i := 0
			got, err := askPasswordTwice(&prompts, "alice", func() (string, error) {
				if i >= len(tt.entries) {
					return "", errTTY
				}
				i++
				return tt.entries[i-1], nil
			})
			if got != tt.want || (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %q, %v; want %q, %q", got, err, tt.want, tt.wantErr)
			}
			if !strings.HasPrefix(prompts.String(), "Password for alice: ") {
				t.Fatalf("prompts: got %q, want them to name the user", prompts.String())
			}
			if strings.Contains(prompts.String(), "correct horse") {
				t.Fatal("the password was echoed in the prompts")
			}
		})
	}
}
