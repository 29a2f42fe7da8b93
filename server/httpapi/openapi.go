package httpapi

// The OpenAPI document of the HTTP API, served at GET /api/openapi.json.
//
// It is generated from the Go types the handlers encode and decode rather
// than written by hand: a field added to AgentView or RolloutRequest is in
// the document the moment it is in the API, and a hand-kept file would
// drift from the code silently. What reflection cannot know (which routes
// exist, what each does, its parameters and error statuses) is the table
// below; tests check that table against the routes Register registers,
// in both directions, and every response the API tests receive against
// the document. Every request is validated against the same document
// (validate.go), so what it declares is what the API enforces.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tendrildeploy/tendril/api"
)

// Route documents one endpoint of the API.
type Route struct {
	Method string // GET, POST, PUT, DELETE
	Path   string // as registered, e.g. /api/agents/{name}
	Tag    string
	// Summary is one line; Description may say more.
	Summary, Description string
	// Public routes need no API key.
	Public bool
	// Roles may call the route (every other role is answered 403); nil
	// only for a public route. Register enforces them and the document
	// declares them (x-roles).
	Roles []api.Role
	// Scope says how a deployer is limited on the route, for the
	// document; "" where it is not or may not call it.
	Scope string
	Query []Param
	// Request is a value of the JSON body's type, nil for no body.
	Request any
	// RawBody lists the media types a body sent as bytes (an upload) may
	// be declared as; a request without a Content-Type is taken as
	// application/octet-stream (RFC 9110, section 8.3).
	RawBody []string
	// MaxBody bounds the body; 0 means MaxRequestBody.
	MaxBody int64
	// Status is the success status; Also lists other success statuses
	// with the same body (an upload already stored answers 200).
	Status int
	Also   []int
	// Response is a value of the success body's type; nil for none.
	Response any
	// ResponseAnyOf, instead of Response, lists the types a success body
	// may have: each line of a stream is one of them.
	ResponseAnyOf []any
	// ResponseMedia is the success body's media type when not JSON.
	ResponseMedia string
	// Idempotent create routes take an Idempotency-Key header: the same
	// request sent again with it is answered as the first was (package
	// idempotency). SecretAnswer marks those whose answer holds a secret,
	// which is not kept for a replay.
	Idempotent, SecretAnswer bool
	// Errors are the error statuses the route's own work can answer;
	// errorStatuses adds those of validation, authorization and the
	// coordinator itself.
	Errors []int
}

// Param is a query parameter.
type Param struct {
	Name, Type, Description string
	Required                bool
	// Minimum and Maximum bound an integer; nil for no bound.
	Minimum, Maximum *int64
	// Enum lists the values a string may take; nil for any.
	Enum []string
}

func ptr[T any](v T) *T { return &v }

