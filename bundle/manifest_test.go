package bundle

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func validManifest() Manifest { return goodSpec("1.2.3").m }

func marshal(t testing.TB, m Manifest) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseManifest(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	withFile := func(f File) func(*Manifest) {
		return func(m *Manifest) { m.Files = append(m.Files, f) }
	}
	tests := []struct {
		name   string
		mutate func(*Manifest)
		raw    string // used instead of the mutated manifest when set
		lim    Limits
		ok     bool
	}{
		{name: "valid", ok: true},
		{name: "prerelease and build version", mutate: func(m *Manifest) { m.Version = "1.2.3-rc.1+build.5" }, ok: true},
		{name: "several platforms", mutate: func(m *Manifest) {
			m.Files = append(m.Files, File{Path: "windows-amd64/calamari.exe", Mode: 0o755, SHA256: hash})
			m.Entrypoints["windows/amd64"] = "windows-amd64/calamari.exe"
			m.Entrypoints["linux/arm64"] = "linux-amd64/calamari"
		}, ok: true},
		{name: "empty name", mutate: func(m *Manifest) { m.Name = "" }},
		{name: "upper-case name", mutate: func(m *Manifest) { m.Name = "Calamari" }},
		{name: "name with a slash", mutate: func(m *Manifest) { m.Name = "a/b" }},
		{name: "version 1.2", mutate: func(m *Manifest) { m.Version = "1.2" }},
		{name: "version v1.2.3", mutate: func(m *Manifest) { m.Version = "v1.2.3" }},
		{name: "version latest", mutate: func(m *Manifest) { m.Version = "latest" }},
		{name: "empty version", mutate: func(m *Manifest) { m.Version = "" }},
		{name: "version with leading zero", mutate: func(m *Manifest) { m.Version = "01.2.3" }},
		{name: "version with a path", mutate: func(m *Manifest) { m.Version = "1.2.3/../../x" }},
		{name: "no files", mutate: func(m *Manifest) { m.Files = nil }},
		{name: "no entry points", mutate: func(m *Manifest) { m.Entrypoints = nil }},
		{name: "entry point not listed", mutate: func(m *Manifest) { m.Entrypoints["linux/amd64"] = "nope" }},
		{name: "entry point not executable", mutate: func(m *Manifest) { m.Entrypoints["linux/amd64"] = "README.txt" }},
		{name: "unknown os", mutate: func(m *Manifest) { m.Entrypoints["linu/amd64"] = "linux-amd64/calamari" }},
		{name: "unknown arch", mutate: func(m *Manifest) { m.Entrypoints["linux/x86_64"] = "linux-amd64/calamari" }},
		{name: "platform without slash", mutate: func(m *Manifest) { m.Entrypoints["linux"] = "linux-amd64/calamari" }},
		{name: "path with ..", mutate: withFile(File{Path: "../evil", Mode: 0o644, SHA256: hash})},
		{name: "path with inner ..", mutate: withFile(File{Path: "a/../../evil", Mode: 0o644, SHA256: hash})},
		{name: "path with .", mutate: withFile(File{Path: "./evil", Mode: 0o644, SHA256: hash})},
		{name: "path ..", mutate: withFile(File{Path: "..", Mode: 0o644, SHA256: hash})},
		{name: "absolute path", mutate: withFile(File{Path: "/etc/evil", Mode: 0o644, SHA256: hash})},
		{name: "backslash path", mutate: withFile(File{Path: `lib\evil`, Mode: 0o644, SHA256: hash})},
		{name: "drive letter", mutate: withFile(File{Path: "C:/evil", Mode: 0o644, SHA256: hash})},
		{name: "drive-relative", mutate: withFile(File{Path: "C:evil", Mode: 0o644, SHA256: hash})},
		{name: "empty path", mutate: withFile(File{Path: "", Mode: 0o644, SHA256: hash})},
		{name: "trailing slash", mutate: withFile(File{Path: "lib/", Mode: 0o644, SHA256: hash})},
		{name: "double slash", mutate: withFile(File{Path: "lib//x", Mode: 0o644, SHA256: hash})},
		{name: "NUL in path", mutate: withFile(File{Path: "a\x00b", Mode: 0o644, SHA256: hash})},
		{name: "newline in path", mutate: withFile(File{Path: "a\nb", Mode: 0o644, SHA256: hash})},
		{name: "element of 256 bytes", mutate: withFile(File{Path: "a/" + strings.Repeat("x", 256), Mode: 0o644, SHA256: hash})},
		{name: "element of 255 bytes", mutate: withFile(File{Path: "a/" + strings.Repeat("x", 255), Mode: 0o644, SHA256: hash}), ok: true},
		{name: "Windows device name", mutate: withFile(File{Path: "lib/nul.txt", Mode: 0o644, SHA256: hash})},
		{name: "trailing dot", mutate: withFile(File{Path: "lib/x.", Mode: 0o644, SHA256: hash})},
		{name: "duplicate path", mutate: withFile(File{Path: "README.txt", Mode: 0o644, SHA256: hash})},
		{name: "case-insensitive duplicate", mutate: withFile(File{Path: "readme.TXT", Mode: 0o644, SHA256: hash})},
		{name: "case-insensitive duplicate folder and file", mutate: withFile(File{Path: "LIB/data/blob.bin", Mode: 0o644, SHA256: hash})},
		{name: "file is also a folder", mutate: withFile(File{Path: "README.txt/x", Mode: 0o644, SHA256: hash})},
		{name: "reserved manifest.json", mutate: withFile(File{Path: "manifest.json", Mode: 0o644, SHA256: hash})},
		{name: "reserved manifest.sig", mutate: withFile(File{Path: "manifest.sig", Mode: 0o644, SHA256: hash})},
		{name: "reserved Success.txt", mutate: withFile(File{Path: "Success.txt", Mode: 0o644, SHA256: hash})},
		{name: "reserved success.txt in other case", mutate: withFile(File{Path: "SUCCESS.TXT", Mode: 0o644, SHA256: hash})},
		{name: "reserved name as a folder", mutate: withFile(File{Path: "Success.txt/x", Mode: 0o644, SHA256: hash})},
		{name: "reserved name below the top is fine", mutate: withFile(File{Path: "lib/Success.txt", Mode: 0o644, SHA256: hash}), ok: true},
		{name: "negative size", mutate: withFile(File{Path: "neg", Size: -1, Mode: 0o644, SHA256: hash})},
		{name: "mode 04755", mutate: withFile(File{Path: "suid", Mode: 0o4755, SHA256: hash})},
		{name: "mode 0777", mutate: withFile(File{Path: "wide", Mode: 0o777, SHA256: hash})},
		{name: "mode 0600", mutate: withFile(File{Path: "narrow", Mode: 0o600, SHA256: hash})},
		{name: "upper-case hash", mutate: withFile(File{Path: "h", Mode: 0o644, SHA256: strings.ToUpper(hash)})},
		{name: "short hash", mutate: withFile(File{Path: "h", Mode: 0o644, SHA256: hash[:62]})},
		{name: "too many files", lim: Limits{MaxFiles: 3}},
		{name: "too big", lim: Limits{MaxTotalSize: 1000}},
		{name: "manifest too big", lim: Limits{MaxManifestSize: 100}},
		{name: "unknown field", raw: `{"name":"calamari","version":"1.2.3","entrypoints":{"linux/amd64":"c"},"files":[{"path":"c","size":0,"mode":493,"sha256":"` + hash + `"}],"extra":1}`},
		{name: "unknown file field", raw: `{"name":"calamari","version":"1.2.3","entrypoints":{"linux/amd64":"c"},"files":[{"path":"c","size":0,"mode":493,"sha256":"` + hash + `","x":1}]}`},
		{name: "field in other case", raw: `{"Name":"calamari","version":"1.2.3","entrypoints":{"linux/amd64":"c"},"files":[{"path":"c","size":0,"mode":493,"sha256":"` + hash + `"}]}`},
		{name: "duplicate key", raw: `{"name":"calamari","name":"x","version":"1.2.3","entrypoints":{"linux/amd64":"c"},"files":[{"path":"c","size":0,"mode":493,"sha256":"` + hash + `"}]}`},
		{name: "duplicate entry point", raw: `{"name":"calamari","version":"1.2.3","entrypoints":{"linux/amd64":"c","linux/amd64":"d"},"files":[{"path":"c","size":0,"mode":493,"sha256":"` + hash + `"}]}`},
		{name: "missing size", raw: `{"name":"calamari","version":"1.2.3","entrypoints":{"linux/amd64":"c"},"files":[{"path":"c","mode":493,"sha256":"` + hash + `"}]}`},
		{name: "null files", raw: `{"name":"calamari","version":"1.2.3","entrypoints":{"linux/amd64":"c"},"files":null}`},
		{name: "size as string", raw: `{"name":"calamari","version":"1.2.3","entrypoints":{"linux/amd64":"c"},"files":[{"path":"c","size":"0","mode":493,"sha256":"` + hash + `"}]}`},
		{name: "fractional size", raw: `{"name":"calamari","version":"1.2.3","entrypoints":{"linux/amd64":"c"},"files":[{"path":"c","size":0.5,"mode":493,"sha256":"` + hash + `"}]}`},
		{name: "trailing data", raw: `{"name":"calamari","version":"1.2.3","entrypoints":{"linux/amd64":"c"},"files":[{"path":"c","size":0,"mode":493,"sha256":"` + hash + `"}]} {}`},
		{name: "minimal", raw: `{"name":"calamari","version":"1.2.3","entrypoints":{"linux/amd64":"c"},"files":[{"path":"c","size":0,"mode":493,"sha256":"` + hash + `"}]}`, ok: true},
		{name: "not JSON", raw: `name=calamari`},
		{name: "array", raw: `[]`},
		{name: "empty", raw: ` `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validManifest()
			if tt.mutate != nil {
				tt.mutate(&m)
			}
			raw := marshal(t, m)
			if tt.raw != "" {
				raw = []byte(tt.raw)
			}
			got, err := ParseManifest(raw, tt.lim)
			if tt.ok {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				if tt.raw == "" && !reflect.DeepEqual(got, m) {
					t.Errorf("got %+v, want %+v", got, m)
				}
				return
			}
			if !errors.Is(err, ErrInvalidManifest) {
				t.Fatalf("got %v, want ErrInvalidManifest", err)
			}
			// What the parser refuses, Encode refuses too (limits aside), so
			// Pack can never produce such a manifest.
			if tt.raw == "" && tt.lim == (Limits{}) {
				if _, err := m.Encode(); !errors.Is(err, ErrInvalidManifest) {
					t.Errorf("Encode: got %v, want ErrInvalidManifest", err)
				}
			}
		})
	}
}

