package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"slices"
	"strings"

	"golang.org/x/mod/semver"
)

// File describes one file of a bundle.
type File struct {
	// Path is slash-separated, relative and clean, e.g. "linux-amd64/calamari".
	Path string `json:"path"`
	// Size is the file's length in bytes.
	Size int64 `json:"size"`
	// Mode is 0644 or 0755: nothing else is needed to run a tool, and
	// nothing more permissive (setuid, world-writable) is ever installed.
	Mode uint32 `json:"mode"`
	// SHA256 is the lower-case hex SHA-256 of the content.
	SHA256 string `json:"sha256"`
}

// Manifest is the content of manifest.json: what a bundle is and everything
// it holds. Its encoded bytes are what the coordinator signs.
type Manifest struct {
	// Name is the bundle's name, e.g. "calamari".
	Name string `json:"name"`
	// Version is a semantic version without a leading "v", e.g. "1.2.3".
	Version string `json:"version"`
	// Entrypoints maps "os/arch" (GOOS/GOARCH) to the path of the program
	// to run on that platform.
	Entrypoints map[string]string `json:"entrypoints"`
	// Files lists every file of the bundle.
	Files []File `json:"files"`
}

// Bounds on names that no real bundle comes near; they keep a hostile
// manifest from making paths or error messages huge.
const (
	maxNameLen     = 128
	maxVersionLen  = 128
	maxPathLen     = 4096
	maxElementLen  = 255
	maxJSONNesting = 4 // manifest -> files -> file -> field
)

// noLimits validates a manifest that is trusted for its size: one we are
// encoding ourselves, or one whose signature already verified.
var noLimits = Limits{MaxFiles: math.MaxInt, MaxTotalSize: math.MaxInt64, MaxManifestSize: math.MaxInt64}

