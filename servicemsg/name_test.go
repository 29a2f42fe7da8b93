package servicemsg

import (
	"regexp"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"", false},
		{"_", true},
		{"a", true},
		{"Z9_", true},
		{"1a", false},
		{"a1", true},
		{"a-b", false},
		{"a b", false},
		{"é", false},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
	} {
		if err := ValidateName(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q): got %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// namePattern is the rule validName checks by hand, as a regular
// expression, to hold it to.
var namePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"", "_", "a1", "1a", strings.Repeat("x", 128), strings.Repeat("x", 129), "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validName(s), namePattern.MatchString(s); got != want {
			t.Errorf("validName(%q): got %v, want %v", s, got, want)
		}
	})
}