// Routes lists every /api endpoint. A route registered in Register and
// missing here (or the other way round) fails the tests.
func Routes() []Route {
	const (
		agents   = "Agents"
		tokens   = "Enrollment"
		coord    = "Coordinator"
		calamari = "Calamari"
		tasks    = "Tasks"
		upgrades = "Agent upgrades"
		access   = "Users and API keys"
	)
	// Who may call what (README, "Roles"): reads are for everyone but
	// what holds secrets or internals, or names other environments'
	// machines (readers: not a deployer); a deployer may run tasks in its
	// environments and upload their files; operators everything else
	// but users, API keys, exports and imports, the machine policy and
	// goroutine dumps, which are for admins.
	var (
		everyone  = []api.Role{api.RoleAdmin, api.RoleOperator, api.RoleDeployer, api.RoleViewer}
		readers   = []api.Role{api.RoleAdmin, api.RoleOperator, api.RoleViewer}
		deployers = []api.Role{api.RoleAdmin, api.RoleOperator, api.RoleDeployer}
		operators = []api.Role{api.RoleAdmin, api.RoleOperator}
		admins    = []api.Role{api.RoleAdmin}
	)
	return []Route{
		{Method: "GET", Path: "/api/openapi.json", Tag: coord, Public: true, Status: 200, Response: map[string]any{},
			Summary:     "This document",
			Description: "The OpenAPI 3.1 description of this API. It needs no API key: it is documentation and holds no fleet data."},

		{Method: "GET", Path: "/api/agents", Tag: agents, Roles: everyone, Scope: "only the agents of its environments are listed", Status: 200, Response: []api.AgentView{},
			Summary: "List agents with their connection, health, TLS version, Calamari and upgrade state"},
		{Method: "POST", Idempotent: true, Path: "/api/agents", Tag: agents, Roles: operators, Request: api.ListeningAgentRequest{}, Status: 201, Response: api.AgentView{}, Errors: []int{400, 409, 413},
			Summary: "Add a listening agent, which the coordinator dials",
			Description: "For an agent that listens (tendril-agent register --listen) rather than dialing the coordinator: give the address the coordinator reaches it at, " +
				"the thumbprint its register command printed, and its environment; the name defaults to the address's host. " +
				"The coordinator dials it from then on and accepts only that certificate; until a dial succeeds, dial_error says why it failed. " +
				"409 when the name or the thumbprint belongs to another agent, or the thumbprint to a deleted one."},
		{Method: "GET", Path: "/api/agents/{name}", Tag: agents, Roles: everyone, Scope: "403 for an agent of another environment", Status: 200, Response: api.AgentView{}, Errors: []int{404},
			Summary: "One agent by name"},
		{Method: "PUT", Path: "/api/agents/{name}/address", Tag: agents, Roles: operators, Request: api.AgentAddressRequest{}, Status: 200, Response: api.AgentView{}, Errors: []int{400, 404, 413},
			Summary:     "Move a listening agent to a new address",
			Description: "Its session, if any, ends and the coordinator dials the new address; the last dial error is cleared. 400 for a polling agent, which dials the coordinator itself."},
		{Method: "DELETE", Path: "/api/agents/{name}", Tag: agents, Roles: operators, Status: 204, Errors: []int{404},
			Summary:     "Delete an agent",
			Description: "Ends the agent's session; its certificate is refused from then on. It must enroll again with a new token."},
		{Method: "POST", Path: "/api/agents/{name}/health-check", Tag: agents, Roles: operators, Status: 200, Response: api.AgentView{}, Errors: []int{404, 409, 504},
			Summary: "Check an agent's health now",
			Description: "Checks a connected agent at once rather than at the next interval and returns its view. Any node answers: one that does not hold the agent's session asks the node that does. " +
				"409 if the agent is not connected (to any live node); 504 if the node holding its session did not answer in time (10 s by default)."},
		{Method: "POST", Path: "/api/agents/{name}/diagnostics", Tag: agents, Roles: operators, Status: 200, ResponseMedia: "application/gzip", Errors: []int{404},
			Summary: "Collect an agent's diagnostics archive",
			Description: "A gzip-compressed tar with a manifest.json listing every entry (what it is, its size and SHA-256, when it was collected) and what could not be collected, with why. " +
				"It holds the coordinator's side (the agent's record, recent health, tasks and upgrade history, the coordinator's version) and, as agent/diagnostics.tar.gz, " +
				"the agent's own archive (logs, versions, redacted configuration, certificates' subjects and expiry, upgrade state, Calamari, disk space, goroutines), " +
				"which the agent sends over its session (to the node holding it, which hands it to the node asked). An agent that is not connected, or too old to collect one, still gets an archive of the coordinator's side, " +
				"whose manifest notes say why the agent's is missing. Never a private key, token, password or API key."},

		{Method: "POST", Idempotent: true, SecretAnswer: true, Path: "/api/tokens", Tag: tokens, Roles: operators, Request: api.TokenRequest{}, Status: 201, Response: api.TokenResult{}, Errors: []int{400, 413},
			Summary:     "Create a one-time enrollment token",
			Description: "Returns the token and the join string for `tendril-agent register --join`."},

		{Method: "GET", Path: "/api/tokens", Tag: tokens, Roles: readers, Status: 200, Response: []api.TokenView{},
			Summary: "List enrollment tokens: unused, used or expired (never the token itself)"},
		{Method: "DELETE", Path: "/api/tokens/{id}", Tag: tokens, Roles: operators, Status: 204, Errors: []int{404},
			Summary: "Revoke an enrollment token"},

		{Method: "GET", Path: "/api/users", Tag: access, Roles: admins, Status: 200, Response: []api.UserView{}, Errors: []int{403},
			Summary: "List console users (admin key only)"},
		{Method: "POST", Idempotent: true, Path: "/api/users", Tag: access, Roles: admins, Request: api.UserRequest{}, Status: 201, Response: api.UserView{}, Errors: []int{400, 403, 409, 413},
			Summary:     "Create a console user (admin key only)",
			Description: "The password is stored with a slow hash."},
		{Method: "DELETE", Path: "/api/users/{name}", Tag: access, Roles: admins, Status: 204, Errors: []int{403, 404},
			Summary: "Delete a console user (admin key only); their sessions end"},
		{Method: "GET", Path: "/api/api-keys", Tag: access, Roles: admins, Status: 200, Response: []api.APIKeyView{}, Errors: []int{403},
			Summary: "List API keys, never the keys themselves (admin key only)"},
		{Method: "POST", Idempotent: true, SecretAnswer: true, Path: "/api/api-keys", Tag: access, Roles: admins, Request: api.APIKeyRequest{}, Status: 201, Response: api.NewAPIKey{}, Errors: []int{400, 403, 409, 413},
			Summary:     "Create an API key (admin key only)",
			Description: "The answer holds the key: the only time it is shown."},
		{Method: "POST", Path: "/api/api-keys/{id}/revoke", Tag: access, Roles: admins, Status: 200, Response: api.APIKeyView{}, Errors: []int{403, 404, 409},
			Summary: "Revoke an API key (admin key only); sessions signed in with it end"},

		{Method: "GET", Path: "/api/server", Tag: coord, Roles: everyone, Status: 200, Response: api.ServerInfo{},
			Summary: "The coordinator's version, thumbprints and agent address"},
		{Method: "GET", Path: "/api/server/goroutines", Tag: coord, Roles: admins, Status: 200, Response: "", ResponseMedia: "text/plain", Errors: []int{403},
			Summary:     "The coordinator's goroutine dump (admin key only)",
			Description: "Every goroutine with its stack, as Go prints them on a crash, without stopping anything: what is stuck, and where. tendril-server diagnostics puts it in the coordinator's archive."},
		{Method: "POST", Path: "/api/certificate/rotate", Tag: coord, Roles: operators, Status: 200, Response: api.RotationResult{}, Errors: []int{409},
			Query:       []Param{{Name: "force", Type: "boolean", Description: "rotate even when older agents that are away would be locked out (409 without it)"}},
			Summary:     "Rotate the coordinator's certificate",
			Description: "Connected agents learn the new thumbprint before it is served; agents away learn it when they reconnect."},
		{Method: "GET", Path: "/api/maintenance", Tag: coord, Roles: everyone, Status: 200, Response: api.MaintenanceView{},
			Summary: "Maintenance mode and what is still running"},
		{Method: "PUT", Path: "/api/maintenance", Tag: coord, Roles: operators, Request: api.MaintenanceRequest{}, Status: 200, Response: api.MaintenanceView{}, Errors: []int{400, 413},
			Summary:     "Turn maintenance mode on or off",
			Description: "While on, new tasks, rollouts and resumes are refused with 409; running ones finish. Poll GET /api/maintenance until running_tasks, queued_tasks and running_rollouts are 0 to drain."},
		{Method: "GET", Path: "/api/policy", Tag: coord, Roles: everyone, Status: 200, Response: api.PolicyView{},
			Summary: "The machine policy: health interval, Calamari versions kept, rollout defaults, disk retention on agents"},
		{Method: "PUT", Path: "/api/policy", Tag: coord, Roles: admins, Request: api.PolicyRequest{}, Status: 200, Response: api.PolicyView{}, Errors: []int{400, 403, 413},
			Summary:     "Change the machine policy (admin key only)",
			Description: "Fields left out keep their value. Every coordinator node applies the change without a restart; the deprecated --health-interval flag no longer overrides it. work_keep and work_min_free (a size such as 2GiB) reach connected agents at once, older agents ignore them."},
		{Method: "POST", Path: "/api/backup/snapshot", Tag: coord, Roles: operators, Status: 201, Response: api.Snapshot{}, Errors: []int{409, 507},
			Summary:     "Write a consistent database snapshot into the data folder",
			Description: "Used by `tendril-server backup`, which packs the snapshot and deletes it. 409 when the database cannot be snapshotted by Tendril (PostgreSQL); 507 when the data folder has no room for it."},
		{Method: "GET", Path: "/api/nodes", Tag: coord, Roles: readers, Status: 200, Response: []api.NodeView{},
			Summary:     "List the coordinator nodes sharing this one's database",
			Description: "Each node with its state (running, draining, drained, stopped, dead), heartbeat and the agents, tasks and rollouts it holds."},
		{Method: "POST", Path: "/api/nodes/{name}/drain", Tag: coord, Roles: operators, Status: 200, Response: api.NodeView{}, Errors: []int{404},
			Summary:     "Drain a coordinator node",
			Description: "The node accepts no agent sessions and claims no new task, lets its tasks finish, hands its rollouts to another node and moves its agents away; once drained it can be stopped."},
		{Method: "POST", Path: "/api/nodes/{name}/undrain", Tag: coord, Roles: operators, Status: 200, Response: api.NodeView{}, Errors: []int{404},
			Summary: "Let a drained node serve agents and take work again"},
		{Method: "GET", Path: "/api/updates", Tag: coord, Roles: everyone, Status: 200, Response: api.UpdatesView{},
			Summary: "Whether the release feed lists a newer coordinator"},

		{Method: "POST", Path: "/api/calamari", Tag: calamari, Roles: operators, RawBody: []string{"application/gzip", "application/octet-stream"}, MaxBody: api.MaxBundleSize,
			Status: 201, Also: []int{200}, Response: api.BundleView{}, Errors: []int{400, 409, 413},
			Summary:     "Upload a Calamari bundle",
			Description: "The body is a calamari-<version>.tar.gz. The coordinator checks every file against the manifest and signs it. 201 when stored, 200 when the same bundle was already stored, 409 when that version is stored with other content."},
		{Method: "GET", Path: "/api/calamari", Tag: calamari, Roles: everyone, Status: 200, Response: []api.BundleView{},
			Summary: "List stored Calamari bundles, newest first"},
		{Method: "POST", Path: "/api/calamari/update", Tag: calamari, Roles: operators, Request: api.UpdateTarget{}, Status: 200, Response: []api.UpdateResult{},
			Errors:      []int{400, 404, 413},
			Summary:     "Push the latest Calamari to one agent or every agent of an environment",
			Description: "Give exactly one of agent or environment. One result per agent: installed, current or failed."},
		{Method: "GET", Path: "/api/export", Tag: calamari, Roles: admins, Status: 200, ResponseMedia: "application/gzip", Errors: []int{403},
			Summary:     "Export every agent package and Calamari bundle, for a coordinator with no network",
			Description: "A gzip-compressed tar: manifest.json (each item with its SHA-256 and this coordinator's signature), manifest.sig, and the files. Admin keys only."},
		{Method: "POST", Path: "/api/import", Tag: calamari, Roles: admins, RawBody: []string{"application/gzip", "application/octet-stream"}, MaxBody: api.MaxExportSize,
			Status: 200, Response: api.ImportResult{}, Errors: []int{400, 403, 409, 413},
			Query: []Param{
				{Name: "allow_downgrade", Type: "boolean", Description: "store items older than what the fleet runs, after a backup snapshot"},
				{Name: "source_key", Type: "string", Description: "the signing key (hex) the export must carry: the exporting coordinator's"},
				{Name: "trust_any_source", Type: "boolean", Description: "import without source_key (required otherwise)"},
				{Name: "backed_up", Type: "boolean", Description: "with allow_downgrade, on a database the coordinator cannot copy: it was backed up with its own tools"},
			},
			Summary:     "Import an export file",
			Description: "Every signature is checked with the source's key and every file against its SHA-256 before anything is stored; items are then stored as uploads here, signed with this coordinator's key. 400 for a damaged file or a signature that does not verify, 409 for items older than what the fleet runs without allow_downgrade. Admin keys only."},
		{Method: "POST", Path: "/api/files", Tag: tasks, Roles: deployers, RawBody: []string{"application/octet-stream"}, MaxBody: api.MaxBundleSize,
			Status: 201, Response: api.FileView{}, Errors: []int{413},
			Summary:     "Upload a file for tasks",
			Description: "Stored by its SHA-256; name it in a task's file to have it put in the task's folder on the agent."},

		{Method: "POST", Idempotent: true, Path: "/api/tasks", Tag: tasks, Roles: deployers, Scope: "only agents of its environments, and variables from their tasks' outputs: a request naming anything else is refused whole with 403", Request: api.TaskRequest{}, Status: 201, Response: []api.TaskView{}, Errors: []int{400, 404, 409, 413},
			Summary:     "Run Calamari on an agent or every agent of an environment",
			Description: "Give exactly one of agent or environment. Every target must be connected; 409 in maintenance mode or when an agent must be upgraded first."},
		{Method: "GET", Path: "/api/tasks", Tag: tasks, Roles: everyone, Scope: "only the tasks of its environments' agents are listed; 403 for an agent of another environment", Status: 200, Response: []api.TaskView{}, Errors: []int{400, 404},
			Query: []Param{
				{Name: "agent", Type: "string", Description: "only this agent's tasks"},
				{Name: "group", Type: "string", Description: "only the tasks started by one request"},
				{Name: "limit", Type: "integer", Minimum: ptr[int64](1), Maximum: ptr[int64](maxTaskList), Description: "at most this many, 1 to 1000; 100 when left out"},
			},
			Summary: "List tasks, newest first"},
		{Method: "GET", Path: "/api/tasks/{id}", Tag: tasks, Roles: everyone, Scope: "403 for a task of another environment's agent", Status: 200, Response: api.TaskView{}, Errors: []int{404},
			Summary: "One task"},
		{Method: "GET", Path: "/api/tasks/{id}/log", Tag: tasks, Roles: everyone, Scope: "403 for a task of another environment's agent", Status: 200, ResponseAnyOf: []any{api.LogLineView{}, api.LogEnd{}}, ResponseMedia: "application/x-ndjson",
			Errors: []int{400, 404},
			Query: []Param{
				{Name: "from", Type: "integer", Minimum: ptr[int64](1), Description: "first log line number to send (1 or more)"},
				{Name: "follow", Type: "boolean", Description: "keep the stream open until the task finishes"},
			},
			Summary:     "A task's log as newline-delimited JSON",
			Description: "One log line object per line; once the task has finished and every line was sent, one {\"end\": task} object. The schema is one line's. A quiet follow sends a blank line every 15 seconds."},
		{Method: "GET", Path: "/api/tasks/{id}/artifacts/{name}", Tag: tasks, Roles: everyone, Scope: "403 for a task of another environment's agent", Status: 200, ResponseMedia: "application/octet-stream", Errors: []int{404},
			Summary:     "Download a task's artifact",
			Description: "A file the task's script attached (calamari artifact PATH), as the agent sent it; the task lists its artifacts with their size and SHA-256."},
		{Method: "POST", Path: "/api/tasks/{id}/cancel", Tag: tasks, Roles: deployers, Scope: "403 for a task of another environment's agent", Status: 200, Response: api.TaskView{}, Errors: []int{404, 409},
			Summary:     "Cancel a task",
			Description: "The agent kills the task's whole process tree."},

		{Method: "POST", Path: "/api/agent-packages", Tag: upgrades, Roles: operators, RawBody: []string{"application/octet-stream"}, MaxBody: api.MaxAgentPackageSize,
			Query: []Param{
				{Name: "version", Type: "string", Required: true, Description: "the binary's version, e.g. 1.2.0"},
				{Name: "os", Type: "string", Required: true, Enum: api.PackageOSes, Description: "the binary's operating system"},
				{Name: "arch", Type: "string", Required: true, Enum: api.PackageArches, Description: "the binary's architecture"},
			},
			Status: 201, Also: []int{200}, Response: api.AgentPackageView{}, Errors: []int{400, 409, 413},
			Summary:     "Upload an agent binary",
			Description: "The coordinator checks that it is an executable for that OS and signs it. 201 when stored, 200 when the same binary was already stored."},
		{Method: "GET", Path: "/api/agent-packages", Tag: upgrades, Roles: everyone, Status: 200, Response: []api.AgentPackageView{},
			Summary: "List stored agent packages, newest first"},
		{Method: "POST", Idempotent: true, Path: "/api/rollouts", Tag: upgrades, Roles: operators, Request: api.RolloutRequest{}, Status: 201, Response: api.RolloutView{},
			Errors:      []int{400, 404, 409, 413},
			Summary:     "Start upgrading agents, in batches",
			Description: "Give exactly one of environment or all. 409 in maintenance mode or while another rollout runs on the same agents."},
		{Method: "GET", Path: "/api/rollouts", Tag: upgrades, Roles: readers, Status: 200, Response: []api.RolloutView{},
			Summary: "List rollouts, newest first, with counts but not agents"},
		{Method: "GET", Path: "/api/rollouts/{id}", Tag: upgrades, Roles: readers, Status: 200, Response: api.RolloutView{}, Errors: []int{404},
			Summary: "One rollout with each agent's state, time and reason"},
		{Method: "POST", Path: "/api/rollouts/{id}/halt", Tag: upgrades, Roles: operators, Status: 200, Response: api.RolloutView{}, Errors: []int{404, 409},
			Summary:     "Halt a running rollout",
			Description: "No further batch starts; agents of the batch under way finish. The halt is stored and survives a restart. 409 if the rollout has finished."},
		{Method: "POST", Path: "/api/rollouts/{id}/resume", Tag: upgrades, Roles: operators, Status: 200, Response: api.RolloutView{}, Errors: []int{404, 409},
			Summary:     "Resume a halted rollout",
			Description: "The next batch starts. 409 if the rollout has finished, or in maintenance mode."},
	}
}

