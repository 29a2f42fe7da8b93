package bundle

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// packTime is the modification time of every entry Pack writes, so that
// the same files always make the same archive, byte for byte.
var packTime = time.Unix(0, 0)

// Pack builds a bundle from the files under srcDir: it hashes every file,
// then writes a tar.gz to w whose first entry is manifest.json, followed by
// the files sorted by path. entrypoints maps "os/arch" to a slash path
// under srcDir. A file is 0755 if it is an entry point or has any execute
// bit, else 0644. Only regular files and folders are allowed; empty
// folders are not kept. It returns the manifest written.
func Pack(ctx context.Context, w io.Writer, name, version, srcDir string, entrypoints map[string]string) (Manifest, error) {
	m, err := scanSource(ctx, name, version, srcDir, entrypoints)
	if err != nil {
		return Manifest{}, fmt.Errorf("pack %s: %w", srcDir, err)
	}
	raw, err := m.Encode()
	if err != nil {
		return Manifest{}, fmt.Errorf("pack %s: %w", srcDir, err)
	}
	if err := writeArchive(ctx, w, srcDir, m, raw); err != nil {
		return Manifest{}, fmt.Errorf("pack %s: %w", srcDir, err)
	}
	return m, nil
}

func scanSource(ctx context.Context, name, version, srcDir string, entrypoints map[string]string) (Manifest, error) {
	// WalkDir does not follow a symbolic link even as its root; a source
	// folder reached through one (macOS's /var, say) is still a folder.
	srcDir, err := filepath.EvalSymlinks(srcDir)
	if err != nil {
		return Manifest{}, err
	}
	m := Manifest{Name: name, Version: version, Entrypoints: maps.Clone(entrypoints)}
	isEntry := make(map[string]bool, len(entrypoints))
	for _, p := range entrypoints {
		isEntry[p] = true
	}
	err = filepath.WalkDir(srcDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(srcDir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is a %s; a bundle holds only regular files and folders", rel, kind(d.Type()))
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := uint32(0o644)
		if isEntry[rel] || info.Mode().Perm()&0o111 != 0 {
			mode = 0o755
		}
		sum, size, err := hashFile(p)
		if err != nil {
			return err
		}
		m.Files = append(m.Files, File{Path: rel, Size: size, Mode: mode, SHA256: sum})
		return nil
	})
	if err != nil {
		return Manifest{}, err
	}
	slices.SortFunc(m.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return m, nil
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func writeArchive(ctx context.Context, w io.Writer, srcDir string, m Manifest, raw []byte) error {
	gz, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(header(ManifestName, int64(len(raw)), 0o644)); err != nil {
		return err
	}
	if _, err := tw.Write(raw); err != nil {
		return err
	}
	for _, f := range m.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := tw.WriteHeader(header(f.Path, f.Size, f.Mode)); err != nil {
			return err
		}
		if err := copyChecked(tw, filepath.Join(srcDir, filepath.FromSlash(f.Path)), f); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func header(name string, size int64, mode uint32) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     int64(mode),
		ModTime:  packTime,
	}
}

// copyChecked copies a file into the archive and checks that it is still
// what was hashed: a file changed between the two reads would otherwise
// make a bundle that never installs.
func copyChecked(w io.Writer, p string, f File) error {
	fh, err := os.Open(p)
	if err != nil {
		return err
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(fh, f.Size))
	if err != nil {
		return fmt.Errorf("copy %s: %w", f.Path, err)
	}
	if n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
		return fmt.Errorf("%s changed while the bundle was being packed", f.Path)
	}
	return nil
}