func TestEncodeCanonical(t *testing.T) {
	m := validManifest()
	a, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// The same manifest with its files in another order encodes the same.
	r := m
	r.Files = append([]File(nil), m.Files...)
	r.Files[0], r.Files[len(r.Files)-1] = r.Files[len(r.Files)-1], r.Files[0]
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("got different encodings for the same manifest:\n%s\n%s", a, b)
	}
	back, err := ParseManifest(a, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(back.Files); i++ {
		if back.Files[i-1].Path >= back.Files[i].Path {
			t.Errorf("files not sorted: %s before %s", back.Files[i-1].Path, back.Files[i].Path)
		}
	}
	if got, want := back.TotalSize(), m.TotalSize(); got != want {
		t.Errorf("TotalSize: got %d, want %d", got, want)
	}
}

func TestEntrypoint(t *testing.T) {
	m := validManifest()
	m.Entrypoints["darwin/arm64"] = "linux-amd64/calamari" // any 0755 file will do
	tests := []struct {
		goos, goarch string
		want         string
		wantErr      bool
	}{
		{"linux", "amd64", "linux-amd64/calamari", false},
		{"windows", "amd64", "", true},
		{"linux", "arm64", "", true},
	}
	for _, tt := range tests {
		got, err := m.Entrypoint(tt.goos, tt.goarch)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("Entrypoint(%s, %s): got %q, %v; want %q, error %v", tt.goos, tt.goarch, got, err, tt.want, tt.wantErr)
		}
		if tt.wantErr {
			if !errors.Is(err, ErrNoEntrypoint) {
				t.Errorf("Entrypoint(%s, %s): got %v, want ErrNoEntrypoint", tt.goos, tt.goarch, err)
			}
			// The error names the platforms the bundle has.
			if !strings.Contains(err.Error(), "darwin/arm64, linux/amd64") {
				t.Errorf("Entrypoint(%s, %s): got %q, want the platforms named", tt.goos, tt.goarch, err)
			}
		}
	}
}

