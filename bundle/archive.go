package bundle

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"slices"
	"strings"

	"github.com/tendrildeploy/tendril/bundle/tartype"
)

// Allowances on top of the file bytes a manifest declares, for the tar
// framing around them. A well-formed archive needs far less; they exist so
// that the expanded stream has a hard cap computed before any file is read.
const (
	// headerSlack covers the tar headers (and any PAX records) in front of
	// manifest.json, before the manifest says how big the rest is.
	headerSlack = 2 << 20
	// trailerSlack covers the end-of-archive blocks and record padding.
	trailerSlack = 1 << 20
	// rawSlack covers the gzip header, read-ahead and deflate framing.
	rawSlack = 1 << 20
)

// meter counts the bytes read through it and refuses to go past max. It
// remembers whether the cap was hit and the first error of the reader
// under it, so that errors surfacing through gzip and tar can be told
// apart: the caller's I/O error, a bomb, or a malformed archive.
type meter struct {
	r      io.Reader
	n, max int64
	capped bool
	err    error // first error from r other than io.EOF
}

var errCapped = errors.New("read limit reached")

func (m *meter) Read(p []byte) (int, error) {
	if m.n >= m.max {
		m.capped = true
		return 0, errCapped
	}
	if int64(len(p)) > m.max-m.n {
		p = p[:m.max-m.n]
	}
	n, err := m.r.Read(p)
	m.n += int64(n)
	if err != nil && err != io.EOF && m.err == nil {
		m.err = err
	}
	return n, err
}

// readBuffer is the size of each read of a file's content and write of
// it: fewer write syscalls. (The compressed side keeps bufio's small
// buffer, whose read-ahead stays far below what a bomb needs to be
// caught; inflating a stored block reads past it in 32 KiB reads.)
const readBuffer = 256 << 10

// archive reads a bundle: gzip, then tar, with every byte counted on both
// sides of the decompressor.
type archive struct {
	lim Limits
	raw *meter // compressed bytes from the caller
	br  *bufio.Reader
	gz  *gzip.Reader
	out *meter // decompressed bytes
	tr  *tar.Reader
}

func openArchive(r io.Reader, lim Limits) (*archive, error) {
	a := &archive{lim: lim, raw: &meter{r: r}, out: &meter{}}
	a.setBudget(satAdd(lim.MaxManifestSize, headerSlack))
	// Our own bufio.Reader is an io.ByteReader, so gzip and flate read
	// through it without reading ahead of their own; after the gzip member
	// ends, the next byte from it is the first byte after the bundle.
	a.br = bufio.NewReader(a.raw)
	gz, err := gzip.NewReader(a.br)
	if err != nil {
		return nil, a.fail("read gzip header", err)
	}
	// One gzip member is one bundle; anything after it is refused in finish.
	gz.Multistream(false)
	a.gz = gz
	a.out.r = gz
	a.tr = tar.NewReader(a.out)
	return a, nil
}

// setBudget caps the decompressed stream at out bytes in total, and the
// compressed stream in proportion: a deflate stream that produces nothing
// (empty blocks forever) is stopped too.
func (a *archive) setBudget(out int64) {
	a.out.max = out
	a.raw.max = satAdd(satAdd(out, out/64), rawSlack)
}

