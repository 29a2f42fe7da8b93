package server

// Every API endpoint, from one table: refused without a valid key (none,
// wrong, revoked) and with bad input (empty, oversize, wrong types,
// unknown ids), each refusal a JSON error a person can act on, with
// nothing changed. The table's keys are the documented routes, which
// TestOpenAPICoversEveryRoute ties to the registered ones: a new route
// without a row here fails TestAPIEndpoints.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/internal/servertest"

	"github.com/google/uuid"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/backup"
	"github.com/tendrildeploy/tendril/server/httpapi"
	"github.com/tendrildeploy/tendril/server/secret"
	"github.com/tendrildeploy/tendril/server/store"
)

// badInput is one bad request to an endpoint and the refusal it must get.
type badInput struct {
	name string
	// path replaces the endpoint's path (an unknown id, a bad query).
	path string
	body string
	// oversize sends a body of the endpoint's limit plus one byte as a
	// stream (JSON endpoints), or, for uploads, only announces that size
	// in Content-Length: the refusal must come before gigabytes are sent.
	oversize bool
	status   int
	msg      string // the error must contain this
}

// endpoint is one route's row: a valid request (refused all the same
// without a valid key, and able to change state if it were not), and its
// bad inputs. noInput says why an endpoint has no bad input to send.
type endpoint struct {
	// roles may call the route: every other role's key is refused with
	// 403 (TestAPIRoles), and httpapi.Routes must say the same.
	roles   []api.Role
	path    string
	body    string
	raw     bool // body is bytes (an upload), not JSON
	bad     []badInput
	noInput string
}

// apiFixture is the coordinator state the table's requests refer to.
type apiFixture struct {
	agent, away   string // a connected agent and one that never connected
	listening     string // a listening agent the coordinator cannot reach
	rollout       string // a running rollout, held by a busy agent
	task          string // a queued task on the away agent
	token, apiKey string // IDs of an enrollment token and an extra API key
	user          string
	revokedKey    string
	node          string // this coordinator's node name
	agentBinary   string // an agent package stamped 3.0.0 for linux/amd64
}

