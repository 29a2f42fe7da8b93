// Package diag is the diagnostics archive both sides write: one .tar.gz
// with a manifest.json that says what each entry is, its size and
// SHA-256, when it was collected and by which tool, and what could not
// be collected and why. The agent's collection (agent/diagnostics) and
// the coordinator's (server/diagnostics) fill it; this package only
// writes and reads the format and holds what both need to fill it
// safely: redaction, certificate summaries, free disk space and goroutine
// dumps.
//
// An archive is meant to be handed to whoever supports the installation,
// so what it must never hold is decided where it is filled, and checked
// here where it can be: a PEM private key block in any entry is cut out
// before the entry is written.
package diag

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"
)

// ManifestName is the manifest's name in the archive. It is the last
// entry: it lists every entry before it.
const ManifestName = "manifest.json"

// Format is the manifest's format version.
const Format = 1

// Kinds of archive.
const (
	// KindAgent is an agent's home, collected on its machine.
	KindAgent = "agent"
	// KindAgentFromCoordinator is the coordinator's view of one agent
	// with, when the agent could send it, the agent's own archive inside.
	KindAgentFromCoordinator = "agent-from-coordinator"
	// KindCoordinator is a coordinator's data folder, collected on its
	// host.
	KindCoordinator = "coordinator"
)

// Manifest is manifest.json.
type Manifest struct {
	Format int `json:"format"`
	// Kind is one of the Kind constants.
	Kind string `json:"kind"`
	// Subject is what was collected: an agent home, an agent's name, a
	// data folder.
	Subject string `json:"subject"`
	// Created is when collection began.
	Created time.Time `json:"created"`
	// Tool is the program that wrote the archive.
	Tool Tool `json:"tool"`
	// Entries lists every entry but the manifest, in archive order.
	Entries []Entry `json:"entries"`
	// Missing lists what was looked for and could not be collected.
	Missing []Missing `json:"missing,omitempty"`
	// Notes say what a reader should know first: an agent not connected,
	// an agent too old to collect its side, a home without a
	// registration.
	Notes []string `json:"notes,omitempty"`
}

