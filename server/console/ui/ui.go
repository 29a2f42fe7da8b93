// Package ui holds the coordinator's web console: its html/template pages
// and the few plain CSS and JavaScript files they load, embedded in the
// binary so the console needs no build step and no network beyond the
// coordinator. Package server renders and serves them.
package ui

import (
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"path"
	"strings"
)

//go:embed templates static
var files embed.FS

// Layout is the name of the template every page executes: the page frame,
// which calls the page's own "title" and "content" templates.
const Layout = "layout"

// Static returns the files served under /static/: stylesheet, script,
// icon.
func Static() fs.FS {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		// fs.Sub fails only on an invalid name, and "static" is valid.
		panic(err)
	}
	return sub
}

// Templates is the parsed console: one template set per page, each with
// the layout and the shared partials, plus the partials alone for
// fragments that the pages fetch to refresh themselves.
type Templates struct {
	// Pages maps a page name (its file name without ".html") to its set.
	Pages map[string]*template.Template
	// Partials holds only the shared templates (partials*.html).
	Partials *template.Template
}

// Parse parses every page with funcs available to all templates. Each
// page gets its own set because every page defines "title" and "content".
func Parse(funcs template.FuncMap) (*Templates, error) {
	base, err := template.New(Layout).Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/partials*.html")
	if err != nil {
		return nil, fmt.Errorf("parse console layout: %w", err)
	}
	partials, err := base.Clone()
	if err != nil {
		return nil, fmt.Errorf("parse console partials: %w", err)
	}
	pages, err := fs.Glob(files, "templates/page_*.html")
	if err != nil {
		return nil, fmt.Errorf("list console pages: %w", err)
	}
	t := &Templates{Pages: make(map[string]*template.Template, len(pages)), Partials: partials}
	for _, p := range pages {
		set, err := base.Clone()
		if err != nil {
			return nil, fmt.Errorf("parse console page %s: %w", p, err)
		}
		if _, err := set.ParseFS(files, p); err != nil {
			return nil, fmt.Errorf("parse console page %s: %w", p, err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(path.Base(p), "page_"), ".html")
		t.Pages[name] = set
	}
	return t, nil
}