// openAPIErrorText is what each error status means, for the document.
var openAPIErrorText = map[int]string{
	400: "The request is not valid: a parameter or a field is missing, of the wrong type, null where it may not be, or breaks its rule (pattern, range), or the request contradicts itself. The error names the field and the rule.",
	401: "No API key, or one that is not valid (unknown or revoked).",
	403: "The API key's role may not do this (the operation's x-roles lists the roles that may), or, for a deployer, it names an agent, environment or task outside its environments. The error names the role and what it may do.",
	404: "What the path or body names does not exist.",
	405: "The path exists, but not with this method; the Allow header lists the methods it takes.",
	409: "The request contradicts the coordinator's state (maintenance mode, an agent not connected, a rollout already running or finished, content or a name already stored), or a request with the same Idempotency-Key is still running (Retry-After says when to send it again).",
	413: "The request body is larger than this endpoint accepts.",
	415: "The request body's Content-Type is not one this endpoint takes: application/json for a JSON body; an upload lists its media types.",
	422: "The Idempotency-Key was used before with a different request.",
	500: "The coordinator failed; its log has the details.",
	503: "The database is unreachable, and the request needs it (the API key's check does). Retry-After says when to try again.",
	507: "The coordinator's data folder has no room for what the request writes; the error says how much is free and how much was needed. Nothing was kept: free space and send it again.",
}

