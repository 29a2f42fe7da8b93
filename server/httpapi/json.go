package httpapi

import (
	"bytes"
	"encoding"
	"encoding/json"
	"io"
	"reflect"
)

// writeJSONBody writes v as the API's answers are written: indented by two
// spaces, with '&', '<' and '>' as they are (join strings carry '&';
// escaped as \u0026 they would be awkward to copy from the raw API), and
// a newline at the end.
//
// A list of structs, which grows with the fleet (agents, tasks), is
// written element by element, to the same bytes: encoding/json builds a
// whole value in a buffer, then its indented copy in another, and keeps
// the first in a pool for whoever encodes next, so that a list of 10,000
// agents was held in memory twice while it was written and once after,
// until the garbage collector emptied the pool. Memory the heap grew to
// for it is memory the coordinator keeps.
func writeJSONBody(w io.Writer, v any) error {
	rv := reflect.ValueOf(v)
	if !listOfStructs(rv) {
		return newEncoder(w, "").Encode(v)
	}
	var buf bytes.Buffer
	// An element sits one level into the list: its lines after the
	// first are prefixed with one indent.
	enc := newEncoder(&buf, "  ")
	if _, err := io.WriteString(w, "[\n"); err != nil {
		return err
	}
	for i := range rv.Len() {
		buf.Reset()
		if i > 0 {
			buf.WriteString(",\n")
		}
		buf.WriteString("  ")
		// The element's address, as encoding/json takes a slice's
		// elements: methods on the pointer apply.
		if err := enc.Encode(rv.Index(i).Addr().Interface()); err != nil {
			return err
		}
		// Without Encode's newline: the separator or the end follows.
		if _, err := w.Write(buf.Bytes()[:buf.Len()-1]); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "\n]\n")
	return err
}

func newEncoder(w io.Writer, prefix string) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetIndent(prefix, "  ")
	enc.SetEscapeHTML(false)
	return enc
}

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// listOfStructs reports whether v is a non-empty slice of structs or of
// pointers to structs, encoded by encoding/json as a JSON array of its
// elements (no method of its own says otherwise).
func listOfStructs(v reflect.Value) bool {
	if v.Kind() != reflect.Slice || v.Len() == 0 {
		return false
	}
	t := v.Type()
	for _, m := range []reflect.Type{jsonMarshaler, textMarshaler} {
		if t.Implements(m) || reflect.PointerTo(t).Implements(m) {
			return false
		}
	}
	e := t.Elem()
	if e.Kind() == reflect.Pointer {
		e = e.Elem()
	}
	return e.Kind() == reflect.Struct
}
