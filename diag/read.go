package diag

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ErrBadArchive means an archive is not one this package wrote, or was
// damaged: not gzip or tar, a manifest missing or not JSON, an entry the
// manifest does not list, or one whose size or SHA-256 differs from it.
var ErrBadArchive = errors.New("not a valid diagnostics archive")

// maxEntries bounds how many entries Read accepts: an archive holds a few
// dozen.
const maxEntries = 10000

// Archive is a diagnostics archive read back.
type Archive struct {
	Manifest Manifest
	// Files holds every entry's content by name, the manifest's included.
	Files map[string][]byte
}

// Read reads and checks an archive of at most limit uncompressed bytes:
// every entry the manifest lists is there with its size and SHA-256, and
// nothing else is. It is for tools and tests that look inside an archive
// (the commands print its notes); nothing is extracted to disk.
func Read(r io.Reader, limit int64) (Archive, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return Archive{}, fmt.Errorf("%w: not gzip: %v", ErrBadArchive, err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	a := Archive{Files: map[string][]byte{}}
	var total int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Archive{}, fmt.Errorf("%w: %v", ErrBadArchive, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return Archive{}, fmt.Errorf("%w: entry %q is not a regular file", ErrBadArchive, hdr.Name)
		}
		if _, dup := a.Files[hdr.Name]; dup {
			return Archive{}, fmt.Errorf("%w: entry %q appears twice", ErrBadArchive, hdr.Name)
		}
		if len(a.Files) >= maxEntries {
			return Archive{}, fmt.Errorf("%w: more than %d entries", ErrBadArchive, maxEntries)
		}
		if hdr.Size < 0 || hdr.Size > limit-total {
			return Archive{}, fmt.Errorf("%w: larger than %d bytes", ErrBadArchive, limit)
		}
		b, err := io.ReadAll(io.LimitReader(tr, hdr.Size))
		if err != nil {
			return Archive{}, fmt.Errorf("%w: entry %q: %v", ErrBadArchive, hdr.Name, err)
		}
		total += int64(len(b))
		a.Files[hdr.Name] = b
	}
	mb, ok := a.Files[ManifestName]
	if !ok {
		return Archive{}, fmt.Errorf("%w: no %s", ErrBadArchive, ManifestName)
	}
	if err := json.Unmarshal(mb, &a.Manifest); err != nil {
		return Archive{}, fmt.Errorf("%w: %s: %v", ErrBadArchive, ManifestName, err)
	}
	if a.Manifest.Format != Format {
		return Archive{}, fmt.Errorf("%w: manifest format %d, want %d", ErrBadArchive, a.Manifest.Format, Format)
	}
	listed := map[string]bool{ManifestName: true}
	for _, e := range a.Manifest.Entries {
		b, ok := a.Files[e.Name]
		if !ok || listed[e.Name] {
			return Archive{}, fmt.Errorf("%w: manifest lists %q, which is missing or listed twice", ErrBadArchive, e.Name)
		}
		listed[e.Name] = true
		sum := sha256.Sum256(b)
		if int64(len(b)) != e.Size || hex.EncodeToString(sum[:]) != e.SHA256 {
			return Archive{}, fmt.Errorf("%w: entry %q differs from its size or SHA-256 in the manifest", ErrBadArchive, e.Name)
		}
	}
	for name := range a.Files {
		if !listed[name] {
			return Archive{}, fmt.Errorf("%w: entry %q is not in the manifest", ErrBadArchive, name)
		}
	}
	return a, nil
}

// maxManifest bounds manifest.json as ReadManifest reads it: a few
// hundred entries of a few hundred bytes each.
const maxManifest = 16 << 20

// ReadFile reads the archive at path, as Read does.
func ReadFile(path string, limit int64) (Archive, error) {
	f, err := os.Open(path)
	if err != nil {
		return Archive{}, fmt.Errorf("read diagnostics archive: %w", err)
	}
	defer f.Close()
	a, err := Read(f, limit)
	if err != nil {
		return Archive{}, fmt.Errorf("read diagnostics archive %s: %w", path, err)
	}
	return a, nil
}

// ReadManifest reads only the manifest of an archive, streaming past its
// other entries without holding them: what a command prints after writing
// an archive of up to hundreds of MiB. Unlike Read it checks no entry
// against the manifest.
func ReadManifest(r io.Reader) (Manifest, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: not gzip: %v", ErrBadArchive, err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return Manifest{}, fmt.Errorf("%w: no %s", ErrBadArchive, ManifestName)
		}
		if err != nil {
			return Manifest{}, fmt.Errorf("%w: %v", ErrBadArchive, err)
		}
		if hdr.Name != ManifestName {
			continue // tar.Reader skips the rest of the entry
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size < 0 || hdr.Size > maxManifest {
			return Manifest{}, fmt.Errorf("%w: %s is not a file of at most %d bytes", ErrBadArchive, ManifestName, maxManifest)
		}
		var m Manifest
		if err := json.NewDecoder(io.LimitReader(tr, hdr.Size)).Decode(&m); err != nil {
			return Manifest{}, fmt.Errorf("%w: %s: %v", ErrBadArchive, ManifestName, err)
		}
		if m.Format != Format {
			return Manifest{}, fmt.Errorf("%w: manifest format %d, want %d", ErrBadArchive, m.Format, Format)
		}
		return m, nil
	}
}

// Flatten returns every file of the archive by name, decompressed: the
// files of an archive inside it (an agent's inside the coordinator's)
// under that archive's name ("agent/diagnostics.tar.gz/logs/agent.log"),
// and rotated logs (.gz) as the text they hold. It is how a reader, or a
// test, searches a whole archive. limit bounds each nested archive and
// each decompressed file.
func (a Archive) Flatten(limit int64) (map[string][]byte, error) {
	out := map[string][]byte{}
	for name, b := range a.Files {
		switch {
		case strings.HasSuffix(name, ".tar.gz"):
			inner, err := Read(bytes.NewReader(b), limit)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			files, err := inner.Flatten(limit)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			for n, c := range files {
				out[name+"/"+n] = c
			}
		case strings.HasSuffix(name, ".gz"):
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			c, err := io.ReadAll(io.LimitReader(zr, limit))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			out[name] = c
		default:
			out[name] = b
		}
	}
	return out, nil
}