// The rules of fields tagged schema:"..." in the api package's request
// types: the pattern the coordinator checks them with, and the rule in
// words, which a refusal quotes.
const (
	// durationPattern is what time.ParseDuration reads, units required.
	durationPattern = `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// sizePattern is what api.ParseSize reads.
	sizePattern = `^\s*[0-9]+(\.[0-9]+)?\s*([KkMmGgTt]([Ii]?[Bb])?|[Bb])?\s*$`
)

var fieldRules = map[string]struct{ pattern, rule string }{
	"name":     {api.NamePattern, "a name of " + strings.TrimPrefix(api.NameRule, "use ")},
	"duration": {durationPattern, "a duration such as 30s, 10m or 24h"},
	"size":     {sizePattern, "a size such as 2GiB, 500MB or 1048576 (bytes)"},
}

var pathParam = regexp.MustCompile(`\{([a-z]+)\}`)

// errorStatuses are the error statuses rt can answer: those its row
// lists, and those every route of its kind can.
func errorStatuses(rt Route) []int {
	errs := slices.Clone(rt.Errors)
	add := func(sts ...int) {
		for _, st := range sts {
			if !slices.Contains(errs, st) {
				errs = append(errs, st)
			}
		}
	}
	if rt.Request != nil || rt.RawBody != nil || len(rt.Query) > 0 {
		add(400) // validation against this document
	}
	if rt.Request != nil || rt.RawBody != nil {
		add(413, 415)
	}
	if rt.RawBody != nil || rt.Path == "/api/backup/snapshot" {
		add(507) // stores what it receives or writes
	}
	if rt.Idempotent {
		add(400, 409, 422) // a bad key, a key still running, a key reused
	}
	if !rt.Public {
		add(401, 403, 503) // the key is checked in the database
	}
	add(500)
	slices.Sort(errs)
	return errs
}

// buildOpenAPI generates the document for a coordinator of the given
// version.
func buildOpenAPI(version string) map[string]any {
	defs := map[string]any{}
	defs["APIError"] = map[string]any{
		"type":                 "object",
		"required":             []string{"error"},
		"properties":           map[string]any{"error": map[string]any{"type": "string", "description": "what went wrong, in words a person can act on"}},
		"additionalProperties": false,
	}
	// Responses first: a type that both a response and a request use is
	// the response's component, and the request's is named ...Input.
	out := &schemaGen{defs: defs, inputs: map[string]bool{}}
	in := &schemaGen{defs: defs, inputs: out.inputs, request: true}
	routes := Routes()
	respSchemas := make([]map[string]any, len(routes))
	for i, rt := range routes {
		switch {
		case rt.Response != nil:
			respSchemas[i] = out.schema(reflect.TypeOf(rt.Response))
		case rt.ResponseAnyOf != nil:
			var anyOf []any
			for _, v := range rt.ResponseAnyOf {
				anyOf = append(anyOf, out.schema(reflect.TypeOf(v)))
			}
			respSchemas[i] = map[string]any{"anyOf": anyOf}
		}
	}
	errResponses := map[string]any{}
	errResponse := func(st int) map[string]any {
		name := fmt.Sprintf("Error%d", st)
		errResponses[name] = map[string]any{
			"description": openAPIErrorText[st],
			"content":     map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/APIError"}}},
		}
		return map[string]any{"$ref": "#/components/responses/" + name}
	}
	// 405 is no operation's answer (it is for the methods a path does
	// not have) but every path's: declared once, for clients to know it.
	errResponse(405)
	paths := map[string]any{}
	var tags []string
	for i, rt := range routes {
		if !slices.Contains(tags, rt.Tag) {
			tags = append(tags, rt.Tag)
		}
		op := map[string]any{
			"operationId": operationID(rt),
			"summary":     rt.Summary,
			"tags":        []string{rt.Tag},
		}
		if rt.Description != "" {
			op["description"] = rt.Description
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(rt.Path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.Query {
			params = append(params, map[string]any{"name": q.Name, "in": "query", "required": q.Required,
				"description": q.Description, "schema": q.schema()})
		}
		if rt.Idempotent {
			desc := "Names this create: the same request sent again with the same key (a retry after a broken connection) is answered as the first was, with the header Idempotent-Replayed, instead of creating twice. Keys are kept a day."
			if rt.SecretAnswer {
				desc += " The answer holds a secret, which is not kept: a request sent again after the first completed is answered 409."
			}
			params = append(params, map[string]any{"name": "Idempotency-Key", "in": "header", "required": false,
				"description": desc, "schema": map[string]any{"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		limit := rt.MaxBody
		if limit == 0 {
			limit = MaxRequestBody
		}
		switch {
		case rt.Request != nil:
			op["requestBody"] = map[string]any{
				"required":    true,
				"description": fmt.Sprintf("A JSON object, sent as application/json, of at most %d bytes. Fields not listed are refused, and so is null for a field that is not nullable.", limit),
				"content":     map[string]any{"application/json": map[string]any{"schema": in.schema(reflect.TypeOf(rt.Request))}},
			}
		case rt.RawBody != nil:
			content := map[string]any{}
			for _, media := range rt.RawBody {
				content[media] = map[string]any{}
			}
			op["requestBody"] = map[string]any{
				"required":    true,
				"description": fmt.Sprintf("The file's bytes, at most %d, as %s (a request without a Content-Type is taken as application/octet-stream).", limit, strings.Join(rt.RawBody, " or ")),
				"content":     content,
			}
		}
		responses := map[string]any{}
		for _, st := range append([]int{rt.Status}, rt.Also...) {
			resp := map[string]any{"description": http.StatusText(st)}
			media := rt.ResponseMedia
			if media == "" {
				media = "application/json"
			}
			switch {
			case respSchemas[i] != nil:
				resp["content"] = map[string]any{media: map[string]any{"schema": respSchemas[i]}}
			case st != http.StatusNoContent:
				resp["content"] = map[string]any{media: map[string]any{}}
			}
			responses[fmt.Sprint(st)] = resp
		}
		if !rt.Public {
			op["security"] = []any{map[string]any{"bearer": []string{}}}
			op["x-roles"] = rt.Roles
			op["description"] = strings.TrimSpace(rt.Description + " " + rolesText(rt))
		} else {
			op["security"] = []any{}
		}
		for _, st := range errorStatuses(rt) {
			responses[fmt.Sprint(st)] = errResponse(st)
		}
		op["responses"] = responses
		item, _ := paths[rt.Path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[rt.Path] = item
		}
		item[strings.ToLower(rt.Method)] = op
	}
	var tagList []any
	for _, t := range tags {
		tagList = append(tagList, map[string]any{"name": t})
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":   "Tendril coordinator API",
			"version": version,
			"description": "The HTTP API of a Tendril coordinator (tendril-server). Every endpoint but this document needs an API key " +
				"sent as `Authorization: Bearer <key>`; the admin key is in the data folder's admin.key. Each key has a role " +
				"(admin, operator, deployer or viewer); each operation lists in x-roles the roles that may call it, and answers 403 to the others. " +
				"A deployer acts only on the agents of its environments. Every error answers " +
				"`{\"error\": \"...\"}` with a message a person can act on. Every request is validated against this document before it is served: " +
				"400 for a missing required field or parameter, a value of the wrong type, null where the schema has none, an empty typed query parameter " +
				"or a value that breaks its pattern or range, and for a field the schema does not list; 415 for a body whose Content-Type the operation " +
				"does not take (application/json for JSON bodies); 405, with an Allow header, for a method a path does not take.",
		},
		"servers": []any{map[string]any{"url": "/", "description": "this coordinator"}},
		"tags":    tagList,
		"paths":   paths,
		"components": map[string]any{
			"schemas":   defs,
			"responses": errResponses,
			"securitySchemes": map[string]any{
				"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "An API key, e.g. the admin key from the data folder's admin.key."},
			},
		},
		"security": []any{map[string]any{"bearer": []string{}}},
	}
}

