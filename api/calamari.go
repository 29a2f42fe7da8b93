package api

import "time"

// MaxBundleSize bounds an uploaded Calamari bundle.
const MaxBundleSize = 2 << 30

// BundleView is a stored Calamari bundle as the API shows it.
type BundleView struct {
	Version    string    `json:"version"`
	SHA256     string    `json:"sha256"`
	Size       int64     `json:"size"`
	UploadedAt time.Time `json:"uploaded_at"`
	Latest     bool      `json:"latest"`
	Platforms  []string  `json:"platforms"`
	Created    bool      `json:"created,omitempty"` // set by upload: false when the same bundle was already stored
}

// UpdateResult is the outcome of a manual Calamari update for one agent.
type UpdateResult struct {
	Agent   string `json:"agent"`
	Version string `json:"version"`
	// Result is "installed", "current" (nothing to do) or "failed".
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
}

// UpdateTarget names the agents of a manual update: one agent or every
// agent of an environment.
type UpdateTarget struct {
	Agent       string `json:"agent,omitempty"`
	Environment string `json:"environment,omitempty"`
}
