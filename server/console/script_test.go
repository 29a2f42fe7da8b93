package console

import (
	"net/url"
	"reflect"
	"testing"

	"github.com/tendrildeploy/tendril/api"
)

func TestParseScriptForm(t *testing.T) {
	tests := []struct {
		name     string
		form     url.Values
		wantReq  api.TaskRequest
		wantForm scriptForm
		wantErr  string
	}{
		{
			name: "machines with variables",
			form: url.Values{"target": {"machines"}, "agent": {"web-1", " web-2 ", "web-1", ""}, "script": {"echo hi"},
				"isolation": {"none"}, "locks": {"db, web-cache  x"},
				"var_name": {"REGION", "", " EMPTY "}, "var_value": {"eu", "", ""},
				"secret_name": {"DB_PASSWORD", ""}, "secret_value": {"hunter2", ""}},
			wantReq: api.TaskRequest{Agents: []string{"web-1", "web-2"}, Args: []string{"run-script", "--inline", "echo hi"},
				Isolation: "none", Locks: []string{"db", "web-cache", "x"},
				Variables: []api.Variable{{Name: "REGION", Value: "eu"}, {Name: "EMPTY"}, {Name: "DB_PASSWORD", Value: "hunter2", Sensitive: true}}},
			wantForm: scriptForm{Target: "machines", Agents: []string{"web-1", "web-2"}, Script: "echo hi", Isolation: "none", Locks: "db, web-cache  x",
				Variables: []scriptVariable{{"REGION", "eu"}, {"EMPTY", ""}}, Secrets: []scriptVariable{{Name: "DB_PASSWORD"}}},
		},
		{
			name: "environment with a shell; machines ticked are ignored",
			form: url.Values{"target": {"environment"}, "environment": {" Prod "}, "agent": {"web-1"}, "script": {"echo hi"}, "shell": {"bash"}},
			wantReq: api.TaskRequest{Environment: "Prod", Args: []string{"run-script", "--inline", "echo hi", "--shell", "bash"},
				Isolation: "full"},
			wantForm: scriptForm{Target: "environment", Environment: "Prod", Agents: []string{"web-1"}, Script: "echo hi", Shell: "bash", Isolation: "full"},
		},
		{
			name: "a textarea's CRLF line ends become LF",
			form: url.Values{"agent": {"web-1"}, "script": {"cp a b\r\necho done\r\n\rexit 0"}},
			wantReq: api.TaskRequest{Agents: []string{"web-1"}, Args: []string{"run-script", "--inline", "cp a b\necho done\n\nexit 0"},
				Isolation: "full"},
			wantForm: scriptForm{Target: "machines", Agents: []string{"web-1"}, Script: "cp a b\necho done\n\nexit 0", Isolation: "full"},
		},
		{
			name:     "no machine",
			form:     url.Values{"target": {"machines"}, "script": {"echo hi"}},
			wantForm: scriptForm{Target: "machines", Script: "echo hi", Isolation: "full"},
			wantErr:  "Choose at least one machine, or an environment.",
		},
		{
			name:     "no environment",
			form:     url.Values{"target": {"environment"}, "script": {"echo hi"}},
			wantForm: scriptForm{Target: "environment", Script: "echo hi", Isolation: "full"},
			wantErr:  "Choose an environment.",
		},
		{
			name:     "blank script",
			form:     url.Values{"agent": {"web-1"}, "script": {" \n "}},
			wantForm: scriptForm{Target: "machines", Agents: []string{"web-1"}, Script: " \n ", Isolation: "full"},
			wantErr:  "Enter a script to run.",
		},
		{
			name:     "unknown shell",
			form:     url.Values{"agent": {"web-1"}, "script": {"x"}, "shell": {"fish"}},
			wantForm: scriptForm{Target: "machines", Agents: []string{"web-1"}, Script: "x", Shell: "fish", Isolation: "full"},
			wantErr:  `Unknown shell "fish": choose one of sh, bash, pwsh, powershell, cmd.`,
		},
		{
			name:     "value without a name",
			form:     url.Values{"agent": {"web-1"}, "script": {"x"}, "var_name": {""}, "var_value": {"eu"}},
			wantForm: scriptForm{Target: "machines", Agents: []string{"web-1"}, Script: "x", Isolation: "full"},
			wantErr:  "A variable has a value but no name.",
		},
		{
			name: "sensitive value without a name is not quoted, and not kept",
			form: url.Values{"agent": {"web-1"}, "script": {"x"}, "secret_name": {"", "TOKEN"}, "secret_value": {"hunter2", "abc"}},
			wantForm: scriptForm{Target: "machines", Agents: []string{"web-1"}, Script: "x", Isolation: "full",
				Secrets: []scriptVariable{{Name: "TOKEN"}}},
			wantErr: "A sensitive variable has a value but no name.",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form, req, err := parseScriptForm(tt.form)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if gotErr != tt.wantErr {
				t.Fatalf("got error %q, want %q", gotErr, tt.wantErr)
			}
			if !reflect.DeepEqual(form, tt.wantForm) {
				t.Errorf("got form %+v, want %+v", form, tt.wantForm)
			}
			if tt.wantErr == "" && !reflect.DeepEqual(req, tt.wantReq) {
				t.Errorf("got request %+v, want %+v", req, tt.wantReq)
			}
		})
	}
}
