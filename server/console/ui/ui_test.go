package ui

import (
	"html/template"
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// stubFuncs stand in for the helpers package server passes: parsing
// needs their names only.
var stubFuncs = template.FuncMap{
	"pathEscape": func(s string) string { return s },
	"join":       strings.Join,
	"bytes":      func(int64) string { return "" },
	"quoteArgs":  func([]string) string { return "" },
}

func TestParseEveryPage(t *testing.T) {
	tpl, err := Parse(stubFuncs)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for name, set := range tpl.Pages {
		got = append(got, name)
		for _, want := range []string{Layout, "title", "content", "environments-body", "task-summary", "group-body"} {
			if set.Lookup(want) == nil {
				t.Errorf("page %s: got no template %q, want the layout, its own title and content, and the partials", name, want)
			}
		}
	}
	slices.Sort(got)
	want := []string{"configuration", "environments", "error", "group", "machine", "rollout", "rollouts", "script", "signin", "task", "tasks"}
	if !slices.Equal(got, want) {
		t.Fatalf("got pages %v, want %v", got, want)
	}
	if tpl.Partials.Lookup("environments-body") == nil || tpl.Partials.Lookup("content") != nil {
		t.Fatal("partials: want the shared templates and no page content")
	}
}

// The console's Content-Security-Policy allows no inline script or
// style; markup that relies on them would silently break.
func TestNoInlineScriptOrStyle(t *testing.T) {
	inline := regexp.MustCompile(`(?i)<script(\s[^>]*)?>[^<]|<script>|\son[a-z]+=|\sstyle=|<style|javascript:`)
	err := fs.WalkDir(files, "templates", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, p)
		if err != nil {
			return err
		}
		if m := inline.Find(b); m != nil {
			t.Errorf("%s: got %q, want no inline script, handler or style", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStaticFiles(t *testing.T) {
	for _, name := range []string{"console.css", "console.js", "icon.svg", "bullhorn.svg"} {
		b, err := fs.ReadFile(Static(), name)
		if err != nil || len(b) == 0 {
			t.Errorf("static %s: got %d bytes, %v; want the file", name, len(b), err)
		}
	}
}
