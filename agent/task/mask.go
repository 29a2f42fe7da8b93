package task

import (
	"cmp"
	"slices"
	"strings"
)

// Mask replaces each occurrence of a sensitive value in a task's log.
const Mask = "********"

// masker hides sensitive values in log text. A value of several lines is
// also hidden line by line, because output reaches the log a line at a
// time.
type masker struct {
	// values, longest first, so a value that contains another is masked
	// whole rather than around the shorter one.
	values []string
	// longest is the length of the longest value: the most bytes of output
	// a line split must look back over.
	longest int
}

// newMasker returns a masker for the given values, or nil if none can
// occur in output. A value of only '*' is skipped: it would match its own
// mask.
func newMasker(values []string) *masker {
	var m masker
	add := func(v string) {
		if strings.Trim(v, "*") == "" || slices.Contains(m.values, v) {
			return
		}
		m.values = append(m.values, v)
		m.longest = max(m.longest, len(v))
	}
	for _, v := range values {
		add(v)
		if strings.ContainsAny(v, "\r\n") {
			for _, line := range strings.Split(strings.ReplaceAll(v, "\r\n", "\n"), "\n") {
				add(line)
			}
		}
	}
	if len(m.values) == 0 {
		return nil
	}
	slices.SortFunc(m.values, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	return &m
}

// mask returns s with every value replaced by Mask. A nil masker masks
// nothing.
func (m *masker) mask(s string) string {
	if m == nil {
		return s
	}
	for _, v := range m.values {
		if strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, Mask)
		}
	}
	return s
}

// safeCut moves a cut of b at i so that no value occurrence spans it:
// to the start of an occurrence that crosses it, or to its end if it
// starts at 0. The caller cuts only where at least longest bytes follow
// i, so an occurrence still arriving cannot cross it.
func (m *masker) safeCut(b []byte, i int) int {
	if m == nil {
		return i
	}
	s := string(b)
	for moved := true; moved; {
		moved = false
		for _, v := range m.values {
			from := max(0, i-len(v)+1)
			j := strings.Index(s[from:min(len(s), i+len(v)-1)], v)
			if j < 0 {
				continue
			}
			start := from + j
			if start == 0 {
				return start + len(v)
			}
			i, moved = start, true
		}
	}
	return i
}

// reach is how far past a cut a value may extend: the longest value.
func (m *masker) reach() int {
	if m == nil {
		return 0
	}
	return m.longest
}