// schema is the parameter's JSON Schema.
func (q Param) schema() map[string]any {
	s := map[string]any{"type": q.Type}
	if q.Minimum != nil {
		s["minimum"] = *q.Minimum
	}
	if q.Maximum != nil {
		s["maximum"] = *q.Maximum
	}
	if q.Enum != nil {
		s["enum"] = q.Enum
	}
	return s
}

// rolesText says in the description who may call a route, as x-roles
// does for tools.
func rolesText(rt Route) string {
	t := "Roles: " + roleList(rt.Roles) + "."
	if rt.Scope != "" {
		t += " A deployer: " + rt.Scope + "."
	}
	return t
}

// operationID is a stable, unique name for a route, e.g.
// post_api_rollouts_id_halt.
func operationID(rt Route) string {
	p := strings.NewReplacer("/", "_", "{", "", "}", "", "-", "_", ".", "_").Replace(strings.TrimPrefix(rt.Path, "/"))
	return strings.ToLower(rt.Method) + "_" + p
}

// schemaGen turns Go types into JSON Schema (2020-12, as OpenAPI 3.1
// uses), named structs as components.
type schemaGen struct {
	defs map[string]any
	// request makes the schemas of request bodies, which the API
	// validates requests with: no field is nullable (a field may be left
	// out, but null is refused rather than read as left out), fields the
	// type does not have are refused, as the handlers' decoder refuses
	// them, and fields tagged schema:"name", "duration" or "size" carry
	// their rule (fieldRules). They use only keywords that mean the same
	// in OpenAPI 3.0's schema dialect (type, properties, required,
	// additionalProperties, items, pattern, format, $ref), which
	// requestValidator relies on.
	request bool
	// inputs are the components made in request mode. One whose name a
	// response's component has already is named with the suffix Input.
	inputs map[string]bool
}

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

