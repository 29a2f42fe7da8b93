package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/servicemsg"
)

func TestServiceMessages(t *testing.T) {
	abs, err := filepath.Abs("out/report.html")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args     []string
		wantCode int
		want     servicemsg.Message
	}{
		{[]string{"set-output", "VERSION", "1.2.3 beta"}, 0, servicemsg.Message{Kind: servicemsg.KindSetOutput, Name: "VERSION", Value: "1.2.3 beta"}},
		{[]string{"artifact", "out/report.html"}, 0, servicemsg.Message{Kind: servicemsg.KindArtifact, Value: abs}},
		{[]string{"set-output", "my name", "x"}, exitUsage, servicemsg.Message{}},
		{[]string{"set-output", "ONLY_NAME"}, exitUsage, servicemsg.Message{}},
		{[]string{"artifact"}, exitUsage, servicemsg.Message{}},
	}
	for _, tt := range tests {
		code, out, errOut := calamari(t, "", tt.args...)
		if code != tt.wantCode {
			t.Errorf("%q: got exit %d (%s), want %d", tt.args, code, errOut, tt.wantCode)
			continue
		}
		if code != 0 {
			if !strings.HasPrefix(errOut, "calamari: ") || out != "" {
				t.Errorf("%q: got stdout %q stderr %q, want only a reason on stderr", tt.args, out, errOut)
			}
			continue
		}
		m, ok, err := servicemsg.Parse(strings.TrimSuffix(out, "\n"))
		if err != nil || !ok || m != tt.want {
			t.Errorf("%q: printed %q, parsed %+v %v %v; want %+v", tt.args, out, m, ok, err, tt.want)
		}
	}
}
