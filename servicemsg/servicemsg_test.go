package servicemsg

import (
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, v := range []string{"", "1.2.3", "a b]c\nd", strings.Repeat("x", MaxOutputValue)} {
		line, err := SetOutput("VERSION", v)
		if err != nil {
			t.Fatal(err)
		}
		m, ok, err := Parse(line)
		if err != nil || !ok || m != (Message{Kind: KindSetOutput, Name: "VERSION", Value: v}) {
			t.Errorf("Parse(SetOutput(%.20q)): got %+v, %v, %v", v, m, ok, err)
		}
	}
	line, err := Artifact("out/report.html")
	if err != nil {
		t.Fatal(err)
	}
	if m, ok, err := Parse(line + "\r"); err != nil || !ok || m != (Message{Kind: KindArtifact, Value: "out/report.html"}) {
		t.Errorf("Parse(Artifact): got %+v, %v, %v", m, ok, err)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		line    string
		ok      bool
		wantErr string
	}{
		{"hello", false, ""},
		{" ##tendril[set-output A YQ==]", false, ""},
		{"##tendril[set-output A YQ==", true, "does not end"},
		{"##tendril[set-output my name YQ==]", true, "no spaces"},
		{"##tendril[set-output 1A YQ==]", true, "not starting with a digit"},
		{"##tendril[set-output A not-base64!]", true, "not base64"},
		{"##tendril[artifact]", true, "BASE64-PATH"},
		{"##tendril[artifact ]", true, "empty"},
		{"##tendril[launch-missiles x]", true, "unknown kind"},
		{"##tendril[artifact " + strings.Repeat("QUFB", MaxPath) + "]", true, "over the limit"},
	}
	for _, tt := range tests {
		_, ok, err := Parse(tt.line)
		if ok != tt.ok {
			t.Errorf("Parse(%.40q): got ok %v, want %v", tt.line, ok, tt.ok)
		}
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (!errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Parse(%.40q): got error %v, want one saying %q", tt.line, err, tt.wantErr)
		}
	}
}

func TestSetOutputRefuses(t *testing.T) {
	if _, err := SetOutput("my name", "v"); err == nil {
		t.Error("a name with a space: got nil error")
	}
	if _, err := SetOutput("A", strings.Repeat("x", MaxOutputValue+1)); err == nil {
		t.Error("a value over the limit: got nil error")
	}
	if _, err := Artifact(""); err == nil {
		t.Error("an empty path: got nil error")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("##tendril[set-output A YQ==]")
	f.Add("##tendril[artifact YQ==]")
	f.Add("##tendril[")
	f.Fuzz(func(t *testing.T, line string) {
		m, ok, err := Parse(line)
		if !ok || err != nil {
			return
		}
		// What parses prints back to a line that parses the same.
		var again string
		switch m.Kind {
		case KindSetOutput:
			again, err = SetOutput(m.Name, m.Value)
		case KindArtifact:
			again, err = Artifact(m.Value)
		}
		if err != nil {
			t.Fatalf("%+v parsed but does not print: %v", m, err)
		}
		if m2, _, err := Parse(again); err != nil || m2 != m {
			t.Fatalf("round trip: got %+v, %v; want %+v", m2, err, m)
		}
	})
}
