package server

// Every operation of the served OpenAPI document, driven over real HTTP
// with the admin key: first with invalid input generated from the
// operation's own schemas (a required field left out, a field of the
// wrong type, null, an unknown field, a body of the wrong media type, an
// empty or wrong typed query parameter), each refused with 400 or 415
// naming what is wrong and nothing changed; then with a valid request.
// Nothing answers 5xx, and every answer matches the document's schema
// for its status, checked by kin-openapi's response validation.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/tendrildeploy/tendril/api"
)

// validCall is a request an operation must answer with success.
type validCall struct {
	route string // "METHOD /path" as in the document
	path  string // with its parameters and query
	body  func(t *testing.T) []byte
	// ct is the body's Content-Type: application/json unless set.
	ct string
}

func jsonBody(s string) func(*testing.T) []byte { return func(*testing.T) []byte { return []byte(s) } }

// validCalls lists, in the order they are made, a valid request for
// every operation: reads first, then what adds or changes, then what
// removes, so that each one still finds what it names.
func validCalls(ts *testServer, fx apiFixture, export *[]byte) []validCall {
	newTask := `{"agent": "` + fx.agent + `", "args": ["run-script", "--inline", "echo hi"]}`
	return []validCall{
		{route: "GET /api/openapi.json", path: "/api/openapi.json"},
		{route: "GET /api/agents", path: "/api/agents"},
		{route: "GET /api/agents/{name}", path: "/api/agents/" + fx.agent},
		{route: "GET /api/tokens", path: "/api/tokens"},
		{route: "GET /api/users", path: "/api/users"},
		{route: "GET /api/api-keys", path: "/api/api-keys"},
		{route: "GET /api/server", path: "/api/server"},
		{route: "GET /api/server/goroutines", path: "/api/server/goroutines"},
		{route: "GET /api/maintenance", path: "/api/maintenance"},
		{route: "GET /api/policy", path: "/api/policy"},
		{route: "GET /api/updates", path: "/api/updates"},
		{route: "GET /api/nodes", path: "/api/nodes"},
		{route: "GET /api/calamari", path: "/api/calamari"},
		{route: "GET /api/export", path: "/api/export"},
		{route: "GET /api/tasks", path: "/api/tasks?agent=" + fx.away + "&limit=10"},
		{route: "GET /api/tasks/{id}", path: "/api/tasks/" + fx.task},
		{route: "GET /api/agent-packages", path: "/api/agent-packages"},
		{route: "GET /api/rollouts", path: "/api/rollouts"},
		{route: "GET /api/rollouts/{id}", path: "/api/rollouts/" + fx.rollout},

		{route: "POST /api/agents", path: "/api/agents", body: jsonBody(listeningBody("dmz-2", "DMZ", "127.0.0.1:1", listeningThumb2))},
		{route: "PUT /api/agents/{name}/address", path: "/api/agents/" + fx.listening + "/address", body: jsonBody(`{"address": "127.0.0.1:2"}`)},
		{route: "POST /api/agents/{name}/health-check", path: "/api/agents/" + fx.agent + "/health-check"},
		{route: "POST /api/agents/{name}/diagnostics", path: "/api/agents/" + fx.agent + "/diagnostics"},
		{route: "POST /api/tokens", path: "/api/tokens", body: jsonBody(`{"environment": "Prod", "ttl": "1h", "servers": ["127.0.0.1:9999"]}`)},
		{route: "POST /api/users", path: "/api/users", body: jsonBody(`{"name": "eve", "password": "correct horse battery staple", "role": "deployer", "environments": ["Prod"]}`)},
		{route: "POST /api/api-keys", path: "/api/api-keys", body: jsonBody(`{"name": "deploy", "role": "viewer"}`)},
		{route: "PUT /api/maintenance", path: "/api/maintenance", body: jsonBody(`{"on": false}`)},
		{route: "PUT /api/policy", path: "/api/policy", body: jsonBody(`{"health_interval": "1h", "calamari_keep": 4, "work_min_free": "1GiB"}`)},
		{route: "POST /api/backup/snapshot", path: "/api/backup/snapshot"},
		{route: "POST /api/calamari", path: "/api/calamari", ct: "application/gzip",
			body: func(t *testing.T) []byte { return packBundle(t, "1.0.1", 0) }},
		{route: "POST /api/calamari/update", path: "/api/calamari/update", body: jsonBody(`{"environment": "Prod"}`)},
		{route: "POST /api/import", path: "/api/import?trust_any_source=true", ct: "application/gzip",
			body: func(t *testing.T) []byte {
				if len(*export) == 0 {
					t.Fatal("no export file: GET /api/export must run first")
				}
				return *export
			}},
		{route: "POST /api/files", path: "/api/files", ct: "application/octet-stream", body: jsonBody("file content")},
		{route: "POST /api/tasks", path: "/api/tasks", body: jsonBody(newTask)},
		// Cancelled, the task has finished: its log ends with the task.
		{route: "POST /api/tasks/{id}/cancel", path: "/api/tasks/" + fx.task + "/cancel"},
		{route: "GET /api/tasks/{id}/log", path: "/api/tasks/" + fx.task + "/log?from=1&follow=false"},
		{route: "GET /api/tasks/{id}/artifacts/{name}", path: "/api/tasks/" + fx.task + "/artifacts/report.txt"},
		{route: "POST /api/agent-packages", path: "/api/agent-packages?version=3.0.0&os=linux&arch=amd64", ct: "application/octet-stream",
			body: func(*testing.T) []byte { return []byte(fx.agentBinary) }},
		{route: "POST /api/rollouts/{id}/halt", path: "/api/rollouts/" + fx.rollout + "/halt"},
		{route: "POST /api/rollouts/{id}/resume", path: "/api/rollouts/" + fx.rollout + "/resume"},
		{route: "POST /api/rollouts", path: "/api/rollouts", body: func(t *testing.T) []byte {
			// A connected agent of its own, busy, so that the rollout
			// waits for it and its state holds still while it is read.
			f := newFakeAgent(t, ts, "stage-1", "Stage", "1.0.0")
			ts.waitConnected(t, "stage-1")
			makeBusy(t, ts, f)
			return []byte(`{"environment": "Stage", "batch": 1}`)
		}},
		{route: "POST /api/nodes/{name}/drain", path: "/api/nodes/" + fx.node + "/drain"},
		{route: "POST /api/nodes/{name}/undrain", path: "/api/nodes/" + fx.node + "/undrain"},
		{route: "POST /api/certificate/rotate", path: "/api/certificate/rotate?force=true"},

		{route: "POST /api/api-keys/{id}/revoke", path: "/api/api-keys/" + fx.apiKey + "/revoke"},
		{route: "DELETE /api/tokens/{id}", path: "/api/tokens/" + fx.token},
		{route: "DELETE /api/users/{name}", path: "/api/users/" + fx.user},
		{route: "DELETE /api/agents/{name}", path: "/api/agents/" + fx.away},
	}
}

