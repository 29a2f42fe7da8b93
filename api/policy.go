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
	// SetBy is "default", "flag" or "operator".
	SetBy     string     `json:"set_by"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
}

// PolicyRequest is the body of PUT /api/policy. Fields left out keep their
// stored value.
type PolicyRequest struct {
	// HealthInterval is a Go duration such as 30s or 2m, at least 1s.
	HealthInterval     *string `json:"health_interval,omitempty"`
	CalamariKeep       *int    `json:"calamari_keep,omitempty"`
	UpgradeBatch       *int    `json:"upgrade_batch,omitempty"`
	UpgradeMaxFailures *int    `json:"upgrade_max_failures,omitempty"`
}
