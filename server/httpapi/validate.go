package httpapi

// Requests are validated against the OpenAPI document the API serves,
// by kin-openapi, before any handler reads them: the document is the one
// statement of what each route takes, so it and the server cannot drift
// apart, and a client generated from it knows every rule a request is
// held to.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
)

// fieldsHint points at where a body's fields are listed.
const fieldsHint = " (this endpoint's fields are in GET /api/openapi.json)"

// requestValidator holds the document's operations by route pattern
// ("POST /api/tasks"), loaded once.
type requestValidator struct {
	ops map[string]*routers.Route
}

// newRequestValidator loads the encoded document and finds the
// operation of every route in Routes. The mux has matched the request to
// its route already, so a route's pattern, which is its path in the
// document, names the operation: no second matcher can disagree with it.
//
// For a document of OpenAPI 3.1, kin-openapi compiles a JSON Schema
// 2020-12 validator anew for every request body and parameter: 1.5 ms
// for a task request, sixty times what its own validator, OpenAPI 3.0's,
// takes. The request schemas use only keywords that mean the same in
// both (see schemaGen.request), so requests are validated against the
// document's very operations, read as 3.0; TestRequestValidation checks
// that both readings answer alike. With as31, they are read as 3.1.
func newRequestValidator(doc []byte, as31 bool) (*requestValidator, error) {
	loader := openapi3.NewLoader()
	d, err := loader.LoadFromData(doc)
	if err != nil {
		return nil, fmt.Errorf("load OpenAPI document: %w", err)
	}
	if err := d.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("OpenAPI document is not valid: %w", err)
	}
	spec := d
	if !as31 {
		read30 := *d
		read30.OpenAPI = "3.0.3"
		spec = &read30
	}
	v := &requestValidator{ops: map[string]*routers.Route{}}
	for _, rt := range Routes() {
		item := d.Paths.Value(rt.Path)
		var op *openapi3.Operation
		if item != nil {
			op = item.GetOperation(rt.Method)
		}
		if op == nil {
			return nil, fmt.Errorf("OpenAPI document has no operation %s %s", rt.Method, rt.Path)
		}
		// Without its security requirements: authorize has checked the
		// key, and kin-openapi reads the whole body into memory to check
		// them (for an AuthenticationFunc that might need it), an upload
		// of gigabytes included.
		unsecured := *op
		unsecured.Security = &openapi3.SecurityRequirements{}
		v.ops[rt.Method+" "+rt.Path] = &routers.Route{Spec: spec, Path: rt.Path, PathItem: item, Method: rt.Method, Operation: &unsecured}
	}
	return v, nil
}

var (
	// jsonOptions validate everything. Authentication is not theirs to
	// check: authorize has done it by then.
	jsonOptions = &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, SkipSettingDefaults: true}
	// rawOptions leave an upload's bytes to the handler, which streams
	// them: the validator would read them whole into memory.
	rawOptions = &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, SkipSettingDefaults: true, ExcludeRequestBody: true}
)

// refuse validates r against the operation of route: it returns 0 if r
// may go on to its handler, else the status and the message to refuse it
// with.
func (v *requestValidator) refuse(r *http.Request, route string) (int, string) {
	op := v.ops[route]
	if op == nil {
		// Only a bug gets here: authorize lets through only the routes of
		// Routes, and newRequestValidator found each in the document.
		return http.StatusInternalServerError, "internal error; see the coordinator's log"
	}
	params := map[string]string{}
	for _, p := range op.Operation.Parameters {
		if p.Value.In == openapi3.ParameterInPath {
			params[p.Value.Name] = r.PathValue(p.Value.Name)
		}
	}
	opts := jsonOptions
	if body := op.Operation.RequestBody; body != nil {
		ct := r.Header.Get("Content-Type")
		upload := body.Value.Content.Get("application/json") == nil
		if upload {
			opts = rawOptions
			if ct == "" {
				ct = "application/octet-stream" // RFC 9110, section 8.3
			}
		}
		// An empty JSON body is refused as empty, whatever its type.
		if (upload || r.ContentLength != 0) && body.Value.Content.Get(ct) == nil {
			return http.StatusUnsupportedMediaType, contentTypeMessage(r.Header.Get("Content-Type"), body.Value)
		}
	}
	err := openapi3filter.ValidateRequest(r.Context(), &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: op, Options: opts})
	if err == nil {
		return 0, ""
	}
	return refusal(err)
}