// invalidCall is a request generated from an operation's schema that the
// API must refuse.
type invalidCall struct {
	what   string // what is wrong, for messages
	path   string
	ct     string
	body   []byte
	status int
	msg    string // the refusal must say this
}

// opDoc is the document an operation test reads, with the router that
// finds a request's operation in it.
type opDoc struct {
	doc    *openapi3.T
	router routers.Router
}

func TestOpenAPIEveryOperation(t *testing.T) {
	ts := startServer(t, nil)
	fx := setUpAPIFixture(t, ts)
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openAPIDoc(t, ts))
	if err != nil {
		t.Fatal(err)
	}
	router, err := legacy.NewRouter(doc) // validates the document too
	if err != nil {
		t.Fatal(err)
	}
	d := opDoc{doc: doc, router: router}
	var export []byte
	calls := validCalls(ts, fx, &export)

	// Every operation of the document has its valid call, and every
	// valid call an operation.
	byRoute := map[string]validCall{}
	for _, c := range calls {
		if _, ok := byRoute[c.route]; ok {
			t.Fatalf("%s has two valid calls", c.route)
		}
		byRoute[c.route] = c
	}
	ops := 0
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			ops++
			if _, ok := byRoute[method+" "+path]; !ok {
				t.Errorf("%s %s is in the document but has no valid call in validCalls", method, path)
			}
		}
	}
	if ops != len(calls) {
		t.Errorf("the document has %d operations, validCalls %d calls", ops, len(calls))
	}
	if t.Failed() {
		t.FailNow()
	}

	for _, c := range calls {
		method, _, _ := strings.Cut(c.route, " ")
		t.Run(c.route, func(t *testing.T) {
			var body []byte
			if c.body != nil {
				body = c.body(t)
			}
			ct := c.ct
			if body != nil && ct == "" {
				ct = "application/json"
			}
			route, _, err := router.FindRoute(routedRequest(t, method, c.path, ct, body))
			if err != nil {
				t.Fatalf("the document has no operation for %s %s: %v", method, c.path, err)
			}
			invalid := invalidCalls(t, route.Operation, c.path, ct, body)
			takesInput := route.Operation.RequestBody != nil || slices.ContainsFunc(route.Operation.Parameters, func(p *openapi3.ParameterRef) bool {
				return p.Value.In == openapi3.ParameterInQuery
			})
			if takesInput {
				if len(invalid) == 0 {
					t.Fatal("the operation takes input, but no invalid input was generated from its schema")
				}
			}
			before := apiState(t, ts)
			for _, ic := range invalid {
				resp, got := ts.apiAs(t, method, ic.path, "", ic.ct, bytes.NewReader(ic.body))
				d.checkResponse(t, method, ic.path, ic.ct, ic.body, resp, got)
				var e api.APIError
				json.Unmarshal(got, &e)
				if resp.StatusCode != ic.status || !strings.Contains(e.Error, ic.msg) {
					t.Errorf("%s: got %d %q, want %d saying %q", ic.what, resp.StatusCode, got, ic.status, ic.msg)
				}
			}
			if after := apiState(t, ts); after != before {
				t.Fatalf("invalid input was refused, but the coordinator's state changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}

			var rd io.Reader
			if body != nil {
				rd = bytes.NewReader(body)
			}
			resp, got := ts.apiAs(t, method, c.path, "", ct, rd)
			d.checkResponse(t, method, c.path, ct, body, resp, got)
			if resp.StatusCode < 200 || resp.StatusCode > 299 {
				t.Fatalf("valid request: got %d %.1000s, want success", resp.StatusCode, got)
			}
			if c.route == "GET /api/export" {
				export = got
			}
		})
	}
}

// routedRequest is the request ts.apiAs sends, for the router, which
// reads only its method, path and query.
func routedRequest(t *testing.T, method, path, ct string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, path, bytes.NewReader(body)) // relative, as the document's server "/" is
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	return req
}

