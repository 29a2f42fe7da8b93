// Package bundle is the Calamari bundle format: a .tar.gz whose first entry
// is manifest.json, describing every file with its size, mode and SHA-256,
// and the entry point for each os/arch. The coordinator signs the manifest
// with its Ed25519 key; agents verify the signature before installing and
// before every use.
//
// On an agent an installed bundle is a folder holding the files,
// manifest.json, manifest.sig and, written last after everything was
// verified and synced, Success.txt. A folder without Success.txt is not an
// installed bundle.
package bundle

import "errors"

// tempPrefix starts the name of every folder Install works in before it
// renames the result into place. Scan ignores such folders and Prune
// removes stale ones, so a crash leaves nothing that looks installed.
const tempPrefix = ".tmp-"

// Names of the files that describe an installed bundle.
const (
	ManifestName  = "manifest.json"
	SignatureName = "manifest.sig"
	SuccessName   = "Success.txt"
)

// Limits bound what an archive may make the extractor do.
type Limits struct {
	// MaxFiles is the most files a manifest may list. Default 10,000.
	MaxFiles int
	// MaxTotalSize is the most bytes all files may add up to once
	// extracted. Default 1 GiB.
	MaxTotalSize int64
	// MaxManifestSize is the largest manifest.json accepted. Default 4 MiB.
	MaxManifestSize int64
}

// DefaultLimits returns the limits used wherever a Limits field is zero (or
// negative).
func DefaultLimits() Limits {
	return Limits{MaxFiles: 10_000, MaxTotalSize: 1 << 30, MaxManifestSize: 4 << 20}
}

// withDefaults fills the zero fields of l from DefaultLimits, so callers can
// override one limit without restating the others.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxTotalSize <= 0 {
		l.MaxTotalSize = d.MaxTotalSize
	}
	if l.MaxManifestSize <= 0 {
		l.MaxManifestSize = d.MaxManifestSize
	}
	return l
}

// Errors callers branch on. Functions wrap them with the detail.
var (
	// ErrInvalidManifest means the manifest is malformed or unsafe.
	ErrInvalidManifest = errors.New("invalid bundle manifest")
	// ErrBadSignature means the manifest signature does not verify.
	ErrBadSignature = errors.New("bundle manifest signature does not verify")
	// ErrUnsafeArchive means the archive holds something that must never be
	// extracted: an absolute path, "..", a link, a device, a file not in
	// the manifest, or more data than the manifest or the limits allow.
	ErrUnsafeArchive = errors.New("unsafe bundle archive")
	// ErrCorrupt means a file's content differs from the manifest (size or
	// hash), or a file is missing.
	ErrCorrupt = errors.New("bundle content does not match its manifest")
	// ErrNotInstalled means the folder has no Success.txt.
	ErrNotInstalled = errors.New("bundle is not installed")
	// ErrNoEntrypoint means the bundle has no entry point for a platform.
	ErrNoEntrypoint = errors.New("bundle has no entry point for this platform")
)
