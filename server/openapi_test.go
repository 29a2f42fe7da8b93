package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/tendrildeploy/tendril/server/httpapi"
)

// apiPatternLiteral matches a ServeMux pattern of an API route as written
// in the source: "POST /api/rollouts/{id}/halt".
var apiPatternLiteral = regexp.MustCompile(`^(GET|POST|PUT|PATCH|DELETE|HEAD) (/api/\S*)$`)

// registeredAPIRoutes returns "METHOD /path" for every API route the
// coordinator's handler serves. ServeMux cannot list its patterns, so the
// candidates are every pattern-shaped string literal in package httpapi's
// (non-test) source, and each counts only if the handler really routes a
// request for it to that very pattern: a literal that is not registered,
// or is shadowed by another route, is reported.
func registeredAPIRoutes(t *testing.T, mux *http.ServeMux) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("httpapi", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var found []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err == nil && apiPatternLiteral.MatchString(s) {
				found = append(found, s)
			}
			return true
		})
	}
	slices.Sort(found)
	found = slices.Compact(found)
	var routes []string
	for _, p := range found {
		m := apiPatternLiteral.FindStringSubmatch(p)
		req := httptest.NewRequest(m[1], samplePath(m[2]), nil)
		if _, got := mux.Handler(req); got != p {
			t.Errorf("pattern %q is in the source but a request for it is routed to %q: register it in httpapi.API.Register or remove it", p, got)
			continue
		}
		routes = append(routes, p)
	}
	return routes
}

var wildcard = regexp.MustCompile(`\{([a-z]+)(\.\.\.)?\}`)

// samplePath fills a pattern's wildcards with sample values.
func samplePath(pattern string) string {
	return wildcard.ReplaceAllString(pattern, "sample-$1")
}

func documentedRoutes() []string {
	var out []string
	for _, rt := range httpapi.Routes() {
		out = append(out, rt.Method+" "+rt.Path)
	}
	slices.Sort(out)
	return out
}

// TestOpenAPICoversEveryRoute: every /api route the coordinator serves is in
// the document, and everything the document names is registered.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	ts := startServer(t, nil)
	mux := ts.mux()
	registered := registeredAPIRoutes(t, mux)
	if len(registered) < 20 {
		t.Fatalf("found %d API routes in the source, want the 20 and more there are: %q", len(registered), registered)
	}
	documented := documentedRoutes()
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("%s is registered but not in the OpenAPI document: add it to httpapi.Routes()", r)
		}
	}
	for _, rt := range httpapi.Routes() {
		p := rt.Method + " " + rt.Path
		req := httptest.NewRequest(rt.Method, samplePath(rt.Path), nil)
		if _, got := mux.Handler(req); got != p {
			t.Errorf("%s is documented but a request for it is routed to %q: it is not registered", p, got)
		}
	}
	if n := len(slices.Compact(documented)); n != len(documented) {
		t.Errorf("openAPIRoutes lists %d routes, %d of them distinct: a route is listed twice", len(documented), n)
	}
}

// openAPIDoc fetches the served document without a key.
func openAPIDoc(t *testing.T, ts *testServer) []byte {
	t.Helper()
	resp, body := ts.api(t, "GET", "/api/openapi.json", "-", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/openapi.json without a key: got %d %q, want 200 application/json", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return body
}

func TestOpenAPIDocument(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Version = "1.4.2" })
	body := openAPIDoc(t, ts)
	var doc struct {
		OpenAPI string `json:"openapi"`
		Info    struct {
			Title, Version string
		}
		Paths      map[string]map[string]map[string]any
		Components struct {
			Schemas         map[string]any
			SecuritySchemes map[string]map[string]any
		}
		Security []map[string][]string
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("document is not JSON: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") || doc.Info.Title == "" || doc.Info.Version != "1.4.2" {
		t.Fatalf("got openapi %q, title %q, version %q; want 3.1.x, a title and 1.4.2", doc.OpenAPI, doc.Info.Title, doc.Info.Version)
	}
	if b := doc.Components.SecuritySchemes["bearer"]; b["type"] != "http" || b["scheme"] != "bearer" {
		t.Fatalf("security scheme: got %v, want http bearer", b)
	}
	if len(doc.Security) != 1 || doc.Security[0]["bearer"] == nil {
		t.Fatalf("global security: got %v, want bearer", doc.Security)
	}
	if _, ok := doc.Components.Schemas["APIError"]; !ok {
		t.Fatal("no APIError schema")
	}
	ops := 0
	for path, item := range doc.Paths {
		for method, op := range item {
			ops++
			responses, _ := op["responses"].(map[string]any)
			public := path == "/api/openapi.json"
			for _, st := range []string{"401", "500"} {
				if _, ok := responses[st]; !ok && !(public && st == "401") {
					t.Errorf("%s %s: no %s response", method, path, st)
				}
			}
			if id, _ := op["operationId"].(string); id == "" {
				t.Errorf("%s %s: no operationId", method, path)
			}
		}
	}
	if want := len(httpapi.Routes()); ops != want {
		t.Fatalf("operations: got %d, want %d", ops, want)
	}

	// The document is valid OpenAPI 3.1, checked by a validator that knows
	// the specification's own schema.
	d, err := libopenapi.NewDocument(body)
	if err != nil {
		t.Fatalf("parse with libopenapi: %v", err)
	}
	v, errs := validator.NewValidator(d)
	if len(errs) > 0 {
		t.Fatalf("build validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("invalid document: %s: %s (%s)", e.Message, e.Reason, e.HowToFix)
		}
	}
}