func init() {
	// The task log streams one JSON value a line; each is checked alone.
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", openapi3filter.JSONBodyDecoder)
}

// checkResponse fails t if a response is a 5xx, or does not match the
// document: its status must be the operation's and its body that
// status's schema (each line of a stream alone).
func (d opDoc) checkResponse(t *testing.T, method, path, ct string, body []byte, resp *http.Response, got []byte) {
	t.Helper()
	if resp.StatusCode >= 500 {
		t.Errorf("%s %s: got %d %s, want no 5xx", method, path, resp.StatusCode, got)
	}
	req := routedRequest(t, method, path, ct, body)
	route, params, err := d.router.FindRoute(req)
	if err != nil {
		t.Fatalf("%s %s: no operation in the document: %v", method, path, err)
	}
	bodies := [][]byte{got}
	if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "application/x-ndjson" {
		bodies = nil
		sc := bufio.NewScanner(bytes.NewReader(got))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
				bodies = append(bodies, slices.Clone(line))
			}
		}
	}
	for _, b := range bodies {
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
			Status:                 resp.StatusCode,
			Header:                 resp.Header,
			Options:                &openapi3filter.Options{IncludeResponseStatus: true},
		}
		in.SetBodyBytes(b)
		if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
			t.Errorf("%s %s: the %d answer does not match the document: %v\nbody: %.1000s", method, path, resp.StatusCode, err, b)
		}
	}
}