// Tool names the program that wrote an archive.
type Tool struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Go      string `json:"go"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
}

// ThisTool describes the running program as name at version.
func ThisTool(name, version string) Tool {
	return Tool{Name: name, Version: version, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
}

// Entry is one file of the archive.
type Entry struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	// Collected is when the entry was read.
	Collected time.Time `json:"collected"`
	// Source is the file the entry was copied from, if any, and
	// Modified its modification time.
	Source   string    `json:"source,omitempty"`
	Modified time.Time `json:"modified,omitzero"`
	// Truncated says the source was larger than the entry: only its
	// last Size bytes (a log's newest lines) are in the archive.
	Truncated bool `json:"truncated,omitempty"`
	// SourceSize is the source's size when Truncated.
	SourceSize int64 `json:"source_size,omitempty"`
	// KeysRemoved counts PEM private key blocks cut out of the entry
	// (see RemovePrivateKeys).
	KeysRemoved int `json:"keys_removed,omitempty"`
}

// Missing is something that could not be collected.
type Missing struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Error       string `json:"error"`
}

// Writer writes an archive. Collection failures are recorded in the
// manifest (Missing) and collection goes on; only a failure to write the
// archive itself (a full disk at its destination) is returned, by that
// call and every later one.
type Writer struct {
	gz    *gzip.Writer
	tw    *tar.Writer
	m     Manifest
	names map[string]bool
	err   error
	now   func() time.Time
}

// NewWriter starts an archive of kind about subject, written by tool, on
// w. Close finishes it.
func NewWriter(w io.Writer, kind, subject string, tool Tool) *Writer {
	gz := gzip.NewWriter(w)
	dw := &Writer{gz: gz, tw: tar.NewWriter(gz), names: map[string]bool{}, now: time.Now}
	dw.m = Manifest{Format: Format, Kind: kind, Subject: subject, Created: dw.now().UTC(), Tool: tool, Entries: []Entry{}}
	return dw
}

// Err is the error that stopped the archive, if any.
func (w *Writer) Err() error { return w.err }

// Note adds a note to the manifest.
func (w *Writer) Note(format string, args ...any) {
	w.m.Notes = append(w.m.Notes, fmt.Sprintf(format, args...))
}

// Missing records that name could not be collected, and why.
func (w *Writer) Missing(name, description string, err error) {
	msg := "unknown"
	if err != nil {
		msg = err.Error()
	}
	w.m.Missing = append(w.m.Missing, Missing{Name: name, Description: description, Error: msg})
}

// Add writes one entry. PEM private key blocks in it are cut out first:
// whatever filled it, a key never leaves in an archive.
func (w *Writer) Add(name, description string, data []byte) error {
	return w.add(Entry{Name: name, Description: description}, data)
}

// AddJSON writes v as an indented JSON entry.
func (w *Writer) AddJSON(name, description string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		w.Missing(name, description, fmt.Errorf("encode: %w", err))
		return w.err
	}
	return w.Add(name, description, append(b, '\n'))
}

// AddFile copies the file rel inside the folder dir as an entry, opened
// without following a symbolic link (OpenInside). A file larger than
// limit bytes is recorded as missing, unless tail is set: then its last
// limit bytes are kept (a log's newest lines). A file that cannot be
// read, or is a link, is recorded as missing.
func (w *Writer) AddFile(name, description, dir, rel string, limit int64, tail bool) error {
	if w.err != nil {
		return w.err
	}
	src := filepath.Join(dir, rel)
	data, st, truncated, err := readFile(dir, rel, limit, tail)
	if err != nil {
		w.Missing(name, description, err)
		return nil
	}
	e := Entry{Name: name, Description: description, Source: src, Modified: st.ModTime().UTC(), Truncated: truncated}
	if truncated {
		e.SourceSize = st.Size()
	}
	return w.add(e, data)
}

// maxInflate bounds how much of a compressed file AddGzipFile reads, in
// multiples of its limit: a rotated log is some 10 MiB of text, and a
// small file that inflates without end is not one.
const maxInflate = 16

// AddGzipFile adds the gzip file rel inside dir (a rotated log),
// decompressed, as an entry: as text, private key blocks can be cut out
// of it, which in its compressed bytes they cannot. Text longer than
// limit keeps its last limit bytes; a file that decompresses to more than
// maxInflate times limit, or is not gzip, is recorded as missing.
func (w *Writer) AddGzipFile(name, description, dir, rel string, limit int64) error {
	if w.err != nil {
		return w.err
	}
	src := filepath.Join(dir, rel)
	f, st, err := OpenInside(dir, rel)
	if err != nil {
		w.Missing(name, description, err)
		return nil
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		w.Missing(name, description, fmt.Errorf("decompress %s: %w", src, err))
		return nil
	}
	data, total, err := readTail(io.LimitReader(zr, maxInflate*limit+1), limit)
	switch {
	case err != nil:
		w.Missing(name, description, fmt.Errorf("decompress %s: %w", src, err))
		return nil
	case total > maxInflate*limit:
		w.Missing(name, description, fmt.Errorf("decompress %s: more than %d bytes of text", src, maxInflate*limit))
		return nil
	}
	e := Entry{Name: name, Description: description, Source: src, Modified: st.ModTime().UTC(), Truncated: total > limit}
	if e.Truncated {
		e.SourceSize = total
	}
	return w.add(e, data)
}

// readTail reads r to its end and returns its last limit bytes and how
// many it read in all, holding at most twice limit in memory.
func readTail(r io.Reader, limit int64) ([]byte, int64, error) {
	var b []byte
	var total int64
	chunk := make([]byte, 64<<10)
	for {
		n, err := r.Read(chunk)
		b = append(b, chunk[:n]...)
		total += int64(n)
		if int64(len(b)) > 2*limit {
			b = b[:copy(b, b[int64(len(b))-limit:])]
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, total, err
		}
	}
	if int64(len(b)) > limit {
		b = b[int64(len(b))-limit:]
	}
	return b, total, nil
}

// AddArchive copies the diagnostics archive rel inside dir (an agent's,
// inside its coordinator's) as an entry, streamed rather than read into
// memory: it may be hundreds of MiB, and a coordinator collects for
// several agents at once. Being compressed, it is not searched for
// private keys here; its own writer cut them out of each of its entries.
// A file larger than limit is recorded as missing.
func (w *Writer) AddArchive(name, description, dir, rel string, limit int64) error {
	if w.err != nil {
		return w.err
	}
	src := filepath.Join(dir, rel)
	e := Entry{Name: name, Description: description, Source: src}
	if err := w.checkEntry(e); err != nil {
		return nil
	}
	f, st, err := OpenInside(dir, rel)
	if err != nil {
		w.Missing(name, description, err)
		return nil
	}
	defer f.Close()
	if st.Size() > limit {
		w.Missing(name, description, fmt.Errorf("%s is %d bytes, more than the %d an entry may hold", src, st.Size(), limit))
		return nil
	}
	w.names[name] = true
	e.Modified, e.Collected, e.Size = st.ModTime().UTC(), w.now().UTC(), st.Size()
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: e.Size, ModTime: e.Collected, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		w.err = fmt.Errorf("write diagnostics archive: %w", err)
		return w.err
	}
	h := sha256.New()
	// The size is the header's: a file that shrank since its Stat fails
	// here, and one that grew is cut at its size.
	if _, err := io.CopyN(w.tw, io.TeeReader(f, h), e.Size); err != nil {
		w.err = fmt.Errorf("write diagnostics archive: copy %s: %w", src, err)
		return w.err
	}
	e.SHA256 = hex.EncodeToString(h.Sum(nil))
	w.m.Entries = append(w.m.Entries, e)
	return nil
}

// ReadFileInside reads the regular file rel inside dir, opened without
// following a symbolic link (OpenInside), if it holds at most limit
// bytes.
func ReadFileInside(dir, rel string, limit int64) ([]byte, error) {
	data, _, _, err := readFile(dir, rel, limit, false)
	return data, err
}

// readFile reads at most limit bytes of the file rel inside dir (its
// tail if tail is set). The file is read once into memory, so an entry's
// size is known before its header is written even while a log grows or
// rotates.
func readFile(dir, rel string, limit int64, tail bool) ([]byte, fs.FileInfo, bool, error) {
	src := filepath.Join(dir, rel)
	f, st, err := OpenInside(dir, rel)
	if err != nil {
		return nil, nil, false, err
	}
	defer f.Close()
	truncated := false
	if st.Size() > limit {
		if !tail {
			return nil, nil, false, fmt.Errorf("%s is %d bytes, more than the %d an entry may hold", src, st.Size(), limit)
		}
		if _, err := f.Seek(st.Size()-limit, io.SeekStart); err != nil {
			return nil, nil, false, fmt.Errorf("read %s: %w", src, err)
		}
		truncated = true
	}
	data, err := io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		return nil, nil, false, fmt.Errorf("read %s: %w", src, err)
	}
	return data, st, truncated, nil
}

// checkEntry records e as missing, and says so, when its name is not one
// an archive may hold or is taken.
func (w *Writer) checkEntry(e Entry) error {
	err := checkName(e.Name)
	if err == nil && w.names[e.Name] {
		err = errors.New("named twice")
	}
	if err != nil {
		w.Missing(e.Name, e.Description, fmt.Errorf("entry name %q: %w", e.Name, err))
	}
	return err
}

func (w *Writer) add(e Entry, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if err := w.checkEntry(e); err != nil {
		return nil
	}
	data, e.KeysRemoved = RemovePrivateKeys(data)
	w.names[e.Name] = true
	e.Collected = w.now().UTC()
	if err := w.write(e.Name, e.Collected, data); err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	e.Size, e.SHA256 = int64(len(data)), hex.EncodeToString(sum[:])
	w.m.Entries = append(w.m.Entries, e)
	return nil
}

func (w *Writer) write(name string, at time.Time, data []byte) error {
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: at, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		w.err = fmt.Errorf("write diagnostics archive: %w", err)
		return w.err
	}
	if _, err := w.tw.Write(data); err != nil {
		w.err = fmt.Errorf("write diagnostics archive: %w", err)
		return w.err
	}
	return nil
}

// Manifest is the manifest as it stands.
func (w *Writer) Manifest() Manifest { return w.m }

// AddDiskFree records the free space at path as disk.json; what says
// whose folder it is. A failure to read it is recorded in the entry.
func (w *Writer) AddDiskFree(path, what string) error {
	free, err := DiskFree(path)
	out := struct {
		Path      string `json:"path"`
		FreeBytes int64  `json:"free_bytes"`
		Error     string `json:"error,omitempty"`
	}{Path: path, FreeBytes: free}
	if err != nil {
		out.Error = err.Error()
	}
	return w.AddJSON("disk.json", "free disk space in "+what+" (bytes available to this user)", out)
}

// Collect runs each step in turn, stopping at the first that fails or
// when ctx ends, then closes w and returns its manifest: the shape of
// every collection, agent's or coordinator's.
func (w *Writer) Collect(ctx context.Context, steps ...func() error) (Manifest, error) {
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return Manifest{}, fmt.Errorf("collect diagnostics: %w", err)
		}
		if err := step(); err != nil {
			return Manifest{}, err
		}
	}
	if err := w.Close(); err != nil {
		return Manifest{}, err
	}
	return w.Manifest(), nil
}

// Close writes the manifest and finishes the archive. It does not close
// the writer given to NewWriter.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	b, err := json.MarshalIndent(w.m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode diagnostics manifest: %w", err)
	}
	if err := w.write(ManifestName, w.now().UTC(), append(b, '\n')); err != nil {
		return err
	}
	if err := w.tw.Close(); err != nil {
		w.err = fmt.Errorf("write diagnostics archive: %w", err)
		return w.err
	}
	if err := w.gz.Close(); err != nil {
		w.err = fmt.Errorf("write diagnostics archive: %w", err)
		return w.err
	}
	return nil
}

// checkName accepts a relative, slash-separated name without "." or ".."
// elements: what every tar reader extracts inside its folder.
func checkName(name string) error {
	if name == "" || name == ManifestName || strings.Contains(name, `\`) || path.IsAbs(name) || path.Clean(name) != name || !filepath.IsLocal(name) {
		return errors.New("not a plain relative path")
	}
	if slices.Contains(strings.Split(name, "/"), "..") {
		return errors.New("not a plain relative path")
	}
	return nil
}

// privateKeyMarker ends the first line of every PEM private key block:
// "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE
// KEY", "OPENSSH PRIVATE KEY".
var privateKeyMarker = []byte("PRIVATE KEY-----")

// privateKeyBlock is a PEM private key block, to its END line or, cut
// short, to the end of the data.
var privateKeyBlock = regexp.MustCompile(`(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)`)

// KeyRemoved replaces each private key block RemovePrivateKeys cuts out.
const KeyRemoved = "[private key removed by tendril diagnostics]"

// HasPrivateKey reports whether data holds a PEM private key block.
func HasPrivateKey(data []byte) bool {
	return bytes.Contains(data, privateKeyMarker)
}

// RemovePrivateKeys returns data with every PEM private key block
// replaced by KeyRemoved, and how many there were. A log line that
// quoted a key keeps the rest of the log.
func RemovePrivateKeys(data []byte) ([]byte, int) {
	if !HasPrivateKey(data) {
		return data, 0
	}
	n := 0
	out := privateKeyBlock.ReplaceAllFunc(data, func([]byte) []byte {
		n++
		return []byte(KeyRemoved)
	})
	return out, n
}

// WriteFile writes an archive to path through build, atomically: into a
// temporary file in path's folder, renamed over path once complete, so a
// failure (a full disk) leaves no partial archive behind. The folder must
// exist.
func WriteFile(path string, build func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tendril-diagnostics-*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// Diagnostics hold logs and configuration: the operator's to share.
	if err := f.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := build(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
