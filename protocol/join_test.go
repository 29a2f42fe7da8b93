package protocol

import (
	"errors"
	"strings"
	"testing"
)

const testThumb = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestJoinRoundTrip(t *testing.T) {
	want := Join{Servers: []string{"coord.example:10943", "[::1]:10943"}, Thumbprint: testThumb, Token: "tdt_abc+/="}
	got, err := ParseJoin(want.String())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Servers, " ") != strings.Join(want.Servers, " ") || got.Thumbprint != want.Thumbprint || got.Token != want.Token {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestParseJoinBadInput(t *testing.T) {
	tests := []string{
		"",
		"http://h:1/?thumbprint=" + testThumb + "&token=t",
		"tendril://h:1?thumbprint=" + testThumb + "&token=t",
		"tendril://h/?thumbprint=" + testThumb + "&token=t",
		"tendril://h:99999/?thumbprint=" + testThumb + "&token=t",
		"tendril://:1/?thumbprint=" + testThumb + "&token=t",
		"tendril://h:1/?thumbprint=abc&token=t",
		"tendril://h:1/?thumbprint=" + testThumb,
		"tendril://h:1,/?thumbprint=" + testThumb + "&token=t",
		"tendril://h:1/?%zz",
	}
	for _, in := range tests {
		if _, err := ParseJoin(in); !errors.Is(err, ErrBadJoin) {
			t.Errorf("ParseJoin(%q): got %v, want ErrBadJoin", in, err)
		}
	}
}

func FuzzParseJoin(f *testing.F) {
	f.Add(Join{Servers: []string{"h:1"}, Thumbprint: testThumb, Token: "t"}.String())
	f.Add("tendril://a:1,b:2/?thumbprint=" + testThumb + "&token=x")
	f.Add("tendril://")
	f.Fuzz(func(t *testing.T, s string) {
		j, err := ParseJoin(s)
		if err != nil {
			return
		}
		again, err := ParseJoin(j.String())
		if err != nil || again.Token != j.Token || again.Thumbprint != j.Thumbprint || len(again.Servers) != len(j.Servers) {
			t.Fatalf("round trip of %q: got %+v, %v; want %+v", s, again, err, j)
		}
	})
}