// invalidCalls generates invalid input for an operation from its schemas,
// around a valid request's path, media type and body.
func invalidCalls(t *testing.T, op *openapi3.Operation, path, ct string, body []byte) []invalidCall {
	t.Helper()
	var out []invalidCall
	u, err := url.Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	withQuery := func(q url.Values) string {
		v := *u
		v.RawQuery = q.Encode()
		return v.String()
	}
	for _, p := range op.Parameters {
		p := p.Value
		if p.In != openapi3.ParameterInQuery {
			continue
		}
		name := fmt.Sprintf("query parameter %q", p.Name)
		typ := p.Schema.Value.Type
		if p.Required {
			q := u.Query()
			q.Del(p.Name)
			out = append(out, invalidCall{what: name + " left out", path: withQuery(q), ct: ct, body: body, status: 400, msg: name + " is required"})
		}
		if !typ.Is(openapi3.TypeString) {
			q := u.Query()
			q.Set(p.Name, "")
			out = append(out, invalidCall{what: name + " empty", path: withQuery(q), ct: ct, body: body, status: 400, msg: name + " is empty"})
			q.Set(p.Name, "lots")
			out = append(out, invalidCall{what: name + " of the wrong type", path: withQuery(q), ct: ct, body: body, status: 400, msg: name + " must be"})
		}
		if len(p.Schema.Value.Enum) > 0 {
			q := u.Query()
			q.Set(p.Name, "plan9")
			out = append(out, invalidCall{what: name + " not one of its values", path: withQuery(q), ct: ct, body: body, status: 400, msg: name + `: "plan9" is not one of`})
		}
	}
	rb := op.RequestBody
	if rb == nil {
		return out
	}
	media := rb.Value.Content.Get("application/json")
	if media == nil {
		// An upload: any media type but its own is refused.
		out = append(out, invalidCall{what: "an upload sent as JSON", path: path, ct: "application/json", body: body, status: 415,
			msg: "this endpoint takes the file's bytes as"})
		// Uploads are refused before they are read: send only their first
		// 4 KiB, as megabytes would meet the closed connection (a reset)
		// before the answer.
		for i := range out {
			if len(out[i].body) > 4096 {
				out[i].body = out[i].body[:4096]
			}
		}
		return out
	}
	out = append(out,
		invalidCall{what: "a JSON body sent as text", path: path, ct: "text/plain", body: body, status: 415, msg: `send it with "Content-Type: application/json" (got "text/plain")`},
		invalidCall{what: "a JSON body sent without a type", path: path, body: body, status: 415, msg: `(got none)`},
		invalidCall{what: "an empty body", path: path, ct: ct, status: 400, msg: "request body is empty"},
	)
	schema := media.Schema.Value
	var valid map[string]any
	if err := json.Unmarshal(body, &valid); err != nil {
		t.Fatalf("valid body %s: %v", body, err)
	}
	mutate := func(what string, f func(m map[string]any), msg string) {
		m := map[string]any{}
		for k, v := range valid {
			m[k] = v
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, invalidCall{what: what, path: path, ct: ct, body: b, status: 400, msg: msg})
	}
	mutate("an unknown field", func(m map[string]any) { m["colour"] = "red" }, `unknown field "colour"`)
	for _, name := range schema.Required {
		mutate(fmt.Sprintf("required field %q left out", name), func(m map[string]any) { delete(m, name) }, fmt.Sprintf("field %q is required", name))
	}
	names := make([]string, 0, len(schema.Properties))
	for name := range schema.Properties {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		ps := schema.Properties[name].Value
		field := fmt.Sprintf("field %q", name)
		if !ps.Type.Includes(openapi3.TypeNull) {
			mutate(field+" null", func(m map[string]any) { m[name] = nil }, field+" must be")
		}
		wrong, kind := wrongValue(ps)
		mutate(field+" of the wrong type", func(m map[string]any) { m[name] = wrong }, field+" must be "+typeWords(ps)+", not "+kind)
	}
	return out
}