func (g *schemaGen) schema(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == rawType:
		return map[string]any{}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return g.schema(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			if g.request {
				// contentEncoding is a 3.1 keyword, and requests are
				// validated with OpenAPI 3.0's dialect (requestValidator).
				panic(fmt.Sprintf("openapi: %s in a request: send bytes as an upload, or as a string the handler decodes", t))
			}
			return map[string]any{"type": "string", "contentEncoding": "base64"}
		}
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		if t.Name() == "" {
			return g.object(t)
		}
		name := t.Name()
		if g.request {
			if _, ok := g.defs[name]; ok && !g.inputs[name] {
				name += "Input"
			}
			g.inputs[name] = true
		} else if g.inputs[name] {
			panic(fmt.Sprintf("openapi: response type %s is named like a request's component: generate responses first", t))
		}
		if _, ok := g.defs[name]; !ok {
			g.defs[name] = nil // placeholder: a type that refers to itself stops here
			g.defs[name] = g.object(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	panic(fmt.Sprintf("openapi: no schema for %s", t))
}

// object describes a struct as encoding/json encodes it: exported fields
// by their json names, embedded structs' fields in line; fields without
// omitempty or omitzero are always present, so required.
func (g *schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for f := range t.Fields() {
			if !f.IsExported() && !f.Anonymous {
				continue
			}
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
				walk(f.Type)
				continue
			}
			if name == "" {
				name = f.Name
			}
			s := g.schema(f.Type)
			optional := strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero")
			if g.request {
				if rule := f.Tag.Get("schema"); rule != "" {
					applyRule(t, f, s, rule)
				}
			} else if !optional && nullable(f.Type) {
				// A nil pointer, slice or map that is not omitted encodes as null.
				s = map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
			}
			props[name] = s
			if !optional {
				required = append(required, name)
			}
		}
	}
	walk(t)
	o := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		slices.Sort(required)
		o["required"] = required
	}
	if g.request {
		o["additionalProperties"] = false
	}
	return o
}