func setUpAPIFixture(t *testing.T, ts *testServer) apiFixture {
	t.Helper()
	ctx := context.Background()
	fx := apiFixture{agent: "web-1", away: "away-1", listening: "dmz-1", user: "ops", node: ts.cfg.NodeName,
		agentBinary: string(servertest.AgentBinary(t, "3.0.0", "linux", "amd64"))}
	ts.pushPackage(t, "2.0.0", "linux", "amd64")
	ts.upload(t, packBundle(t, "1.0.0", 0))
	f := newFakeAgent(t, ts, fx.agent, "Prod", "1.0.0")
	ts.waitConnected(t, fx.agent)
	makeBusy(t, ts, f) // the rollout waits for it

	p, err := dialPeer(t, ts, newIdentity(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.register(ts.token(t, "Away"), fx.away, false); err != nil {
		t.Fatal(err)
	}
	p.sess.Close()
	away, err := ts.store.AgentByName(ctx, fx.away)
	if err != nil {
		t.Fatal(err)
	}
	fx.task = uuid.NewString()
	// Its artifact is stored as an agent's would be: a blob by SHA-256.
	artifact := []byte("report\n")
	sum := sha256.Sum256(artifact)
	sumHex := hex.EncodeToString(sum[:])
	if err := os.MkdirAll(ts.filesDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts.filesDir(), sumHex), artifact, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ts.store.CreateTasks(ctx, []store.Task{{ID: fx.task, Group: uuid.NewString(), AgentID: away.ID, AgentName: away.Name,
		Args: []string{"run-script", "--inline", "echo hi"}, Calamari: "1.0.0", State: api.TaskQueued, CreatedAt: time.Now().UTC(),
		Artifacts: []store.TaskArtifact{{Name: "report.txt", Size: int64(len(artifact)), SHA256: sumHex}}}}); err != nil {
		t.Fatal(err)
	}

	r, err := ts.rollouts.StartRollout(ctx, api.RolloutRequest{Environment: "Prod", Version: "2.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	fx.rollout = r.ID
	eventually(t, "the rollout waiting for the busy agent", func() bool {
		v := ts.rollout(t, r.ID)
		if v.State != api.RolloutRunning {
			t.Fatalf("rollout: got %s (%s) %v, want it running, held by the busy agent", v.State, v.Reason, v.Agents)
		}
		return agentStates(v)[fx.agent] == api.UpgradeWaitingForIdle
	})

	if _, err := ts.AddListeningAgent(ctx, api.ListeningAgentRequest{Name: fx.listening, Environment: "DMZ",
		Address: servertest.FreeAddr(t), Thumbprint: listeningThumb}); err != nil {
		t.Fatal(err)
	}

	toks, err := ts.store.ListTokens(ctx)
	if err != nil || len(toks) == 0 {
		t.Fatalf("list tokens: got %d, %v; want the ones made above", len(toks), err)
	}
	fx.token = toks[0].ID
	k, err := ts.access.CreateAPIKey(ctx, "ci", api.RoleOperator, nil)
	if err != nil {
		t.Fatal(err)
	}
	fx.apiKey = k.ID
	if _, err := ts.access.CreateUser(ctx, fx.user, "correct horse battery staple", api.RoleAdmin, nil); err != nil {
		t.Fatal(err)
	}
	// A revoked admin key, written to the store as revoked: whatever
	// revocation API exists, the bearer check must refuse it.
	fx.revokedKey = secret.New("tdk_")
	now := time.Now().UTC()
	if err := ts.store.CreateAPIKey(ctx, store.APIKey{ID: uuid.NewString(), Name: "revoked", Hash: secret.Hash(fx.revokedKey),
		CreatedAt: now.Add(-time.Hour), RevokedAt: now, Role: api.RoleAdmin, Admin: true}); err != nil {
		t.Fatal(err)
	}
	return fx
}

func apiEndpoints(fx apiFixture) map[string]endpoint {
	oversize := badInput{name: "oversize body", oversize: true, status: 413, msg: "request body is larger than"}
	empty := badInput{name: "empty body", status: 400, msg: "request body is empty: send a JSON object"}
	unknownField := func(body string) badInput {
		return badInput{name: "unknown field", body: body, status: 400, msg: "unknown field"}
	}
	notFound := func(path, msg string) badInput {
		return badInput{name: "unknown id", path: path, status: 404, msg: msg}
	}
	const noInput = "takes no input"
	var (
		everyone  = []api.Role{api.RoleAdmin, api.RoleOperator, api.RoleDeployer, api.RoleViewer}
		readers   = []api.Role{api.RoleAdmin, api.RoleOperator, api.RoleViewer}
		deployers = []api.Role{api.RoleAdmin, api.RoleOperator, api.RoleDeployer}
		operators = []api.Role{api.RoleAdmin, api.RoleOperator}
		admins    = []api.Role{api.RoleAdmin}
	)
	return map[string]endpoint{
		"GET /api/openapi.json": {path: "/api/openapi.json", noInput: noInput},

		"GET /api/agents": {roles: everyone, path: "/api/agents", noInput: noInput},
		"POST /api/agents": {roles: operators, path: "/api/agents", body: listeningBody("dmz-2", "DMZ", "127.0.0.1:1", listeningThumb2), bad: []badInput{
			empty, oversize, unknownField(`{"environment": "DMZ", "address": "127.0.0.1:1", "thumbprint": "` + listeningThumb2 + `", "port": 1}`),
			{name: "wrong type", body: `{"environment": "DMZ", "address": 10933, "thumbprint": "` + listeningThumb2 + `"}`, status: 400, msg: `field "address" must be a string, not a number`},
			{name: "no port", body: listeningBody("dmz-2", "DMZ", "127.0.0.1", listeningThumb2), status: 400, msg: "missing port in address"},
			{name: "bad thumbprint", body: listeningBody("dmz-2", "DMZ", "127.0.0.1:1", "abcd"), status: 400, msg: "want 64 hex digits"},
			{name: "no environment", body: listeningBody("dmz-2", "", "127.0.0.1:1", listeningThumb2), status: 400, msg: `field "environment": "" is not a name of 1-63 letters`},
			{name: "name taken", body: listeningBody(fx.agent, "DMZ", "127.0.0.1:1", listeningThumb2), status: 409, msg: "agent name is already taken"},
			{name: "thumbprint taken", body: listeningBody("dmz-2", "DMZ", "127.0.0.1:1", listeningThumb), status: 409, msg: "certificate is already registered"},
		}},
		"PUT /api/agents/{name}/address": {roles: operators, path: "/api/agents/" + fx.listening + "/address", body: `{"address": "127.0.0.1:2"}`, bad: []badInput{
			empty, oversize, unknownField(`{"address": "127.0.0.1:2", "port": 2}`),
			{name: "wrong type", body: `{"address": ["127.0.0.1:2"]}`, status: 400, msg: `field "address" must be a string, not an array`},
			{name: "no port", body: `{"address": "127.0.0.1"}`, status: 400, msg: "missing port in address"},
			{name: "polling agent", path: "/api/agents/" + fx.agent + "/address", body: `{"address": "127.0.0.1:2"}`, status: 400, msg: "is a polling agent"},
			{name: "unknown agent", path: "/api/agents/nobody/address", body: `{"address": "127.0.0.1:2"}`, status: 404, msg: `no agent named "nobody"`},
		}},
		"GET /api/agents/{name}":    {roles: everyone, path: "/api/agents/" + fx.agent, bad: []badInput{notFound("/api/agents/nobody", `no agent named "nobody"`)}},
		"DELETE /api/agents/{name}": {roles: operators, path: "/api/agents/" + fx.away, bad: []badInput{notFound("/api/agents/nobody", `no agent named "nobody"`)}},
		"POST /api/agents/{name}/health-check": {roles: operators, path: "/api/agents/" + fx.agent + "/health-check", bad: []badInput{
			notFound("/api/agents/nobody/health-check", `no agent named "nobody"`),
			{name: "agent not connected", path: "/api/agents/" + fx.away + "/health-check", status: 409, msg: "is not connected to this coordinator"},
		}},
		"POST /api/agents/{name}/diagnostics": {roles: operators, path: "/api/agents/" + fx.agent + "/diagnostics", bad: []badInput{
			notFound("/api/agents/nobody/diagnostics", `no agent named "nobody"`)}},

		"POST /api/tokens": {roles: operators, path: "/api/tokens", body: `{"environment": "Prod"}`, bad: []badInput{
			empty, oversize, unknownField(`{"environment": "Prod", "colour": "red"}`),
			{name: "wrong type", body: `{"environment": 5}`, status: 400, msg: `field "environment" must be a string, not a number`},
			{name: "bad ttl", body: `{"environment": "Prod", "ttl": "forever"}`, status: 400, msg: `field "ttl": "forever" is not a duration such as 30s, 10m or 24h`},
		}},
		"GET /api/tokens":         {roles: readers, path: "/api/tokens", noInput: noInput},
		"DELETE /api/tokens/{id}": {roles: operators, path: "/api/tokens/" + fx.token, bad: []badInput{notFound("/api/tokens/nope", `no enrollment token with id "nope"`)}},

		"GET /api/users": {roles: admins, path: "/api/users", noInput: noInput},
		"POST /api/users": {roles: admins, path: "/api/users", body: `{"name": "eve", "password": "correct horse battery staple"}`, bad: []badInput{
			empty, oversize, unknownField(`{"name": "eve", "password": "correct horse battery staple", "admin": true}`),
			{name: "wrong type", body: `{"name": "eve", "password": 12345678}`, status: 400, msg: `field "password" must be a string, not a number`},
			{name: "existing name", body: `{"name": "ops", "password": "correct horse battery staple"}`, status: 409, msg: `a user named "ops" exists already`},
		}},
		"DELETE /api/users/{name}": {roles: admins, path: "/api/users/" + fx.user, bad: []badInput{notFound("/api/users/nobody", "nobody")}},
		"GET /api/api-keys":        {roles: admins, path: "/api/api-keys", noInput: noInput},
		"POST /api/api-keys": {roles: admins, path: "/api/api-keys", body: `{"name": "deploy"}`, bad: []badInput{
			empty, oversize, unknownField(`{"name": "deploy", "scope": "all"}`),
			{name: "wrong type", body: `{"name": "deploy", "admin": "yes"}`, status: 400, msg: `field "admin" must be true or false, not a string`},
		}},
		"POST /api/api-keys/{id}/revoke": {roles: admins, path: "/api/api-keys/" + fx.apiKey + "/revoke", bad: []badInput{notFound("/api/api-keys/nope/revoke", "nope")}},

		"GET /api/server":              {roles: everyone, path: "/api/server", noInput: noInput},
		"GET /api/server/goroutines":   {roles: admins, path: "/api/server/goroutines", noInput: noInput},
		"POST /api/certificate/rotate": {roles: operators, path: "/api/certificate/rotate", noInput: noInput},
		"GET /api/maintenance":         {roles: everyone, path: "/api/maintenance", noInput: noInput},
		"PUT /api/maintenance": {roles: operators, path: "/api/maintenance", body: `{"on": true}`, bad: []badInput{
			empty, oversize, unknownField(`{"on": true, "x": 1}`),
			{name: "wrong type", body: `{"on": "yes"}`, status: 400, msg: `field "on" must be true or false, not a string`},
			{name: "no on", body: `{}`, status: 400, msg: `field "on" is required`},
		}},
		"GET /api/policy": {roles: everyone, path: "/api/policy", noInput: noInput},
		"PUT /api/policy": {roles: admins, path: "/api/policy", body: `{"calamari_keep": 4}`, bad: []badInput{
			empty, oversize, unknownField(`{"calamari_keep": 4, "colour": "red"}`),
			{name: "wrong type", body: `{"calamari_keep": "four"}`, status: 400, msg: `field "calamari_keep" must be a whole number, not a string`},
			{name: "nothing given", body: `{}`, status: 400, msg: "give at least one of health_interval"},
			{name: "bad duration", body: `{"health_interval": "often"}`, status: 400, msg: `field "health_interval": "often" is not a duration such as 30s, 10m or 24h`},
			{name: "interval below 1s", body: `{"health_interval": "500ms"}`, status: 400, msg: "health interval must be at least 1s, got 500ms"},
			{name: "keep 0", body: `{"calamari_keep": 0}`, status: 400, msg: "calamari keep must be 1 or more, got 0"},
			{name: "batch 0", body: `{"upgrade_batch": 0}`, status: 400, msg: "upgrade batch must be 1 or more, got 0"},
			{name: "negative max failures", body: `{"upgrade_max_failures": -1}`, status: 400, msg: "upgrade max failures must not be negative, got -1"},
			{name: "negative work keep", body: `{"work_keep": -1}`, status: 400, msg: "work keep must not be negative, got -1"},
			{name: "work keep not a number", body: `{"work_keep": "all"}`, status: 400, msg: `field "work_keep" must be a whole number, not a string`},
			{name: "work min free unparseable", body: `{"work_min_free": "lots"}`, status: 400, msg: `field "work_min_free": "lots" is not a size such as 2GiB`},
			{name: "work min free negative", body: `{"work_min_free": "-2GiB"}`, status: 400, msg: `field "work_min_free": "-2GiB" is not a size such as 2GiB`},
			{name: "work min free fraction of a byte", body: `{"work_min_free": "0.5B"}`, status: 400, msg: `not a whole number of bytes`},
			{name: "work min free a number", body: `{"work_min_free": 2048}`, status: 400, msg: `field "work_min_free" must be a string`},
		}},
		"POST /api/backup/snapshot": {roles: operators, path: "/api/backup/snapshot", noInput: noInput},
		"GET /api/updates":          {roles: everyone, path: "/api/updates", noInput: noInput},
		"GET /api/nodes":            {roles: readers, path: "/api/nodes", noInput: noInput},
		"POST /api/nodes/{name}/drain": {roles: operators, path: "/api/nodes/" + fx.node + "/drain", bad: []badInput{
			notFound("/api/nodes/nowhere/drain", `no coordinator node named "nowhere"`)}},
		"POST /api/nodes/{name}/undrain": {roles: operators, path: "/api/nodes/" + fx.node + "/undrain", bad: []badInput{
			notFound("/api/nodes/nowhere/undrain", `no coordinator node named "nowhere"`)}},

		"POST /api/calamari": {roles: operators, path: "/api/calamari", body: "not a bundle", raw: true, bad: []badInput{
			{name: "empty body", status: 400, msg: "not a valid Calamari bundle"},
			{name: "not a bundle", body: "hello", status: 400, msg: "not a valid Calamari bundle"},
			{name: "oversize body", oversize: true, status: 413, msg: "request body is larger than"},
		}},
		"GET /api/calamari": {roles: everyone, path: "/api/calamari", noInput: noInput},
		"POST /api/calamari/update": {roles: operators, path: "/api/calamari/update", body: `{"environment": "Prod"}`, bad: []badInput{
			empty, oversize, unknownField(`{"environment": "Prod", "force": true}`),
			{name: "wrong type", body: `{"agent": ["web-1"]}`, status: 400, msg: `field "agent" must be a string, not an array`},
			{name: "no target", body: `{}`, status: 400, msg: "name exactly one of an agent or an environment"},
			{name: "unknown agent", body: `{"agent": "nobody"}`, status: 404, msg: "nobody"},
		}},
		"GET /api/export": {roles: admins, path: "/api/export", noInput: noInput},
		"POST /api/import": {roles: admins, path: "/api/import?trust_any_source=true", body: "not an export", raw: true, bad: []badInput{
			{name: "no source key", path: "/api/import", body: "x", status: 400, msg: "name the exporting coordinator's signing key"},
			{name: "empty body", status: 400, msg: "export file is damaged: not a gzip file"},
			{name: "not an export", body: "hello", status: 400, msg: "export file is damaged: not a gzip file"},
			{name: "bad allow_downgrade", path: "/api/import?trust_any_source=true&allow_downgrade=maybe", body: "x", status: 400, msg: `query parameter "allow_downgrade" must be true or false, not "maybe"`},
			{name: "oversize body", oversize: true, status: 413, msg: "request body is larger than"},
		}},
		// An empty file is a file: tasks may need one.
		"POST /api/files": {roles: deployers, path: "/api/files", body: "file content", raw: true, bad: []badInput{
			{name: "oversize body", oversize: true, status: 413, msg: "request body is larger than"},
		}},

		"POST /api/tasks": {roles: deployers, path: "/api/tasks", body: `{"agent": "web-1", "args": ["run-script", "--inline", "echo hi"]}`, bad: []badInput{
			empty, oversize, unknownField(`{"agent": "web-1", "args": ["x"], "timeout": 5}`),
			{name: "wrong type", body: `{"agent": "web-1", "args": "run-script"}`, status: 400, msg: `field "args" must be an array, not a string`},
			{name: "no arguments", body: `{"agent": "web-1", "args": []}`, status: 400, msg: "no Calamari arguments given"},
			{name: "unknown agent", body: `{"agent": "nobody", "args": ["x"]}`, status: 404, msg: "nobody"},
			{name: "lock name with a space", body: `{"agent": "web-1", "args": ["x"], "locks": ["my db"]}`, status: 400, msg: `field "locks[0]": "my db" is not a name of 1-63 letters, digits, '.', '_' or '-'`},
			{name: "lock name with a slash", body: `{"agent": "web-1", "args": ["x"], "locks": ["db", "a/b"]}`, status: 400, msg: `field "locks[1]": "a/b" is not a name of 1-63 letters`},
			{name: "empty lock name", body: `{"agent": "web-1", "args": ["x"], "locks": [""]}`, status: 400, msg: `field "locks[0]": "" is not a name of 1-63 letters`},
			{name: "too many locks", body: `{"agent": "web-1", "args": ["x"], "locks": ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`, status: 400, msg: "17 locks: a task may hold at most 16"},
			{name: "locks not a list", body: `{"agent": "web-1", "args": ["x"], "locks": "db"}`, status: 400, msg: `field "locks" must be an array, not a string`},
			{name: "unknown isolation", body: `{"agent": "web-1", "args": ["x"], "isolation": "partial"}`, status: 400, msg: `isolation "partial": use "full"`},
		}},
		"GET /api/tasks": {roles: everyone, path: "/api/tasks", bad: []badInput{
			{name: "limit not a number", path: "/api/tasks?limit=ten", status: 400, msg: `query parameter "limit" must be a whole number, not "ten"`},
			{name: "unknown agent", path: "/api/tasks?agent=nobody", status: 404, msg: `"nobody"`},
		}},
		"GET /api/tasks/{id}": {roles: everyone, path: "/api/tasks/" + fx.task, bad: []badInput{notFound("/api/tasks/nope", `"nope"`)}},
		"GET /api/tasks/{id}/log": {roles: everyone, path: "/api/tasks/" + fx.task + "/log", bad: []badInput{
			notFound("/api/tasks/nope/log", `"nope"`),
			{name: "from not a number", path: "/api/tasks/" + fx.task + "/log?from=first", status: 400, msg: `query parameter "from" must be a whole number, not "first"`},
		}},
		"GET /api/tasks/{id}/artifacts/{name}": {roles: everyone, path: "/api/tasks/" + fx.task + "/artifacts/report.txt", bad: []badInput{
			notFound("/api/tasks/nope/artifacts/report.txt", `"nope"`),
			{name: "unknown artifact", path: "/api/tasks/" + fx.task + "/artifacts/other.txt", status: 404, msg: `has no artifact "other.txt"`},
		}},
		"POST /api/tasks/{id}/cancel": {roles: deployers, path: "/api/tasks/" + fx.task + "/cancel", bad: []badInput{notFound("/api/tasks/nope/cancel", `"nope"`)}},

		// The body is only sent without a valid key, refused before it is
		// read; so are the bad queries below. Those get the binary's first
		// 4 KiB: a body of megabytes would meet the closed connection
		// (a reset) before the answer.
		"POST /api/agent-packages": {roles: operators, path: "/api/agent-packages?version=3.0.0&os=linux&arch=amd64", body: fx.agentBinary[:4096], raw: true, bad: []badInput{
			{name: "empty body", status: 400, msg: "the agent package is empty"},
			{name: "no version", path: "/api/agent-packages?os=linux&arch=amd64", body: fx.agentBinary[:4096], status: 400, msg: `query parameter "version" is required`},
			{name: "unknown os", path: "/api/agent-packages?version=3.0.0&os=plan9&arch=amd64", body: fx.agentBinary[:4096], status: 400, msg: `query parameter "os": "plan9" is not one of linux, windows, darwin`},
			{name: "not an executable", body: "#!/bin/sh\necho hi\n", status: 400, msg: "linux"},
			// The version is checked where the binary arrives, so the API
			// refuses what the command would (issue 19).
			{name: "built-in version differs", path: "/api/agent-packages?version=3.1.0&os=linux&arch=amd64", body: fx.agentBinary, status: 400,
				msg: "the binary says it is 3.0.0 but --version is 3.1.0; push it with --version 3.0.0"},
			{name: "built for another platform", path: "/api/agent-packages?version=3.0.0&os=linux&arch=arm64", body: fx.agentBinary, status: 400,
				msg: "the binary is built for linux/amd64 but --os and --arch say linux/arm64"},
			{name: "not a Go program", body: "\x7fELF\x02\x01\x01\x00" + strings.Repeat("x", 4096), status: 400,
				msg: "the agent package's built-in version cannot be read"},
			{name: "oversize body", oversize: true, status: 413, msg: "request body is larger than"},
		}},
		"GET /api/agent-packages": {roles: everyone, path: "/api/agent-packages", noInput: noInput},
		"POST /api/rollouts": {roles: operators, path: "/api/rollouts", body: `{"environment": "Away"}`, bad: []badInput{
			empty, oversize, unknownField(`{"environment": "Prod", "parallel": 3}`),
			{name: "wrong type", body: `{"environment": "Prod", "batch": "ten"}`, status: 400, msg: `field "batch" must be a whole number, not a string`},
			{name: "no target", body: `{}`, status: 400, msg: "give exactly one of an environment, all or a list of agents"},
			{name: "agents and environment", body: `{"environment": "Prod", "agents": ["web-1"]}`, status: 400, msg: "give exactly one of an environment, all or a list of agents"},
			{name: "unknown agents", body: `{"agents": ["web-1", "nobody", "<script>x</script>"]}`, status: 404, msg: `no agent named "nobody", "<script>x</script>"`},
			{name: "agents not a list", body: `{"agents": "web-1"}`, status: 400, msg: `field "agents" must be an array, not a string`},
			{name: "unknown environment", body: `{"environment": "Nowhere"}`, status: 404, msg: `environment "Nowhere" has no agents`},
			{name: "unknown version", body: `{"environment": "Prod", "version": "9.9.9"}`, status: 404, msg: "no agent package of version 9.9.9"},
		}},
		"GET /api/rollouts":      {roles: readers, path: "/api/rollouts", noInput: noInput},
		"GET /api/rollouts/{id}": {roles: readers, path: "/api/rollouts/" + fx.rollout, bad: []badInput{notFound("/api/rollouts/nope", `no rollout "nope"`)}},
		"POST /api/rollouts/{id}/halt": {roles: operators, path: "/api/rollouts/" + fx.rollout + "/halt", bad: []badInput{
			notFound("/api/rollouts/nope/halt", `no rollout "nope"`)}},
		"POST /api/rollouts/{id}/resume": {roles: operators, path: "/api/rollouts/" + fx.rollout + "/resume", bad: []badInput{
			notFound("/api/rollouts/nope/resume", `no rollout "nope"`)}},
	}
}

// apiState is what an API request could change, read through the API
// with the admin key: the fleet, its secrets' records, stored content,
// work and settings, and the files in the data folder. Fields that move
// on their own (health, last seen) are left out.
func apiState(t *testing.T, ts *testServer) string {
	t.Helper()
	var b strings.Builder
	var agents []api.AgentView
	_, body := ts.api(t, "GET", "/api/agents", "", nil)
	if err := json.Unmarshal(body, &agents); err != nil {
		t.Fatalf("agents: %v: %s", err, body)
	}
	for _, a := range agents {
		fmt.Fprintf(&b, "agent %s %s %s %s %s %s\n", a.Name, a.Environment, a.Version, a.Thumbprint, a.Mode, a.Address)
	}
	for _, p := range []string{"/api/tokens", "/api/users", "/api/api-keys", "/api/calamari", "/api/agent-packages",
		"/api/rollouts", "/api/tasks", "/api/maintenance", "/api/policy", "/api/server"} {
		resp, body := ts.api(t, "GET", p, "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", p, resp.StatusCode, body)
		}
		fmt.Fprintf(&b, "%s %s\n", p, body)
	}
	var nodes []api.NodeView
	_, body = ts.api(t, "GET", "/api/nodes", "", nil)
	if err := json.Unmarshal(body, &nodes); err != nil {
		t.Fatalf("nodes: %v: %s", err, body)
	}
	for _, n := range nodes {
		fmt.Fprintf(&b, "node %s draining=%v\n", n.Name, n.Draining)
	}
	filepath.WalkDir(ts.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(ts.dir, p)
			switch {
			case strings.HasPrefix(rel, "files"), strings.HasPrefix(rel, "calamari"), strings.HasPrefix(rel, "agent-packages"),
				strings.HasPrefix(rel, backup.SnapshotPrefix), strings.HasPrefix(rel, "server"):
				fmt.Fprintf(&b, "file %s\n", rel)
			}
		}
		return nil
	})
	return b.String()
}

// rawRequest sends a request with a Content-Length but no body, and reads
// the answer: how a client announcing a huge upload is answered before it
// sends any of it.
func rawRequest(t *testing.T, ts *testServer, method, path, key string, length int64) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", ts.HTTPAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n",
		method, path, ts.HTTPAddr(), key, length)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: read response: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// oversizeReader streams n bytes of a JSON string without a length, so
