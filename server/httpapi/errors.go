package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tendrildeploy/tendril/server/kind"
)

// noSuchTask turns the store's bare "not found" for the task named in a
// request into a message that names it and says where to look.
func noSuchTask(id string, err error) error {
	var ke *kind.Error
	if errors.Is(err, kind.ErrNotFound) && !errors.As(err, &ke) {
		return kind.Errorf(kind.ErrNotFound, "no task %q (see GET /api/tasks or tendril-server task list)", id)
	}
	return err
}

// bodyErrorMessage explains why a JSON request body could not be read, in
// terms of the request rather than of Go's decoder: which field, what it
// should have been, and where to look up the rest.
func bodyErrorMessage(err error) string {
	const prefix = "request body is not valid JSON for this endpoint: "
	const fields = " (this endpoint's fields are in GET /api/openapi.json)"
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "request body is empty: send a JSON object" + fields
	case errors.Is(err, io.ErrUnexpectedEOF):
		return prefix + "it ends before the JSON value does"
	case errors.As(err, &syn):
		return fmt.Sprintf("%s%s at byte %d", prefix, strings.TrimPrefix(syn.Error(), "json: "), syn.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Sprintf("%swant a JSON object, got %s%s", prefix, article(typ.Value), fields)
		}
		return fmt.Sprintf("%sfield %q must be %s, not %s", prefix, typ.Field, jsonKind(typ.Type.Kind().String()), article(typ.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return prefix + strings.TrimPrefix(err.Error(), "json: ") + fields
	}
	return prefix + err.Error()
}

// jsonKind names a Go kind the way a JSON author thinks of it.
func jsonKind(kind string) string {
	switch {
	case kind == "string":
		return "a string"
	case kind == "bool":
		return "true or false"
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"):
		return "a whole number"
	case strings.HasPrefix(kind, "float"):
		return "a number"
	case kind == "slice" || kind == "array":
		return "an array"
	case kind == "struct" || kind == "map":
		return "an object"
	}
	return "a " + kind
}

// article puts "a" or "an" before a JSON value kind from the decoder
// ("number", "string", "array", "object", "bool").
func article(v string) string {
	if v == "" {
		return "something else"
	}
	if strings.ContainsRune("aeiou", rune(v[0])) {
		return "an " + v
	}
	return "a " + v
}
