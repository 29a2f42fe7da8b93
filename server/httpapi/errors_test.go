package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/kind"
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

// TestFailFullAndUnreachable: a full data folder and an unreachable
// database are answered as what they are, whether a handler passes them
// to Fail or to InternalError, and whatever wraps them.
func TestFailFullAndUnreachable(t *testing.T) {
	// Of the kind as the store marks SQLite's SQLITE_FULL (ENOSPC is
	// kind.IsNoSpace's, tested there).
	write := fmt.Errorf("%w: database or disk is full", kind.ErrNoSpace)
	tests := []struct {
		name       string
		err        error
		status     int
		retryAfter string
		msg        string
	}{
		{"full disk", fmt.Errorf("receive file: %w", write), 507, "",
			"no space left in the data folder; free space in the data folder, then send it again"},
		{"full, with sizes", fmt.Errorf("take snapshot: %w", &kind.NoSpaceError{Free: 0, Needed: 3 << 20, Err: write}), 507, "",
			"no space left in the data folder (0.0 MiB free, 3.0 MiB needed); free space in the data folder, then send it again"},
		{"database unreachable", fmt.Errorf("list agents: %w", fmt.Errorf("dial: %w", kind.ErrUnavailable)), 503, "5",
			"the database is unreachable, and this request needs it: try again in 5 s (the coordinator's log says why)"},
		{"anything else", errors.New("boom"), 500, "", "internal error; see the coordinator's log"},
	}
	for _, tt := range tests {
		for name, answer := range map[string]func(http.ResponseWriter, *zap.Logger, error){"Fail": Fail, "InternalError": InternalError} {
			t.Run(tt.name+"/"+name, func(t *testing.T) {
				w := httptest.NewRecorder()
				answer(w, zap.NewNop(), tt.err)
				var e api.APIError
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
					t.Fatal(err)
				}
				if w.Code != tt.status || w.Header().Get("Retry-After") != tt.retryAfter || e.Error != tt.msg {
					t.Fatalf("got %d, Retry-After %q, %q; want %d, %q, %q", w.Code, w.Header().Get("Retry-After"), e.Error, tt.status, tt.retryAfter, tt.msg)
				}
			})
		}
	}
}