// wrongValue is a value of another type than s wants, and its kind as the
// API names it.
func wrongValue(s *openapi3.Schema) (any, string) {
	if s.Type.Is(openapi3.TypeString) {
		return 12345, "a number"
	}
	return "lots", "a string"
}

// typeWords is how the API names the type a schema wants.
func typeWords(s *openapi3.Schema) string {
	switch {
	case s.Type.Is(openapi3.TypeString):
		return "a string"
	case s.Type.Is(openapi3.TypeBoolean):
		return "true or false"
	case s.Type.Is(openapi3.TypeInteger):
		return "a whole number"
	case s.Type.Is(openapi3.TypeArray):
		return "an array"
	case s.Type.Is(openapi3.TypeObject):
		return "an object"
	}
	return "a " + strings.Join(s.Type.Slice(), " or ")
}

// TestAPIStrictBadInput: each bad request of issue 20's list is refused
// with its status and a message that names what is wrong, and changes
// nothing: no key, token or task made, no setting changed.
func TestAPIStrictBadInput(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "web-1")
	tests := []struct {
		name, method, path, ct, body string
		status                       int
		msg                          string
		allow                        string // the Allow header a 405 must carry
	}{
		{name: "method the path does not take", method: "DELETE", path: "/api/api-keys", status: 405,
			msg: "DELETE /api/api-keys is not allowed; this endpoint takes GET, POST", allow: "GET, POST"},
		{name: "body that is not JSON", method: "POST", path: "/api/api-keys", ct: "text/plain", body: `{"name": "ci"}`, status: 415,
			msg: `this endpoint takes a JSON body: send it with "Content-Type: application/json" (got "text/plain")`},
		{name: "JSON body without a Content-Type", method: "POST", path: "/api/tokens", body: `{"environment": "Prod"}`, status: 415,
			msg: `this endpoint takes a JSON body: send it with "Content-Type: application/json" (got none)`},
		{name: "upload of a media type it does not take", method: "POST", path: "/api/files", ct: "application/json", body: `{}`, status: 415,
			msg: `this endpoint takes the file's bytes as application/octet-stream (got Content-Type "application/json")`},
		{name: "null for a string", method: "POST", path: "/api/tokens", ct: "application/json", body: `{"environment": "Prod", "ttl": null}`, status: 400,
			msg: `field "ttl" must be a string, not null`},
		{name: "null for an optional setting", method: "PUT", path: "/api/policy", ct: "application/json", body: `{"health_interval": null, "calamari_keep": 2}`, status: 400,
			msg: `field "health_interval" must be a string, not null`},
		{name: "empty typed query parameter", method: "GET", path: "/api/tasks?limit=", status: 400,
			msg: `query parameter "limit" is empty: give a whole number, or leave it out`},
		{name: "missing required field", method: "POST", path: "/api/api-keys", ct: "application/json", body: `{"role": "admin"}`, status: 400,
			msg: `field "name" is required`},
		{name: "missing required field of a task", method: "POST", path: "/api/tasks", ct: "application/json", body: `{"agent": "web-1"}`, status: 400,
			msg: `field "args" is required`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := apiState(t, ts)
			keys, err := ts.access.APIKeys(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			resp, got := ts.apiAs(t, tt.method, tt.path, "", tt.ct, body)
			var e api.APIError
			if err := json.Unmarshal(got, &e); err != nil || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("got %d %q (%s), want a JSON error", resp.StatusCode, got, resp.Header.Get("Content-Type"))
			}
			if resp.StatusCode != tt.status || e.Error != tt.msg && !strings.HasPrefix(e.Error, tt.msg+" (") {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, e.Error, tt.status, tt.msg)
			}
			if resp.Header.Get("Allow") != tt.allow {
				t.Errorf("Allow: got %q, want %q", resp.Header.Get("Allow"), tt.allow)
			}
			if after := apiState(t, ts); after != before {
				t.Errorf("refused, but the coordinator's state changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if after, err := ts.access.APIKeys(t.Context()); err != nil || len(after) != len(keys) {
				t.Errorf("API keys: got %d (%v), want the %d there were", len(after), err, len(keys))
			}
		})
	}
}
