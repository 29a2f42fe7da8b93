package version

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Symbol is the full name of the variable the version is stamped into, as
// -ldflags -X names it.
const Symbol = "github.com/tendrildeploy/tendril/version.Version"

// Errors of ReadBinary, for callers that explain them.
var (
	// ErrNotGo: the file carries no Go build information.
	ErrNotGo = errors.New("the file is not a Go program (it has no Go build information)")
	// ErrNoVersion: a Go program in which no Tendril version is found.
	ErrNoVersion = errors.New("no Tendril version is built into the binary")
)

// Binary is what a Go binary says about itself, read without running it.
type Binary struct {
	// Version is the value of Symbol in the binary: what the binary
	// reports as its version when run.
	Version string
	// OS and Arch are the platform it was built for (GOOS, GOARCH).
	OS, Arch string
}

// ReadBinary reads the Tendril version and platform built into a Go
// executable (ELF, PE or Mach-O) without running it.
//
// The platform comes from Go's build information (debug/buildinfo). The
// version is read from the variable itself, through the symbol table:
// the build information records -ldflags only when the binary was built
// without -trimpath, and release builds use -trimpath (Makefile,
// scripts/dist.sh). The recorded -ldflags are the fallback for a binary
// stripped of its symbol table (-s) but built without -trimpath.
func ReadBinary(r io.ReaderAt) (Binary, error) {
	bi, err := buildinfo.Read(r)
	if err != nil {
		return Binary{}, fmt.Errorf("read build information: %w: %v", ErrNotGo, err)
	}
	var b Binary
	var ldflags string
	for _, s := range bi.Settings {
		switch s.Key {
		case "GOOS":
			b.OS = s.Value
		case "GOARCH":
			b.Arch = s.Value
		case "-ldflags":
			ldflags = s.Value
		}
	}
	v, symtab, err := symbolString(r, Symbol)
	if err != nil {
		return Binary{}, fmt.Errorf("read %s: %w", Symbol, err)
	}
	if v != "" {
		b.Version = v
		return b, nil
	}
	if v, ok := ldflagsValue(ldflags, Symbol); ok {
		b.Version = v
		return b, nil
	}
	if !symtab && ldflags == "" {
		return Binary{}, fmt.Errorf("%w: it has no symbol table (built with -ldflags -s) and no recorded -ldflags (built with -trimpath), so its version cannot be read; rebuild it without -s", ErrNoVersion)
	}
	return Binary{}, fmt.Errorf("%w: it has no %s; is it tendril-agent?", ErrNoVersion, Symbol)
}

// ldflagsValue returns the value the last -X flag in ldflags gives name.
func ldflagsValue(ldflags, name string) (string, bool) {
	var value string
	var found bool
	f := strings.Fields(ldflags)
	for i := 0; i < len(f); i++ {
		var arg string
		switch {
		case f[i] == "-X" || f[i] == "--X":
			if i+1 < len(f) {
				i++
				arg = f[i]
			}
		case strings.HasPrefix(f[i], "-X="):
			arg = f[i][len("-X="):]
		case strings.HasPrefix(f[i], "--X="):
			arg = f[i][len("--X="):]
		}
		if v, ok := strings.CutPrefix(strings.Trim(arg, `"'`), name+"="); ok {
			value, found = strings.Trim(v, `"'`), true
		}
	}
	return value, found
}

// image is the little of an executable that reading a string variable
// needs.
type image struct {
	order   binary.ByteOrder
	ptrSize int
	// symbol returns the virtual address of a symbol; symtab says
	// whether there was a symbol table to look in.
	symbol func(name string) (addr uint64, ok, symtab bool)
	// read reads n bytes at a virtual address.
	read func(addr uint64, n int) ([]byte, error)
}

// symbolString returns the value of the Go string variable name, or ""
// when the binary has no such symbol; symtab reports whether it has a
// symbol table at all.
func symbolString(r io.ReaderAt, name string) (value string, symtab bool, err error) {
	img, err := openImage(r)
	if err != nil {
		return "", false, err
	}
	addr, ok, symtab := img.symbol(name)
	if !ok {
		return "", symtab, nil
	}
	// A string variable is its header: a pointer to the bytes, then the
	// length, each one word.
	hdr, err := img.read(addr, 2*img.ptrSize)
	if err != nil {
		return "", true, fmt.Errorf("string header: %w", err)
	}
	word := func(b []byte) uint64 {
		if img.ptrSize == 8 {
			return img.order.Uint64(b)
		}
		return uint64(img.order.Uint32(b))
	}
	ptr, n := word(hdr), word(hdr[img.ptrSize:])
	if n == 0 {
		return "", true, errors.New("the version is empty")
	}
	if n > 256 {
		return "", true, fmt.Errorf("string length %d: not a version", n)
	}
	b, err := img.read(ptr, int(n))
	if err != nil {
		return "", true, fmt.Errorf("string data: %w", err)
	}
	if !utf8.Valid(b) || bytes.ContainsFunc(b, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", true, fmt.Errorf("%q: not a version", b)
	}
	return string(b), true, nil
}