// responseChecker checks API responses against the served document.
type responseChecker struct {
	mu sync.Mutex
	v  validator.Validator
}

func newResponseChecker(t *testing.T, ts *testServer) *responseChecker {
	t.Helper()
	d, err := libopenapi.NewDocument(openAPIDoc(t, ts))
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(d)
	if len(errs) > 0 {
		t.Fatalf("build validator: %v", errs)
	}
	return &responseChecker{v: v}
}

// check reports where a JSON response does not match the document: its
// status must be documented for the route and its body must match that
// status's schema.
func (c *responseChecker) check(t *testing.T, method, path string, resp *http.Response, body []byte) {
	t.Helper()
	if err := c.mismatch(method, path, resp, body); err != "" {
		t.Error(err)
	}
}

// mismatch says how a response differs from the document, "" if it
// does not.
func (c *responseChecker) mismatch(method, path string, resp *http.Response, body []byte) string {
	ct := resp.Header.Get("Content-Type")
	if resp.StatusCode != http.StatusNoContent && ct != "application/json" {
		if resp.StatusCode >= 400 {
			return fmt.Sprintf("%s %s: error answered as %q, want application/json", method, path, ct)
		}
		return "" // streams (the task log) are checked by their own tests
	}
	req := httptest.NewRequest(method, path, nil)
	r := &http.Response{StatusCode: resp.StatusCode, Header: resp.Header.Clone(), Body: io.NopCloser(bytes.NewReader(body)), Request: req}
	c.mu.Lock()
	ok, errs := c.v.ValidateHttpResponse(req, r)
	c.mu.Unlock()
	if ok {
		return ""
	}
	var msgs []string
	for _, e := range errs {
		m := e.Message + ": " + e.Reason
		for _, se := range e.SchemaValidationErrors {
			m += fmt.Sprintf(" [%s: %s]", se.FieldPath, se.Reason)
		}
		msgs = append(msgs, m)
	}
	return fmt.Sprintf("%s %s: %d response does not match the OpenAPI document: %s\nbody: %s", method, path, resp.StatusCode, strings.Join(msgs, "; "), body)
}

// TestResponseCheckerCatchesMismatches: the check the API tests rely on
// does refuse answers the document does not describe.
func TestResponseCheckerCatchesMismatches(t *testing.T) {
	ts := startServer(t, nil)
	c := newResponseChecker(t, ts)
	jsonHdr := http.Header{"Content-Type": {"application/json"}}
	tests := []struct {
		name, method, path string
		status             int
		body               string
		ok                 bool
	}{
		{"agents as documented", "GET", "/api/agents", 200, `[]`, true},
		{"agents not an array", "GET", "/api/agents", 200, `{"name": "web-1"}`, false},
		{"agent missing required fields", "GET", "/api/agents/web-1", 200, `{"name": "web-1"}`, false},
		{"field of the wrong type", "GET", "/api/maintenance", 200,
			`{"on": "yes", "running_tasks": 0, "queued_tasks": 0, "running_rollouts": 0}`, false},
		{"undocumented status", "GET", "/api/agents", 418, `{"error": "teapot"}`, false},
		{"error without its message", "GET", "/api/agents/web-1", 404, `{"message": "no"}`, false},
		{"error as documented", "GET", "/api/agents/web-1", 404, `{"error": "no agent named \"web-1\""}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.mismatch(tt.method, tt.path, &http.Response{StatusCode: tt.status, Header: jsonHdr}, []byte(tt.body))
			if (got == "") != tt.ok {
				t.Fatalf("got mismatch %q, want ok=%v", got, tt.ok)
			}
		})
	}
}
