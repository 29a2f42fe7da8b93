package api

import "time"

// UpdatesView is the answer of GET /api/updates: whether a newer
// coordinator than this one is listed in the release feed.
type UpdatesView struct {
	// Current is this coordinator's version.
	Current string `json:"current"`
	// Latest is the newest release above Current, or "".
	Latest          string `json:"latest"`
	UpdateAvailable bool   `json:"update_available"`
	// Breaking is true when any release above Current up to Latest has
	// breaking changes.
	Breaking bool   `json:"breaking"`
	NotesURL string `json:"notes_url"`
	Notes    string `json:"notes"`
	// CheckedAt is when the feed was last read successfully; nil before.
	CheckedAt *time.Time `json:"checked_at"`
	// Error is the last failure to read the feed, "" once a read succeeds
	// again. The result of the last good read is kept meanwhile.
	Error string `json:"error"`
}