// ParseManifest parses and strictly validates manifest.json. Anything it
// does not fully understand is rejected: unknown or duplicate fields,
// unsafe paths, modes other than 0644 and 0755, versions that are not
// semantic versions, and manifests beyond lim (zero fields: DefaultLimits).
// Every error wraps ErrInvalidManifest.
func ParseManifest(b []byte, lim Limits) (Manifest, error) {
	lim = lim.withDefaults()
	if int64(len(b)) > lim.MaxManifestSize {
		return Manifest{}, fmt.Errorf("parse manifest: %w: %d bytes, limit %d", ErrInvalidManifest, len(b), lim.MaxManifestSize)
	}
	// encoding/json alone accepts duplicate keys (the last wins) and
	// matches field names case-insensitively; either would let two readers
	// of the same signed bytes see different manifests. checkShape pins
	// the exact shape first.
	if err := checkShape(b); err != nil {
		return Manifest{}, fmt.Errorf("parse manifest: %w: %v", ErrInvalidManifest, err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("parse manifest: %w: %v", ErrInvalidManifest, err)
	}
	if err := m.validate(lim); err != nil {
		return Manifest{}, fmt.Errorf("parse manifest: %w", err)
	}
	return m, nil
}

// Encode returns the canonical JSON of m (files sorted by path, indented
// for people who look at an installed bundle): the bytes the coordinator
// signs. It refuses a manifest ParseManifest would refuse, except for the
// size limits, which are the reader's choice.
func (m Manifest) Encode() ([]byte, error) {
	if err := m.validate(noLimits); err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	c := m
	c.Files = slices.Clone(m.Files)
	slices.SortFunc(c.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// Entrypoint returns the slash-separated path, relative to the bundle
// folder, of the program to run on goos/goarch. The error wraps
// ErrNoEntrypoint and names the platforms the bundle has.
func (m Manifest) Entrypoint(goos, goarch string) (string, error) {
	if p, ok := m.Entrypoints[goos+"/"+goarch]; ok {
		return p, nil
	}
	return "", fmt.Errorf("%w: %s %s has no entry point for %s/%s (it has %s)",
		ErrNoEntrypoint, m.Name, m.Version, goos, goarch, strings.Join(m.Platforms(), ", "))
}

// Platforms returns the "os/arch" keys of the entry points, sorted.
func (m Manifest) Platforms() []string {
	ps := make([]string, 0, len(m.Entrypoints))
	for p := range m.Entrypoints {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// TotalSize returns the sum of the sizes of all files.
func (m Manifest) TotalSize() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// validate checks every rule of ParseManifest except the JSON shape. The
// error wraps ErrInvalidManifest.
func (m Manifest) validate(lim Limits) error {
	if err := m.check(lim); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidManifest, err)
	}
	return nil
}

func (m Manifest) check(lim Limits) error {
	if err := checkName(m.Name); err != nil {
		return err
	}
	if !ValidVersion(m.Version) {
		return fmt.Errorf("version %s is not a semantic version like 1.2.3 (without a leading v)", quote(m.Version))
	}
	if len(m.Files) == 0 {
		return errors.New("no files")
	}
	if len(m.Files) > lim.MaxFiles {
		return fmt.Errorf("%d files, limit %d", len(m.Files), lim.MaxFiles)
	}
	byPath := make(map[string]File, len(m.Files))
	folded := make(map[string]string, len(m.Files))
	var total int64
	for _, f := range m.Files {
		if err := checkPath(f.Path); err != nil {
			return err
		}
		fold := strings.ToLower(f.Path)
		if other, dup := folded[fold]; dup {
			if other == f.Path {
				return fmt.Errorf("file %s is listed twice", quote(f.Path))
			}
			// Windows and macOS file systems would make these one file.
			return fmt.Errorf("files %s and %s differ only in case", quote(other), quote(f.Path))
		}
		folded[fold] = f.Path
		byPath[f.Path] = f
		if top, _, _ := strings.Cut(fold, "/"); top == strings.ToLower(ManifestName) ||
			top == strings.ToLower(SignatureName) || top == strings.ToLower(SuccessName) {
			return fmt.Errorf("file %s uses a name reserved for the installed bundle", quote(f.Path))
		}
		if f.Size < 0 {
			return fmt.Errorf("file %s: negative size %d", quote(f.Path), f.Size)
		}
		if f.Size > lim.MaxTotalSize-total {
			return fmt.Errorf("files add up to more than %d bytes", lim.MaxTotalSize)
		}
		total += f.Size
		if f.Mode != 0o644 && f.Mode != 0o755 {
			return fmt.Errorf("file %s: mode %#o, want 0644 or 0755", quote(f.Path), f.Mode)
		}
		if !isSHA256Hex(f.SHA256) {
			return fmt.Errorf("file %s: sha256 %s is not 64 lower-case hex digits", quote(f.Path), quote(f.SHA256))
		}
	}
	// A file cannot also be a folder holding other files.
	for _, f := range m.Files {
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			if other, ok := folded[strings.ToLower(d)]; ok {
				return fmt.Errorf("file %s is also the folder of %s", quote(other), quote(f.Path))
			}
		}
	}
	if len(m.Entrypoints) == 0 {
		return errors.New("no entry points")
	}
	for plat, p := range m.Entrypoints {
		goos, goarch, ok := strings.Cut(plat, "/")
		if !ok || !knownOS[goos] || !knownArch[goarch] {
			return fmt.Errorf("entry point platform %s is not a known os/arch", quote(plat))
		}
		f, ok := byPath[p]
		if !ok {
			return fmt.Errorf("entry point for %s: %s is not a listed file", plat, quote(p))
		}
		if f.Mode != 0o755 {
			return fmt.Errorf("entry point for %s: %s has mode %#o, want 0755", plat, quote(p), f.Mode)
		}
	}
	return nil
}

func checkName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("name %s: want 1 to %d characters", quote(name), maxNameLen)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("name %s: want only a-z, 0-9 and -", quote(name))
		}
	}
	return nil
}

// ValidVersion reports whether v is a full semantic version without a
// leading "v" ("1.2.3", "1.2.3-rc.1", "1.2.3+build"), the form of bundle
// versions and of the version folders of an installed Calamari.
func ValidVersion(v string) bool {
	if v == "" || len(v) > maxVersionLen || v[0] == 'v' || !semver.IsValid("v"+v) {
		return false
	}
	// semver accepts the shorthands "v1" and "v1.2"; Canonical expands them
	// (and drops build metadata), so a full version is its own canonical form.
	noBuild, _, _ := strings.Cut(v, "+")
	return semver.Canonical("v"+v) == "v"+noBuild
}