func TestVersions(t *testing.T) {
	valid := []string{"0.0.0-dev", "1.2.3", "10.20.30-rc.1+build.7", "1.0.0+meta"}
	invalid := []string{"", "1", "1.2", "v1.2.3", "latest", "1.2.3.4", "01.2.3", "1.2.3-", " 1.2.3", "1.2.3/x"}
	for _, v := range valid {
		if !ValidVersion(v) {
			t.Errorf("ValidVersion(%q): got false, want true", v)
		}
	}
	for _, v := range invalid {
		if ValidVersion(v) {
			t.Errorf("ValidVersion(%q): got true, want false", v)
		}
	}
	order := []string{"1.10.0", "1.9.0", "1.9.0-rc.10", "1.9.0-rc.2", "0.0.0-dev"}
	for i := 1; i < len(order); i++ {
		if got := CompareVersions(order[i-1], order[i]); got != 1 {
			t.Errorf("CompareVersions(%s, %s): got %d, want 1", order[i-1], order[i], got)
		}
	}
}

// FuzzParseManifest checks that the parser never panics and that whatever
// it accepts is safe to use: it encodes, parses back to the same manifest,
// and every path stays inside the folder on this OS.
func FuzzParseManifest(f *testing.F) {
	f.Add(marshal(f, validManifest()))
	if b, err := validManifest().Encode(); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"name":"a","version":"1.0.0","entrypoints":{"linux/amd64":"a"},"files":[{"path":"a","size":0,"mode":493,"sha256":"` + strings.Repeat("0", 64) + `"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b, Limits{})
		if err != nil {
			if !errors.Is(err, ErrInvalidManifest) {
				t.Fatalf("got %v, want ErrInvalidManifest", err)
			}
			return
		}
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("Encode of an accepted manifest: %v", err)
		}
		back, err := ParseManifest(enc, Limits{})
		if err != nil {
			t.Fatalf("ParseManifest of Encode: %v", err)
		}
		again, _ := back.Encode()
		if string(again) != string(enc) {
			t.Fatalf("encoding not stable:\n%s\n%s", enc, again)
		}
		if !ValidVersion(m.Version) {
			t.Fatalf("accepted version %q", m.Version)
		}
		for _, fl := range m.Files {
			if !filepath.IsLocal(filepath.FromSlash(fl.Path)) {
				t.Fatalf("accepted path %q, which is not local", fl.Path)
			}
		}
	})
}