// the coordinator meets the limit while reading.
type oversizeReader struct{ left int64 }

func (r *oversizeReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.left)
	for i := range p[:n] {
		p[i] = 'a'
	}
	r.left -= n
	return int(n), nil
}

func TestAPIEndpoints(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.UpgradeIdleTimeout = time.Hour })
	fx := setUpAPIFixture(t, ts)
	table := apiEndpoints(fx)
	// Every documented route has a row, and every row a route.
	routes := httpapi.Routes()
	limits := map[string]int64{}
	public := map[string]bool{}
	for _, rt := range routes {
		key := rt.Method + " " + rt.Path
		if _, ok := table[key]; !ok {
			t.Errorf("%s has no row in apiEndpoints: add its valid request and its bad inputs", key)
		}
		if row, ok := table[key]; ok && !slices.Equal(row.roles, rt.Roles) {
			t.Errorf("%s: the API lets the roles %v call it, want %v", key, rt.Roles, row.roles)
		}
		limits[key] = rt.MaxBody
		if limits[key] == 0 {
			limits[key] = httpapi.MaxRequestBody
		}
		public[key] = rt.Public
	}
	for key := range table {
		if _, ok := limits[key]; !ok {
			t.Errorf("apiEndpoints has a row for %s, which is not a documented route", key)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	check := newResponseChecker(t, ts)
	keys := map[string]string{"no key": "-", "wrong key": "tdk_" + strings.Repeat("0", 43), "revoked key": fx.revokedKey}
	keyMsg := map[string]string{"no key": "an API key is required", "wrong key": "the API key is not valid", "revoked key": "the API key is not valid"}

	names := make([]string, 0, len(table))
	for k := range table {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, route := range names {
		ep := table[route]
		method, _, _ := strings.Cut(route, " ")
		t.Run(route, func(t *testing.T) {
			if ep.noInput == "" && len(ep.bad) == 0 {
				t.Fatal("no bad input and no reason why: give bad inputs or noInput")
			}
			for _, who := range []string{"no key", "wrong key", "revoked key"} {
				before := apiState(t, ts)
				var body io.Reader
				if ep.body != "" {
					body = strings.NewReader(ep.body)
				}
				resp, got := ts.api(t, method, ep.path, keys[who], body)
				if public[route] {
					if resp.StatusCode != http.StatusOK {
						t.Errorf("%s: got %d, want 200: the document needs no key", who, resp.StatusCode)
					}
					continue
				}
				var e api.APIError
				json.Unmarshal(got, &e)
				if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(e.Error, keyMsg[who]) {
					t.Errorf("%s: got %d %q, want 401 saying %q", who, resp.StatusCode, got, keyMsg[who])
				}
				check.check(t, method, ep.path, resp, got)
				if after := apiState(t, ts); after != before {
					t.Errorf("%s: refused, but the coordinator's state changed:\nbefore:\n%s\nafter:\n%s", who, before, after)
				}
			}
			if method == http.MethodGet {
				// Reading changes nothing: with the admin key the valid
				// request is answered, as the document says.
				resp, got := ts.api(t, method, ep.path, "", nil)
				if resp.StatusCode != http.StatusOK {
					t.Errorf("with the admin key: got %d %s, want 200", resp.StatusCode, got)
				}
				check.check(t, method, ep.path, resp, got)
			}
			for _, bi := range ep.bad {
				path := ep.path
				if bi.path != "" {
					path = bi.path
				}
				before := apiState(t, ts)
				var resp *http.Response
				var got []byte
				switch {
				case bi.oversize && ep.raw:
					resp, got = rawRequest(t, ts, method, path, adminKey(t, ts), limits[route]+1)
				case bi.oversize:
					r := io.MultiReader(strings.NewReader(`{"x": "`), &oversizeReader{left: limits[route]}, strings.NewReader(`"}`))
					resp, got = ts.api(t, method, path, "", io.NopCloser(r)) // no length: the limit is met while reading
				default:
					var body io.Reader
					if bi.body != "" {
						body = strings.NewReader(bi.body)
					}
					resp, got = ts.api(t, method, path, "", body)
				}
				var e api.APIError
				if err := json.Unmarshal(got, &e); err != nil || resp.Header.Get("Content-Type") != "application/json" {
					t.Errorf("%s: got %d %q (%s), want a JSON error", bi.name, resp.StatusCode, got, resp.Header.Get("Content-Type"))
					continue
				}
				if resp.StatusCode != bi.status || !strings.Contains(e.Error, bi.msg) {
					t.Errorf("%s: got %d %q, want %d saying %q", bi.name, resp.StatusCode, e.Error, bi.status, bi.msg)
				}
				if u, _ := url.Parse(path); u != nil {
					check.check(t, method, u.Path, resp, got)
				}
				if after := apiState(t, ts); after != before {
					t.Errorf("%s: refused, but the coordinator's state changed:\nbefore:\n%s\nafter:\n%s", bi.name, before, after)
				}
			}
		})
	}

	// The check above can see a change: the same valid requests, made
	// with the admin key, change what it reads.
	for _, route := range []string{"POST /api/rollouts/{id}/halt", "POST /api/tokens", "POST /api/files", "DELETE /api/users/{name}", "PUT /api/maintenance", "PUT /api/policy"} {
		ep := table[route]
		method, _, _ := strings.Cut(route, " ")
		before := apiState(t, ts)
		resp, got := ts.api(t, method, ep.path, "", strings.NewReader(ep.body))
		if resp.StatusCode >= 300 {
			t.Fatalf("%s with the admin key: got %d %s, want it done", route, resp.StatusCode, got)
		}
		check.check(t, method, ep.path, resp, got)
		if apiState(t, ts) == before {
			t.Errorf("%s with the admin key: the state read for refusals did not change, so it could not have seen a refused request's change", route)
		}
	}
}
