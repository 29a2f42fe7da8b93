package httpapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// newTestValidator is the API's validator, or with as31 one that reads
// the document as OpenAPI 3.1.
func newTestValidator(t testing.TB, as31 bool) *requestValidator {
	t.Helper()
	doc, err := Document("1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	v, err := newRequestValidator(doc, as31)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRequestValidation: requests are held to the OpenAPI document, and a
// refusal names the parameter or field and the rule in words. The
// handlers behind are not reached (the server's tests show that nothing
// changes); here each request only meets the validator, the API's (which
// reads the document as OpenAPI 3.0, for speed) and one reading it as
// the 3.1 it is: both must answer alike.
func TestRequestValidation(t *testing.T) {
	validators := map[string]*requestValidator{"as 3.0": newTestValidator(t, false), "as 3.1": newTestValidator(t, true)}
	type result struct {
		status int
		msg    string
	}
	mux := http.NewServeMux()
	var got result
	var v *requestValidator
	for _, rt := range Routes() {
		p := rt.Method + " " + rt.Path
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			got.status, got.msg = v.refuse(r, p)
		})
	}
	const json = "application/json"
	tests := []struct {
		name, method, path, ct, body string
		status                       int
		msg                          string
	}{
		{"valid", "POST", "/api/api-keys", json, `{"name": "ci"}`, 0, ""},
		{"media type with parameters", "POST", "/api/api-keys", "application/json; charset=utf-8", `{"name": "ci"}`, 0, ""},
		{"missing required field", "POST", "/api/api-keys", json, `{"role": "viewer"}`, 400, `field "name" is required`},
		{"missing nested required field", "POST", "/api/tasks", json, `{"agent": "a", "args": ["x"], "variables": [{"name": "A"}]}`, 400, `field "variables[0].value" is required`},
		{"null for a string", "POST", "/api/tokens", json, `{"environment": "Prod", "ttl": null}`, 400, `field "ttl" must be a string, not null`},
		{"null for an optional string", "PUT", "/api/policy", json, `{"health_interval": null}`, 400, `field "health_interval" must be a string, not null`},
		{"null for a required boolean", "PUT", "/api/maintenance", json, `{"on": null}`, 400, `field "on" must be true or false, not null`},
		{"null for an object", "POST", "/api/tasks", json, `{"agent": "a", "args": ["x"], "file": null}`, 400, `field "file" must be an object, not null`},
		{"wrong type", "POST", "/api/agents", json, `{"environment": "DMZ", "address": 10933, "thumbprint": "ab"}`, 400, `field "address" must be a string, not a number`},
		{"not an object", "POST", "/api/api-keys", json, `["ci"]`, 400, "request body must be an object, not an array"},
		{"unknown field", "POST", "/api/api-keys", json, `{"name": "ci", "scope": "all"}`, 400, `unknown field "scope"`},
		{"unknown nested field", "POST", "/api/tasks", json, `{"agent": "a", "args": ["x"], "variables": [{"name": "A", "value": "1", "x": 1}]}`, 400, `unknown field "variables[0].x"`},
		{"name pattern", "POST", "/api/tokens", json, `{"environment": "my env"}`, 400, `field "environment": "my env" is not a name of 1-63 letters, digits, '.', '_' or '-'`},
		{"name pattern in a list", "POST", "/api/tasks", json, `{"agent": "a", "args": ["x"], "locks": ["db", "a/b"]}`, 400, `field "locks[1]": "a/b" is not a name of 1-63 letters`},
		{"duration pattern", "POST", "/api/tokens", json, `{"environment": "Prod", "ttl": "forever"}`, 400, `field "ttl": "forever" is not a duration such as 30s, 10m or 24h`},
		{"duration", "POST", "/api/tokens", json, `{"environment": "Prod", "ttl": "1h30m"}`, 0, ""},
		{"size pattern", "PUT", "/api/policy", json, `{"work_min_free": "lots"}`, 400, `field "work_min_free": "lots" is not a size such as 2GiB`},
		{"size", "PUT", "/api/policy", json, `{"work_min_free": "1.5 GiB"}`, 0, ""},
		{"empty body", "POST", "/api/api-keys", json, ``, 400, "request body is empty: send a JSON object"},
		{"empty body without a type", "POST", "/api/api-keys", "", ``, 400, "request body is empty: send a JSON object"},
		{"broken JSON", "POST", "/api/api-keys", json, `{"name": "ci"`, 400, "request body is not valid JSON for this endpoint: it ends before the JSON value does"},
		{"text body", "POST", "/api/api-keys", "text/plain", `{"name": "ci"}`, 415, `this endpoint takes a JSON body: send it with "Content-Type: application/json" (got "text/plain")`},
		{"no content type", "POST", "/api/api-keys", "", `{"name": "ci"}`, 415, `"Content-Type: application/json" (got none)`},
		{"form body", "PUT", "/api/maintenance", "application/x-www-form-urlencoded", `on=true`, 415, `(got "application/x-www-form-urlencoded")`},
		{"upload as gzip", "POST", "/api/calamari", "application/gzip", "x", 0, ""},
		{"upload without a type", "POST", "/api/files", "", "x", 0, ""},
		{"upload as JSON", "POST", "/api/files", json, "x", 415, `this endpoint takes the file's bytes as application/octet-stream (got Content-Type "application/json")`},
		{"upload as a form", "POST", "/api/import?trust_any_source=true", "application/x-www-form-urlencoded", "x", 415, "as application/gzip or application/octet-stream"},
		{"empty integer", "GET", "/api/tasks?limit=", "", "", 400, `query parameter "limit" is empty: give a whole number, or leave it out`},
		{"empty boolean", "POST", "/api/certificate/rotate?force=", "", "", 400, `query parameter "force" is empty: give true or false, or leave it out`},
		{"empty string", "GET", "/api/tasks?agent=", "", "", 0, ""},
		{"integer not a number", "GET", "/api/tasks?limit=ten", "", "", 400, `query parameter "limit" must be a whole number, not "ten"`},
		{"integer above its maximum", "GET", "/api/tasks?limit=5000", "", "", 400, `query parameter "limit" must be at most 1000, got 5000`},
		{"integer below its minimum", "GET", "/api/tasks/x/log?from=0", "", "", 400, `query parameter "from" must be at least 1, got 0`},
		{"boolean not a boolean", "GET", "/api/tasks/x/log?follow=maybe", "", "", 400, `query parameter "follow" must be true or false, not "maybe"`},
		{"missing required parameter", "POST", "/api/agent-packages?os=linux&arch=amd64", "", "x", 400, `query parameter "version" is required`},
		{"parameter not in its enum", "POST", "/api/agent-packages?version=1.0.0&os=plan9&arch=amd64", "", "x", 400, `query parameter "os": "plan9" is not one of linux, windows, darwin`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, reading := range []string{"as 3.0", "as 3.1"} {
				v = validators[reading]
				req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
				if tt.ct != "" {
					req.Header.Set("Content-Type", tt.ct)
				}
				got = result{status: -1}
				mux.ServeHTTP(httptest.NewRecorder(), req)
				if got.status == -1 {
					t.Fatalf("%s %s reached no route", tt.method, tt.path)
				}
				if got.status != tt.status || !strings.Contains(got.msg, tt.msg) {
					t.Errorf("%s: got %d %q, want %d saying %q", reading, got.status, got.msg, tt.status, tt.msg)
				}
			}
		})
	}
}