// applyRule puts the rule a field's schema tag names on its schema s, or
// on its items for a list of strings.
func applyRule(t reflect.Type, f reflect.StructField, s map[string]any, rule string) {
	r, ok := fieldRules[rule]
	if !ok {
		panic(fmt.Sprintf("openapi: %s.%s: unknown schema rule %q", t, f.Name, rule))
	}
	if items, ok := s["items"].(map[string]any); ok {
		s = items
	}
	if s["type"] != "string" {
		panic(fmt.Sprintf("openapi: %s.%s: schema rule %q on a %s, want a string or a list of strings", t, f.Name, rule, f.Type))
	}
	s["pattern"] = r.pattern
	s["description"] = r.rule
}

func nullable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Interface:
		return true
	case reflect.Slice:
		return t != rawType
	}
	return false
}

// openAPICache holds the encoded document for the version last asked;
// every coordinator in a process but a test's has one version.
var openAPICache struct {
	sync.Mutex
	version string
	body    []byte
}

// Document is the OpenAPI document of a coordinator of the given version,
// encoded.
func Document(version string) ([]byte, error) {
	openAPICache.Lock()
	defer openAPICache.Unlock()
	if openAPICache.body != nil && openAPICache.version == version {
		return openAPICache.body, nil
	}
	b, err := json.MarshalIndent(buildOpenAPI(version), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode OpenAPI document: %w", err)
	}
	openAPICache.version, openAPICache.body = version, append(b, '\n')
	return openAPICache.body, nil
}

// apiOpenAPI serves the document without an API key: it is
// documentation, holds no fleet data, and tools that read it (API
// browsers, client generators) should not need a secret to do so.
func (h *API) apiOpenAPI(w http.ResponseWriter, r *http.Request) {
	b, err := Document(h.version)
	if err != nil {
		h.internalError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b)
}
