package api

import "time"

// PolicyView is the machine policy as the API shows it.
type PolicyView struct {
	// HealthInterval is how often every connected agent is checked, as a
	// Go duration ("1m0s").
	HealthInterval string `json:"health_interval"`
	// HealthIntervalSeconds is the same, for scripts.
	HealthIntervalSeconds float64 `json:"health_interval_seconds"`
	// CalamariKeep is how many Calamari versions each agent keeps.
	CalamariKeep int `json:"calamari_keep"`
	// UpgradeBatch and UpgradeMaxFailures apply to rollouts started
	// without a batch size or a failure budget.
	UpgradeBatch       int `json:"upgrade_batch"`
	UpgradeMaxFailures int `json:"upgrade_max_failures"`
	// WorkKeep is how many finished task folders (Work/<ticket>, with
	// their logs, pushed packages and artifacts) each agent keeps, newest
	// first; older ones go once they finished more than an hour ago.
	WorkKeep int `json:"work_keep"`
	// WorkMinFree is the free-space floor of the file system holding each
	// agent's home, as FormatSize writes it ("2GiB"), "0" for none: below
	// it an agent removes its oldest finished task folders, the kept ones
	// included, until free space is back above it.
	WorkMinFree string `json:"work_min_free"`
	// WorkMinFreeBytes is the same, for scripts.
	WorkMinFreeBytes int64 `json:"work_min_free_bytes"`
	// SetBy is "default", "flag" or "operator".
	SetBy     string     `json:"set_by"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
}

// PolicyRequest is the body of PUT /api/policy. Fields left out keep their
// stored value.
type PolicyRequest struct {
	// HealthInterval is a Go duration such as 30s or 2m, at least 1s.
	HealthInterval     *string `json:"health_interval,omitempty" schema:"duration"`
	CalamariKeep       *int    `json:"calamari_keep,omitempty"`
	UpgradeBatch       *int    `json:"upgrade_batch,omitempty"`
	UpgradeMaxFailures *int    `json:"upgrade_max_failures,omitempty"`
	// WorkKeep is 0 or more; 0 keeps no finished task folder past the
	// hour after it finished.
	WorkKeep *int `json:"work_keep,omitempty"`
	// WorkMinFree is a size ParseSize reads ("2GiB", "500MB", bytes), "0"
	// for no floor.
	WorkMinFree *string `json:"work_min_free,omitempty" schema:"size"`
}