// TestRequestValidationBodyLimit: a JSON body over the route's limit is
// refused with 413 while the validator reads it, not with a 400 about
// JSON cut short.
func TestRequestValidationBodyLimit(t *testing.T) {
	v := newTestValidator(t, false)
	body := `{"name": "` + strings.Repeat("a", 100) + `"}`
	req := httptest.NewRequest("POST", "/api/api-keys", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Body = http.MaxBytesReader(httptest.NewRecorder(), req.Body, 50)
	status, msg := v.refuse(req, "POST /api/api-keys")
	if status != http.StatusRequestEntityTooLarge || msg != "request body is larger than 50 bytes" {
		t.Fatalf("got %d %q, want 413 saying the body is larger than 50 bytes", status, msg)
	}
}

// untouchable fails the test if it is read.
type untouchable struct{ t *testing.T }

func (u untouchable) Read([]byte) (int, error) {
	u.t.Error("the validator read an upload's body; the handler streams it")
	return 0, io.EOF
}

// TestRequestValidationLeavesUploadsUnread: an upload's bytes, which may
// be gigabytes, go to its handler unread (kin-openapi reads a body whole
// to check security requirements, so the validator's operations have
// none) and its length stays unknown when it was sent chunked.
func TestRequestValidationLeavesUploadsUnread(t *testing.T) {
	v := newTestValidator(t, false)
	for _, route := range []string{"POST /api/calamari", "POST /api/files", "POST /api/import"} {
		_, path, _ := strings.Cut(route, " ")
		req := httptest.NewRequest("POST", path, io.NopCloser(untouchable{t}))
		req.ContentLength = -1
		req.Header.Set("Content-Type", "application/octet-stream")
		if status, msg := v.refuse(req, route); status != 0 {
			t.Errorf("%s: got %d %q, want it valid", route, status, msg)
		}
		if req.ContentLength != -1 {
			t.Errorf("%s: content length got %d, want -1 (unknown)", route, req.ContentLength)
		}
	}
}

// validateOnce validates one request of each kind: a task request (a
// body with nested objects), a policy change and a task list query.
func validateOnce(tb testing.TB, v *requestValidator) {
	for _, c := range []struct{ route, path, body string }{
		{"POST /api/tasks", "/api/tasks", `{"agent": "web-1", "args": ["run-script", "--inline", "echo hi"], "locks": ["db"], "variables": [{"name": "A", "value": "1"}]}`},
		{"PUT /api/policy", "/api/policy", `{"health_interval": "30s", "work_min_free": "2GiB"}`},
		{"GET /api/tasks", "/api/tasks?agent=web-1&limit=10", ""},
	} {
		method, _, _ := strings.Cut(c.route, " ")
		req := httptest.NewRequest(method, c.path, strings.NewReader(c.body))
		if c.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if status, msg := v.refuse(req, c.route); status != 0 {
			tb.Errorf("%s: got %d %q, want it valid", c.route, status, msg)
		}
	}
}

// TestRequestValidationConcurrent: requests are validated at once from
// many goroutines against the one loaded document (run with -race).
func TestRequestValidationConcurrent(t *testing.T) {
	v := newTestValidator(t, false)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				validateOnce(t, v)
			}
		})
	}
	wg.Wait()
}

func BenchmarkRequestValidation(b *testing.B) {
	v := newTestValidator(b, false)
	for b.Loop() {
		validateOnce(b, v)
	}
}
