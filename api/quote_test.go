package api

import "testing"

func TestQuoteArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"a space", []string{"run-script", "--inline", "echo hello"}, "run-script --inline 'echo hello'"},
		{"nothing to quote", []string{"--path=/opt/app", "a,b", "x@y:1"}, "--path=/opt/app a,b x@y:1"},
		{"a quote and an empty one", []string{"it's", ""}, `'it'\''s' ''`},
		{"what a shell expands", []string{"$HOME", "a;b", "*"}, `'$HOME' 'a;b' '*'`},
		{"a double quote and a newline", []string{`say "hi"`, "a\nb"}, `'say "hi"' 'a` + "\n" + `b'`},
		{"a join string", []string{"tendril://h:1/?thumbprint=ab&token=cd"}, `'tendril://h:1/?thumbprint=ab&token=cd'`},
		{"none", nil, ""},
	} {
		if got := QuoteArgs(tc.args); got != tc.want {
			t.Errorf("%s: QuoteArgs(%q): got %q, want %q", tc.name, tc.args, got, tc.want)
		}
	}
}
