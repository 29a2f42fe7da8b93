package httpapi

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/tendrildeploy/tendril/api"
)

func loadDocument(t *testing.T) *openapi3.T {
	t.Helper()
	b, err := Document("1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	d, err := openapi3.NewLoader().LoadFromData(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDocumentDeclaresErrors: every operation declares the error answers
// it can give, each with the API's one error body.
func TestDocumentDeclaresErrors(t *testing.T) {
	d := loadDocument(t)
	if r := d.Components.Responses["Error405"]; r == nil || r.Value.Content.Get("application/json") == nil {
		t.Error("no Error405 response with a JSON body among the components")
	}
	for _, rt := range Routes() {
		op := d.Paths.Value(rt.Path).GetOperation(rt.Method)
		want := []int{500}
		if !rt.Public {
			want = append(want, 401, 403, 503)
		}
		if rt.Request != nil || rt.RawBody != nil {
			want = append(want, 400, 413, 415)
		}
		if len(rt.Query) > 0 {
			want = append(want, 400)
		}
		if rt.RawBody != nil {
			want = append(want, 507)
		}
		for _, st := range want {
			r := op.Responses.Status(st)
			if r == nil {
				t.Errorf("%s %s: no %d response", rt.Method, rt.Path, st)
				continue
			}
			mt := r.Value.Content.Get("application/json")
			if mt == nil || mt.Schema == nil || mt.Schema.Ref != "#/components/schemas/APIError" {
				t.Errorf("%s %s: the %d response's body is not the APIError schema", rt.Method, rt.Path, st)
			}
		}
	}
}

// TestDocumentDeclaresRules: the fields and parameters the coordinator
// holds to a rule carry it in the document, the same rule the server
// checks (api.NamePattern for names).
func TestDocumentDeclaresRules(t *testing.T) {
	d := loadDocument(t)
	schema := func(name string) *openapi3.Schema {
		s := d.Components.Schemas[name]
		if s == nil {
			t.Fatalf("no schema %s", name)
		}
		return s.Value
	}
	property := func(schemaName, field string) *openapi3.Schema {
		p := schema(schemaName).Properties[field]
		if p == nil {
			t.Fatalf("%s has no field %s", schemaName, field)
		}
		if p.Value.Type.Is(openapi3.TypeArray) {
			return p.Value.Items.Value
		}
		return p.Value
	}
	tests := []struct {
		schema, field, pattern string
	}{
		{"ListeningAgentRequest", "name", api.NamePattern},
		{"ListeningAgentRequest", "environment", api.NamePattern},
		{"TokenRequest", "environment", api.NamePattern},
		{"TokenRequest", "ttl", durationPattern},
		{"UserRequest", "name", api.NamePattern},
		{"UserRequest", "environments", api.NamePattern},
		{"APIKeyRequest", "name", api.NamePattern},
		{"APIKeyRequest", "environments", api.NamePattern},
		{"TaskRequest", "locks", api.NamePattern},
		{"PolicyRequest", "health_interval", durationPattern},
		{"PolicyRequest", "work_min_free", sizePattern},
	}
	for _, tt := range tests {
		if got := property(tt.schema, tt.field); got.Pattern != tt.pattern || got.Description == "" {
			t.Errorf("%s.%s: got pattern %q (%q), want %q with the rule in words", tt.schema, tt.field, got.Pattern, got.Description, tt.pattern)
		}
	}
	// What each create request must hold is required; what has a default
	// or an alternative is not (an API key's admin gives way to its role).
	required := map[string][]string{
		"ListeningAgentRequest": {"address", "environment", "thumbprint"},
		"AgentAddressRequest":   {"address"},
		"TokenRequest":          {"environment"},
		"UserRequest":           {"name", "password"},
		"APIKeyRequest":         {"name"},
		"TaskRequest":           {"args"},
		"MaintenanceRequest":    {"on"},
	}
	for name, want := range required {
		s := schema(name)
		if got := slices.Sorted(slices.Values(s.Required)); !slices.Equal(got, want) {
			t.Errorf("%s: required %q, want %q", name, got, want)
		}
		if s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has {
			t.Errorf("%s: unknown fields are allowed, want them refused", name)
		}
		for field, p := range s.Properties {
			if p.Value.Type.Includes(openapi3.TypeNull) || len(p.Value.AnyOf) > 0 {
				t.Errorf("%s.%s is nullable, want null refused in requests", name, field)
			}
		}
	}
	limit := d.Paths.Value("/api/tasks").Get.Parameters.GetByInAndName("query", "limit").Schema.Value
	if !limit.Type.Is(openapi3.TypeInteger) || limit.Min == nil || *limit.Min != 1 || limit.Max == nil || *limit.Max != maxTaskList {
		t.Errorf("GET /api/tasks limit: got %v from %v to %v, want an integer from 1 to %d", limit.Type, limit.Min, limit.Max, maxTaskList)
	}
}

// TestRulePatternsMatchTheParsers: the forms a person writes pass both a
// rule's pattern and the server's parser, and what is not of the form is
// refused by the pattern. (What has the form but not the range, such as
// 0.5B or a 10-year duration, the handler refuses with its own 400.)
func TestRulePatternsMatchTheParsers(t *testing.T) {
	tests := []struct {
		rule    string
		parse   func(string) error
		valid   []string
		invalid []string
	}{
		{"duration", func(s string) error { _, err := time.ParseDuration(s); return err },
			[]string{"30s", "10m", "24h", "1h30m", "1.5h", "500ms", "250us", "3µs", "100ns", "2h45m30.5s", "1h2m3s4ms5us6ns", "0s", "00001m"},
			[]string{"", "forever", "10", "-1h", "+1h", "1d", "10 m", "m", "1.h", ".5s", "0"}},
		{"size", func(s string) error { _, err := api.ParseSize(s); return err },
			[]string{"0", "1048576", "2GiB", "500MB", "1.5 GiB", "2gib", "10K", "3T", "7B", " 2GiB "},
			[]string{"", "lots", "-2GiB", "2PiB", "GiB", "1e3", "2 G iB"}},
		{"name", func(s string) error { return api.ValidateName("test", s) },
			[]string{"web-1", "Prod", "a", "db.main_2", strings.Repeat("a", 63)},
			[]string{"", "-web", ".x", "a b", "a/b", "ü", strings.Repeat("a", 64)}},
	}
	for _, tt := range tests {
		re := regexp.MustCompile(fieldRules[tt.rule].pattern)
		for _, s := range tt.valid {
			if !re.MatchString(s) {
				t.Errorf("%s pattern refuses %q, which a person writes", tt.rule, s)
			}
			if err := tt.parse(s); err != nil {
				t.Errorf("%s %q: the server's parser refuses it: %v", tt.rule, s, err)
			}
		}
		for _, s := range tt.invalid {
			if re.MatchString(s) {
				t.Errorf("%s pattern accepts %q, want it refused", tt.rule, s)
			}
		}
	}
}