// refusal is the status and the message for a request the validator
// refused: the parameter or field, and the rule it breaks, in words a
// person can act on rather than the validator's own.
func refusal(err error) (int, string) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)
	}
	var re *openapi3filter.RequestError
	if !errors.As(err, &re) {
		return http.StatusBadRequest, "request is not valid: " + err.Error()
	}
	if p := re.Parameter; p != nil {
		return http.StatusBadRequest, paramMessage(p, re)
	}
	if errors.Is(re.Err, openapi3filter.ErrInvalidRequired) {
		return http.StatusBadRequest, "request body is empty: send a JSON object" + fieldsHint
	}
	var se *openapi3.SchemaError
	if errors.As(re.Err, &se) {
		return http.StatusBadRequest, schemaMessage("field", leafError(se))
	}
	var pe *openapi3filter.ParseError
	if errors.As(re.Err, &pe) && pe.Cause != nil {
		return http.StatusBadRequest, bodyErrorMessage(pe.Cause)
	}
	return http.StatusBadRequest, "request is not valid: " + re.Error()
}

// contentTypeMessage refuses a body sent as got (its Content-Type) to an
// operation that takes body.
func contentTypeMessage(got string, body *openapi3.RequestBody) string {
	if got == "" {
		got = "none"
	} else {
		got = strconv.Quote(got)
	}
	var types []string
	for media := range body.Content {
		types = append(types, media)
	}
	sort.Strings(types)
	if slices.Equal(types, []string{"application/json"}) {
		return fmt.Sprintf("this endpoint takes a JSON body: send it with \"Content-Type: application/json\" (got %s)", got)
	}
	return fmt.Sprintf("this endpoint takes the file's bytes as %s (got Content-Type %s)", strings.Join(types, " or "), got)
}

// paramMessage explains why a query parameter was refused.
func paramMessage(p *openapi3.Parameter, re *openapi3filter.RequestError) string {
	what := fmt.Sprintf("%s parameter %q", p.In, p.Name)
	var want string
	if p.Schema != nil && p.Schema.Value != nil {
		want = typeWords(p.Schema.Value)
	}
	var pe *openapi3filter.ParseError
	var se *openapi3.SchemaError
	switch {
	case errors.Is(re.Err, openapi3filter.ErrInvalidRequired):
		return fmt.Sprintf("%s is required: give %s", what, want)
	case errors.Is(re.Err, openapi3filter.ErrInvalidEmptyValue):
		return fmt.Sprintf("%s is empty: give %s, or leave it out", what, want)
	case errors.As(re.Err, &se):
		return schemaMessage(what, leafError(se))
	case errors.As(re.Err, &pe):
		return fmt.Sprintf("%s must be %s, not %q", what, want, fmt.Sprint(pe.Value))
	}
	return fmt.Sprintf("%s is not valid: %v", what, re.Err)
}

// leafError is the innermost schema error under se: the one about the
// value that broke a rule, rather than the objects around it.
func leafError(se *openapi3.SchemaError) *openapi3.SchemaError {
	for se.Origin != nil {
		var inner *openapi3.SchemaError
		var me openapi3.MultiError
		switch {
		case errors.As(se.Origin, &me) && len(me) > 0 && errors.As(me[0], &inner):
		case errors.As(se.Origin, &inner):
		default:
			return se
		}
		if inner == se {
			return se
		}
		se = inner
	}
	return se
}

