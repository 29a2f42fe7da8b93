package httpapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
)

func TestBodyErrorMessages(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"empty", ``, "request body is empty: send a JSON object"},
		{"cut short", `{"environment": "Pro`, "ends before the JSON value does"},
		{"garbage", `{{{`, "invalid character '{' looking for beginning of object key string at byte 2"},
		{"wrong type", `{"environment": 5}`, `field "environment" must be a string, not a number`},
		{"wrong type in list", `{"environment": "P", "servers": [1]}`, `field "servers" must be a string, not a number`},
		{"not an object", `[1, 2]`, "want a JSON object, got an array"},
		{"unknown field", `{"colour": "red"}`, `unknown field "colour" (this endpoint's fields are in GET /api/openapi.json)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dec := json.NewDecoder(strings.NewReader(tt.body))
			dec.DisallowUnknownFields()
			var req api.TokenRequest
			err := dec.Decode(&req)
			if err == nil {
				t.Fatal("got no decode error, want one")
			}
			if got := bodyErrorMessage(err); !strings.Contains(got, tt.want) {
				t.Fatalf("got %q, want it to contain %q", got, tt.want)
			}
		})
	}
}