// fail classifies an error from reading the archive: the caller's reader
// failing is passed on as it is (a broken connection is not a bad bundle),
// a hit cap is ErrUnsafeArchive, and anything else gzip or tar complain
// about (truncation, checksums, garbage) is ErrCorrupt.
func (a *archive) fail(what string, err error) error {
	switch {
	case a.raw.err != nil:
		return fmt.Errorf("%s: read bundle: %w", what, a.raw.err)
	case a.out.capped:
		return fmt.Errorf("%s: %w: it expands beyond %d bytes, more than its manifest allows", what, ErrUnsafeArchive, a.out.max)
	case a.raw.capped:
		return fmt.Errorf("%s: %w: the compressed stream is longer than %d bytes, more than its manifest allows", what, ErrUnsafeArchive, a.raw.max)
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: %w: archive truncated or malformed: %v", what, ErrCorrupt, err)
}

// readManifest reads the first entry, which must be manifest.json, parses
// it, and from then on caps the expanded stream by what the manifest
// declares.
func (a *archive) readManifest() (Manifest, []byte, error) {
	hdr, err := a.tr.Next()
	if err == io.EOF {
		return Manifest{}, nil, fmt.Errorf("read manifest: %w: the archive is empty, no %s", ErrInvalidManifest, ManifestName)
	}
	if err != nil {
		return Manifest{}, nil, a.fail("read manifest", err)
	}
	if hdr.Name != ManifestName {
		return Manifest{}, nil, fmt.Errorf("read manifest: %w: the first entry is %s, want %s", ErrInvalidManifest, quote(hdr.Name), ManifestName)
	}
	if hdr.Typeflag != tar.TypeReg {
		return Manifest{}, nil, fmt.Errorf("read manifest: %w: %s is a %s, want a regular file", ErrUnsafeArchive, ManifestName, tartype.Name(hdr.Typeflag))
	}
	if hdr.Size < 0 || hdr.Size > a.lim.MaxManifestSize {
		return Manifest{}, nil, fmt.Errorf("read manifest: %w: %s is %d bytes, limit %d", ErrInvalidManifest, ManifestName, hdr.Size, a.lim.MaxManifestSize)
	}
	raw := make([]byte, hdr.Size)
	if _, err := io.ReadFull(a.tr, raw); err != nil {
		return Manifest{}, nil, a.fail("read manifest", err)
	}
	m, err := ParseManifest(raw, a.lim)
	if err != nil {
		return Manifest{}, nil, err
	}
	a.setBudget(satAdd(a.out.n, budgetFor(m)))
	return m, raw, nil
}

// budgetFor is the most bytes a tar stream holding exactly m's files (and
// entries for their folders) can need after manifest.json.
func budgetFor(m Manifest) int64 {
	entry := func(name string) int64 {
		// header + PAX header + PAX records for a long name + padding
		return 4*512 + 2*int64(len(name))
	}
	b := int64(trailerSlack)
	for _, f := range m.Files {
		b = satAdd(b, satAdd(f.Size, entry(f.Path)))
	}
	for d := range folders(m) {
		b = satAdd(b, entry(d))
	}
	return b
}

// folders returns every folder that holds a file of m.
func folders(m Manifest) map[string]bool {
	dirs := make(map[string]bool)
	for _, f := range m.Files {
		for d := path.Dir(f.Path); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	return dirs
}

// sink receives what extract accepts: Check discards it, Install writes it
// under its temporary folder.
type sink interface {
	mkdir(dir string) error
	// create opens f for writing; Close must make the content durable.
	create(f File) (io.WriteCloser, error)
}

// extract reads every remaining entry, accepting only the regular files of
// m (each once, with the declared size and hash) and folders of those
// files, then reads the rest of the stream to its end. It checks ctx
// between entries.
func (a *archive) extract(ctx context.Context, m Manifest, s sink) error {
	files := make(map[string]File, len(m.Files))
	for _, f := range m.Files {
		files[f.Path] = f
	}
	dirs := folders(m)
	doneFiles := make(map[string]bool, len(m.Files))
	doneDirs := make(map[string]bool, len(dirs))
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("extract: %w", err)
		}
		hdr, err := a.tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return a.fail("read entry", err)
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			f, ok := files[hdr.Name]
			switch {
			case !ok:
				return fmt.Errorf("extract: %w: %s is not in the manifest", ErrUnsafeArchive, quote(hdr.Name))
			case doneFiles[f.Path]:
				return fmt.Errorf("extract: %w: %s appears twice", ErrUnsafeArchive, quote(f.Path))
			case hdr.Size != f.Size:
				return fmt.Errorf("extract: %w: %s is %d bytes in the archive, the manifest says %d", ErrUnsafeArchive, quote(f.Path), hdr.Size, f.Size)
			case isSparse(hdr):
				return fmt.Errorf("extract: %w: %s is a sparse file", ErrUnsafeArchive, quote(f.Path))
			}
			doneFiles[f.Path] = true
			if err := a.copyFile(s, f); err != nil {
				return err
			}
		case tar.TypeDir:
			d := strings.TrimSuffix(hdr.Name, "/")
			switch {
			case !dirs[d]:
				return fmt.Errorf("extract: %w: folder %s holds no file of the manifest", ErrUnsafeArchive, quote(hdr.Name))
			case doneDirs[d]:
				return fmt.Errorf("extract: %w: folder %s appears twice", ErrUnsafeArchive, quote(d))
			}
			doneDirs[d] = true
			if err := s.mkdir(d); err != nil {
				return err
			}
		default:
			return fmt.Errorf("extract: %w: %s is a %s; a bundle holds only regular files and folders", ErrUnsafeArchive, quote(hdr.Name), tartype.Name(hdr.Typeflag))
		}
	}
	var missing []string
	for _, f := range m.Files {
		if !doneFiles[f.Path] {
			missing = append(missing, f.Path)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		more := ""
		if len(missing) > 5 {
			more = fmt.Sprintf(" and %d more", len(missing)-5)
			missing = missing[:5]
		}
		return fmt.Errorf("extract: %w: missing %s%s", ErrCorrupt, strings.Join(missing, ", "), more)
	}
	return a.finish()
}