// openImage recognizes the executable's format.
func openImage(r io.ReaderAt) (*image, error) {
	var magic [4]byte
	if _, err := r.ReadAt(magic[:], 0); err != nil {
		return nil, fmt.Errorf("read magic: %w", err)
	}
	switch {
	case string(magic[:]) == elf.ELFMAG:
		return elfImage(r)
	case string(magic[:2]) == "MZ":
		return peImage(r)
	default:
		return machoImage(r)
	}
}

func elfImage(r io.ReaderAt) (*image, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("open ELF: %w", err)
	}
	img := &image{order: f.ByteOrder, ptrSize: 8}
	if f.Class == elf.ELFCLASS32 {
		img.ptrSize = 4
	}
	img.symbol = func(name string) (uint64, bool, bool) {
		syms, err := f.Symbols()
		if err != nil {
			return 0, false, false // elf.ErrNoSymbols: stripped
		}
		for _, s := range syms {
			if s.Name == name {
				return s.Value, true, true
			}
		}
		return 0, false, true
	}
	img.read = func(addr uint64, n int) ([]byte, error) {
		for _, p := range f.Progs {
			if p.Type == elf.PT_LOAD && addr >= p.Vaddr && addr+uint64(n) <= p.Vaddr+p.Filesz {
				b := make([]byte, n)
				_, err := p.ReadAt(b, int64(addr-p.Vaddr))
				return b, err
			}
		}
		return nil, fmt.Errorf("address 0x%x is in no loaded segment", addr)
	}
	return img, nil
}

func peImage(r io.ReaderAt) (*image, error) {
	f, err := pe.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("open PE: %w", err)
	}
	img := &image{order: binary.LittleEndian}
	var base uint64
	switch oh := f.OptionalHeader.(type) {
	case *pe.OptionalHeader64:
		base, img.ptrSize = oh.ImageBase, 8
	case *pe.OptionalHeader32:
		base, img.ptrSize = uint64(oh.ImageBase), 4
	default:
		return nil, errors.New("open PE: no optional header")
	}
	img.symbol = func(name string) (uint64, bool, bool) {
		for _, s := range f.Symbols {
			// Section numbers start at 1; 0 and below are undefined,
			// absolute or debugging symbols.
			if s.Name == name && s.SectionNumber > 0 && int(s.SectionNumber) <= len(f.Sections) {
				sect := f.Sections[s.SectionNumber-1]
				return base + uint64(sect.VirtualAddress) + uint64(s.Value), true, true
			}
		}
		return 0, false, len(f.Symbols) > 0
	}
	img.read = func(addr uint64, n int) ([]byte, error) {
		for _, s := range f.Sections {
			start := base + uint64(s.VirtualAddress)
			if addr >= start && addr+uint64(n) <= start+uint64(min(s.VirtualSize, s.Size)) {
				b := make([]byte, n)
				_, err := s.ReadAt(b, int64(addr-start))
				return b, err
			}
		}
		return nil, fmt.Errorf("address 0x%x is in no section", addr)
	}
	return img, nil
}

func machoImage(r io.ReaderAt) (*image, error) {
	f, err := macho.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("open Mach-O: %w", err)
	}
	img := &image{order: f.ByteOrder, ptrSize: 8}
	if f.Magic == macho.Magic32 {
		img.ptrSize = 4
	}
	img.symbol = func(name string) (uint64, bool, bool) {
		if f.Symtab == nil {
			return 0, false, false
		}
		for _, s := range f.Symtab.Syms {
			// Mach-O prefixes C-visible names with an underscore.
			if s.Name == name || s.Name == "_"+name {
				return s.Value, true, true
			}
		}
		return 0, false, len(f.Symtab.Syms) > 0
	}
	img.read = func(addr uint64, n int) ([]byte, error) {
		for _, l := range f.Loads {
			seg, ok := l.(*macho.Segment)
			if ok && addr >= seg.Addr && addr+uint64(n) <= seg.Addr+seg.Filesz {
				b := make([]byte, n)
				_, err := seg.ReadAt(b, int64(addr-seg.Addr))
				return b, err
			}
		}
		return nil, fmt.Errorf("address 0x%x is in no segment", addr)
	}
	return img, nil
}
