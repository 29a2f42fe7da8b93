package api

// MaxExportSize bounds an export file sent to POST /api/import: room for
// a few Calamari bundles and agent packages for every platform.
const MaxExportSize = 16 << 30

// ImportOptions tune POST /api/import (as query parameters).
type ImportOptions struct {
	// AllowDowngrade imports items older than what the fleet runs (an
	// agent package older than the newest agent of its platform, a
	// Calamari bundle older than the latest stored); a backup snapshot of
	// the database is taken first.
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
	// SourceKey, if set, is the signing key (hex) the export must have
	// been signed with: the exporting coordinator's, from its
	// "tendril-server info".
	SourceKey string `json:"source_key,omitempty"`
	// TrustAnySource imports without SourceKey. The file is still checked
	// whole, but nothing then says which coordinator made it.
	TrustAnySource bool `json:"trust_any_source,omitempty"`
	// BackedUp says the operator backed the database up with its own
	// tools, for a downgrade on a database the coordinator cannot copy
	// (PostgreSQL).
	BackedUp bool `json:"backed_up,omitempty"`
}

// ImportResult reports an import.
type ImportResult struct {
	// SourceKey and SourceVersion are the exporting coordinator's signing
	// key and version, as the verified export says.
	SourceKey     string `json:"source_key"`
	SourceVersion string `json:"source_version"`
	// SigningKey is this coordinator's: every imported item is stored
	// signed with it, the key its agents pinned at enrollment, after its
	// source signature verified.
	SigningKey string `json:"signing_key"`
	// Refusing names the agents connected to this node that pinned
	// another signing key than this coordinator's: they will refuse the
	// imported items, as everything else signed here, until registered
	// again.
	Refusing []string `json:"refusing,omitempty"`
	// Snapshot names the copy of the database taken before a downgrade,
	// a file in the data folder.
	Snapshot string         `json:"snapshot,omitempty"`
	Items    []ImportedItem `json:"items"`
}

// ImportedItem is one item of an import.
type ImportedItem struct {
	Kind    string `json:"kind"` // "calamari" or "agent"
	Version string `json:"version"`
	OS      string `json:"os,omitempty"`
	Arch    string `json:"arch,omitempty"`
	// Result is "imported", "present" (the same content was stored
	// already) or "failed".
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
}