// CompareVersions compares two valid versions as semantic versions: -1, 0
// or +1. Versions differing only in build metadata compare by their text,
// so that sorting is deterministic.
func CompareVersions(a, b string) int {
	if c := semver.Compare("v"+a, "v"+b); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

// checkPath enforces the path rules of a manifest. They are stricter than
// any one OS needs because one bundle is installed on Linux, macOS and
// Windows agents alike.
func checkPath(p string) error {
	bad := func(why string) error { return fmt.Errorf("path %s: %s", quote(p), why) }
	switch {
	case p == "":
		return bad("empty")
	case len(p) > maxPathLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxPathLen))
	case strings.HasPrefix(p, "/"):
		return bad("absolute")
	case strings.ContainsRune(p, '\\'):
		return bad("contains a backslash")
	case strings.ContainsRune(p, ':'):
		return bad("contains ':' (a drive letter or an NTFS stream)")
	case path.Clean(p) != p:
		return bad("not clean")
	}
	for _, c := range []byte(p) {
		if c < 0x20 || c == 0x7f {
			return bad("contains a control character")
		}
		if strings.IndexByte(`<>"|?*`, c) >= 0 {
			return bad(fmt.Sprintf("contains %q, which Windows forbids", c))
		}
	}
	for _, e := range strings.Split(p, "/") {
		switch {
		case e == "." || e == "..":
			return bad(`contains "." or ".."`)
		case len(e) > maxElementLen:
			return bad(fmt.Sprintf("has an element longer than %d bytes", maxElementLen))
		case strings.HasSuffix(e, ".") || strings.HasSuffix(e, " "):
			return bad("has an element ending in '.' or ' ', which Windows drops")
		case windowsReserved(e):
			return bad(fmt.Sprintf("element %s is a Windows device name", quote(e)))
		}
	}
	return nil
}

// windowsReserved reports whether e names a Windows device (CON, NUL,
// COM1, ... with or without an extension), which Windows opens instead of
// a file.
func windowsReserved(e string) bool {
	base, _, _ := strings.Cut(e, ".")
	base = strings.ToUpper(strings.TrimRight(base, " "))
	switch base {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$":
		return true
	}
	if len(base) == 4 && (strings.HasPrefix(base, "COM") || strings.HasPrefix(base, "LPT")) {
		return base[3] >= '0' && base[3] <= '9'
	}
	return false
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// quote quotes s for an error message, shortened so that a hostile value
// cannot make the message huge.
func quote(s string) string {
	const max = 120
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// The GOOS and GOARCH values Go knows or has known (go/build's lists), so a
// typo such as "linux/x86_64" is caught when the bundle is built.
var (
	knownOS = setOf("aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
		"linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos")
	knownArch = setOf("386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "loong64", "mips",
		"mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "ppc64", "ppc64le", "riscv",
		"riscv64", "s390", "s390x", "sparc", "sparc64", "wasm")
)

func setOf(items ...string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, s := range items {
		m[s] = true
	}
	return m
}

// checkShape walks the JSON tokens of a manifest and requires exactly the
// schema of Manifest: each object key spelled exactly and present exactly
// once, the right JSON type for each value, no null, nothing after the
// top-level object.
func checkShape(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := object(dec, []string{"name", "version", "entrypoints", "files"}, func(key string) error {
		switch key {
		case "name", "version":
			return scalar[string](dec, key)
		case "entrypoints":
			return object(dec, nil, func(plat string) error { return scalar[string](dec, "entry point "+plat) })
		default: // "files"
			return array(dec, func() error {
				return object(dec, []string{"path", "size", "mode", "sha256"}, func(key string) error {
					if key == "path" || key == "sha256" {
						return scalar[string](dec, key)
					}
					return scalar[json.Number](dec, key)
				})
			})
		}
	}); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the manifest object")
	}
	return nil
}

// object reads a JSON object, calling value for each key to read its value.
// With fields set, keys must be exactly those fields, each once; without,
// any key is allowed once.
func object(dec *json.Decoder, fields []string, value func(key string) error) error {
	if err := delim(dec, '{'); err != nil {
		return err
	}
	seen := make(map[string]bool)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		if fields != nil && !slices.Contains(fields, key) {
			return fmt.Errorf("unknown field %s", quote(key))
		}
		if seen[key] {
			return fmt.Errorf("duplicate key %s", quote(key))
		}
		seen[key] = true
		if err := value(key); err != nil {
			return err
		}
	}
	if err := delim(dec, '}'); err != nil {
		return err
	}
	for _, f := range fields {
		if !seen[f] {
			return fmt.Errorf("missing field %q", f)
		}
	}
	return nil
}

func array(dec *json.Decoder, elem func() error) error {
	if err := delim(dec, '['); err != nil {
		return err
	}
	for dec.More() {
		if err := elem(); err != nil {
			return err
		}
	}
	return delim(dec, ']')
}

func delim(dec *json.Decoder, want json.Delim) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := t.(json.Delim); !ok || d != want {
		return fmt.Errorf("got %v, want %v", t, want)
	}
	return nil
}

// scalar reads one value that must have Go type T (string or json.Number).
func scalar[T any](dec *json.Decoder, what string) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if _, ok := t.(T); !ok {
		var zero T
		return fmt.Errorf("%s: got %T, want %T", what, t, zero)
	}
	return nil
}
