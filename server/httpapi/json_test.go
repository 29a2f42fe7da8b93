package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
)

// upper is a type whose pointer marshals itself, as a slice's addressable
// elements are marshaled.
type upper struct{ S string }

func (u *upper) MarshalJSON() ([]byte, error) { return json.Marshal(strings.ToUpper(u.S)) }

// names marshals itself as one string, not as the list it is.
type names []struct{ N string }

func (n names) MarshalJSON() ([]byte, error) { return json.Marshal(len(n)) }

// TestWriteJSONBodyBytes checks that lists written element by element are
// the bytes encoding/json writes for the whole value, indented, with
// HTML characters as they are, and that other values are written as
// before.
func TestWriteJSONBodyBytes(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	type nested struct {
		A    int               `json:"a"`
		B    []string          `json:"b,omitempty"`
		M    map[string]int    `json:"m"`
		E    []int             `json:"e"`
		Sub  *nested           `json:"sub,omitempty"`
		Raw  json.RawMessage   `json:"raw,omitempty"`
		Opts map[string]string `json:"opts,omitempty"`
	}
	one := &nested{A: 1, B: []string{"x&y", "<z>"}, M: map[string]int{}, E: []int{}, Sub: &nested{A: 2}, Raw: json.RawMessage(`{"k": [1, 2]}`)}
	tests := []struct {
		name string
		v    any
	}{
		{"agents", []api.AgentView{
			{Name: "a1", Environment: "prod", Connected: true, Health: "healthy", RegisteredAt: at, Features: []string{"x", "y"}},
			{Name: "a&2", Environment: "<test>"},
		}},
		{"one agent", []api.AgentView{{Name: "only"}}},
		{"empty list", []api.AgentView{}},
		{"nil list", []api.AgentView(nil)},
		{"pointers with a nil", []*nested{one, nil, {A: 3}}},
		{"nested, empty and nil fields", []nested{{}, *one}},
		{"pointer methods of elements", []upper{{"a"}, {"b&c"}}},
		{"a list marshaling itself", names{{"a"}, {"b"}}},
		{"strings", []string{"a", "b&c"}},
		{"bytes", []byte("hello")},
		{"a struct", api.APIError{Error: "no <agent> & no task"}},
		{"a map", map[string]any{"b": []any{1, "2"}, "a": nil}},
		{"nil", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want bytes.Buffer
			enc := json.NewEncoder(&want)
			enc.SetIndent("", "  ")
			enc.SetEscapeHTML(false)
			if err := enc.Encode(tt.v); err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := writeJSONBody(&got, tt.v); err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Fatalf("got\n%s\nwant\n%s", got.String(), want.String())
			}
		})
	}
}

// TestWriteJSONBodyMemory writes a list of 10,000 agents and checks that
// what it allocates is a small part of what it writes: encoding/json
// alone allocated the whole answer twice over (the value, its indented
// copy).
func TestWriteJSONBodyMemory(t *testing.T) {
	if raceDetector {
		t.Skip("under -race, sync.Pool drops encoding/json's buffers at random and allocations are not counted alike")
	}
	agents := make([]api.AgentView, 10000)
	for i := range agents {
		agents[i] = api.AgentView{Name: fmt.Sprintf("agent-%05d", i), Environment: "production", Connected: true,
			Health: "healthy", Version: "1.2.3", OS: "linux", Arch: "amd64", Features: []string{"isolation", "variables"}}
	}
	var n byteCounter
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := writeJSONBody(&n, agents); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("wrote %d bytes, allocated %d", n, allocated)
	if allocated > uint64(n)/10 {
		t.Fatalf("got %d bytes allocated for %d written, want at most a tenth", allocated, n)
	}
}

// byteCounter counts the bytes written to it.
type byteCounter int

func (c *byteCounter) Write(p []byte) (int, error) {
	*c += byteCounter(len(p))
	return len(p), nil
}