// schemaMessage explains a schema error. what names the value: "field"
// for a body, whose field the error's path names, or a parameter.
func schemaMessage(what string, se *openapi3.SchemaError) string {
	path := se.JSONPointer()
	if what == "field" {
		if len(path) == 0 {
			what = "request body"
		} else {
			what = fmt.Sprintf("field %q", fieldPath(path))
		}
	}
	s := se.Schema
	if s == nil {
		return fmt.Sprintf("%s is not valid: %s", what, se.Reason)
	}
	switch se.SchemaField {
	case "required":
		obj, _ := se.Value.(map[string]any)
		if n := len(path); n > 0 && slices.Contains(s.Required, path[n-1]) {
			if _, ok := obj[path[n-1]]; !ok {
				// kin-openapi's own validator puts the missing field in the
				// path, the JSON Schema 2020-12 one does not.
				path = path[:n-1]
			}
		}
		for _, name := range s.Required {
			if _, ok := obj[name]; !ok {
				return fmt.Sprintf("field %q is required%s", fieldPath(append(slices.Clip(path), name)), fieldsHint)
			}
		}
	case "additionalProperties", "unevaluatedProperties", "properties":
		obj, _ := se.Value.(map[string]any)
		var unknown []string
		for name := range obj {
			if _, ok := s.Properties[name]; !ok {
				unknown = append(unknown, fieldPath(append(path, name)))
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return fmt.Sprintf("unknown field %q%s", unknown[0], fieldsHint)
		}
	case "type", "nullable":
		return fmt.Sprintf("%s must be %s, not %s", what, typeWords(s), valueKind(se.Value))
	case "pattern":
		if s.Description != "" {
			return fmt.Sprintf("%s: %s is not %s", what, quoteValue(se.Value), s.Description)
		}
		return fmt.Sprintf("%s: %s does not match the pattern %s", what, quoteValue(se.Value), s.Pattern)
	case "enum":
		var vals []string
		for _, e := range s.Enum {
			vals = append(vals, fmt.Sprint(e))
		}
		return fmt.Sprintf("%s: %s is not one of %s", what, quoteValue(se.Value), strings.Join(vals, ", "))
	case "minimum":
		if s.Min != nil {
			return fmt.Sprintf("%s must be at least %s, got %s", what, number(*s.Min), quoteValue(se.Value))
		}
	case "maximum":
		if s.Max != nil {
			return fmt.Sprintf("%s must be at most %s, got %s", what, number(*s.Max), quoteValue(se.Value))
		}
	}
	return fmt.Sprintf("%s is not valid: %s", what, se.Reason)
}

// fieldPath writes a JSON pointer's tokens as a person names the field:
// variables[0].value.
func fieldPath(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		if _, err := strconv.Atoi(t); err == nil && b.Len() > 0 {
			fmt.Fprintf(&b, "[%s]", t)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(t)
	}
	return b.String()
}

// typeWords says what a schema's type wants: "a string", "true or
// false".
func typeWords(s *openapi3.Schema) string {
	var words []string
	for _, t := range s.Type.Slice() {
		switch t {
		case openapi3.TypeString:
			words = append(words, "a string")
		case openapi3.TypeBoolean:
			words = append(words, "true or false")
		case openapi3.TypeInteger:
			words = append(words, "a whole number")
		case openapi3.TypeNumber:
			words = append(words, "a number")
		case openapi3.TypeArray:
			words = append(words, "an array")
		case openapi3.TypeObject:
			words = append(words, "an object")
		case openapi3.TypeNull:
			words = append(words, "null")
		}
	}
	if len(words) == 0 {
		return "a value"
	}
	return strings.Join(words, " or ")
}

// valueKind names the kind of a decoded JSON value: "a number", "null".
func valueKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64, int64, int:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// quoteValue writes a scalar value as JSON would.
func quoteValue(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

func number(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