// copyFile copies the current entry into s, hashing as it goes. The caller
// checked that the entry's size is f.Size.
func (a *archive) copyFile(s sink, f File) error {
	w, err := s.create(f)
	if err != nil {
		return err
	}
	h := sha256.New()
	buf := make([]byte, min(readBuffer, f.Size))
	var n int64
	for n < f.Size {
		chunk := buf[:min(int64(len(buf)), f.Size-n)]
		k, rerr := io.ReadFull(a.tr, chunk)
		if k > 0 {
			h.Write(chunk[:k])
			if _, werr := w.Write(chunk[:k]); werr != nil {
				w.Close()
				return fmt.Errorf("extract %s: %w", f.Path, werr)
			}
			n += int64(k)
		}
		if rerr != nil {
			w.Close()
			return a.fail("extract "+f.Path, rerr)
		}
	}
	// tar framing makes this impossible today; it is cheap insurance that
	// an entry never yields more than it declared.
	var one [1]byte
	if k, _ := a.tr.Read(one[:]); k > 0 {
		w.Close()
		return fmt.Errorf("extract: %w: %s is longer than declared", ErrUnsafeArchive, quote(f.Path))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		w.Close()
		return fmt.Errorf("extract: %w: %s has sha256 %s, the manifest says %s", ErrCorrupt, quote(f.Path), got, f.SHA256)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("extract %s: %w", f.Path, err)
	}
	return nil
}

// finish reads what follows the tar end-of-archive marker to the end of
// the gzip member, which verifies gzip's checksum and length (a bundle cut
// short is caught even when every file arrived), requires that padding to
// be zeros (nothing hides after the archive), and requires the input to
// end with the gzip member.
func (a *archive) finish() error {
	buf := make([]byte, 32<<10)
	for {
		n, err := a.out.Read(buf)
		for _, c := range buf[:n] {
			if c != 0 {
				return fmt.Errorf("read end of archive: %w: data after the tar end-of-archive marker", ErrUnsafeArchive)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return a.fail("read end of archive", err)
		}
	}
	if _, err := a.br.ReadByte(); err != io.EOF {
		if err != nil {
			return a.fail("read end of archive", err)
		}
		return fmt.Errorf("read end of archive: %w: data after the end of the gzip stream", ErrUnsafeArchive)
	}
	return nil
}

// isSparse reports GNU and PAX sparse files, whose holes tar would expand
// from nothing.
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// satAdd adds two non-negative numbers, saturating instead of overflowing
// when a limit is effectively unbounded.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// discard is the sink of Check.
type discard struct{}

func (discard) mkdir(string) error { return nil }

func (discard) create(File) (io.WriteCloser, error) { return nopCloser{io.Discard}, nil }

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// Check reads a whole bundle archive and proves that it matches its
// manifest, writing nothing: the same rules as Install except the
// signature, which Check does not need (the coordinator runs it on an
// upload before signing). It returns the parsed manifest and the manifest
// bytes exactly as they appear in the archive.
func Check(ctx context.Context, r io.Reader, lim Limits) (Manifest, []byte, error) {
	a, err := openArchive(r, lim.withDefaults())
	if err != nil {
		return Manifest{}, nil, fmt.Errorf("check bundle: %w", err)
	}
	m, raw, err := a.readManifest()
	if err != nil {
		return Manifest{}, nil, fmt.Errorf("check bundle: %w", err)
	}
	if err := a.extract(ctx, m, discard{}); err != nil {
		return Manifest{}, nil, fmt.Errorf("check bundle %s %s: %w", m.Name, m.Version, err)
	}
	return m, raw, nil
}
