package api

import "time"

// MaxAgentPackageSize bounds an uploaded agent binary.
const MaxAgentPackageSize = 512 << 20

// The platforms an agent package may be uploaded for: the coordinator
// refuses others, and the OpenAPI document lists them.
var (
	PackageOSes   = []string{"linux", "windows", "darwin"}
	PackageArches = []string{"amd64", "arm64", "386", "arm"}
)

// AgentPackageView is a stored agent package as the API shows it.
type AgentPackageView struct {
	Version    string    `json:"version"`
	OS         string    `json:"os"`
	Arch       string    `json:"arch"`
	SHA256     string    `json:"sha256"`
	Size       int64     `json:"size"`
	UploadedAt time.Time `json:"uploaded_at"`
	Created    bool      `json:"created,omitempty"` // set by upload: false when the same binary was already stored
}

// RolloutRequest is the body of POST /api/rollouts.
type RolloutRequest struct {
	// Environment, All or Agents: exactly one.
	Environment string `json:"environment,omitempty"`
	All         bool   `json:"all,omitempty"`
	// Agents names the agents to upgrade, e.g. the one a machine page
	// shows; every name must be registered.
	Agents []string `json:"agents,omitempty"`
	// Version is the agent version to install; "" means the newest
	// package stored.
	Version string `json:"version,omitempty"`
	// Batch is how many agents are upgraded at once; 0 means the machine
	// policy's (10 unless an operator changed it).
	Batch int `json:"batch,omitempty"`
	// MaxFailures is how many agents may fail or roll back before the
	// rollout halts; 0 halts at the first, nil means the machine policy's
	// (0 unless an operator changed it).
	MaxFailures    *int `json:"max_failures,omitempty"`
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
	// GraceSeconds is how long a new version has to connect and commit
	// before the agent's watchdog restores the previous one; 0 means the
	// coordinator's default (Config.UpgradeGrace).
	GraceSeconds int `json:"grace_seconds,omitempty"`
}

// RolloutView is a rollout as the API shows it.
type RolloutView struct {
	ID          string `json:"id"`
	Environment string `json:"environment,omitempty"`
	All         bool   `json:"all"`
	// TargetAgents is set when the rollout was asked for by agent name
	// (RolloutRequest.Agents): the names it upgrades.
	TargetAgents   []string `json:"target_agents,omitempty"`
	Version        string   `json:"version"`
	Batch          int      `json:"batch"`
	MaxFailures    int      `json:"max_failures"`
	AllowDowngrade bool     `json:"allow_downgrade,omitempty"`
	GraceSeconds   int      `json:"grace_seconds"`
	State          string   `json:"state"`
	Reason         string   `json:"reason,omitempty"`
	// Paused is set while an operator has halted a running rollout (POST
	// /api/rollouts/{id}/halt): no further batch starts until it is
	// resumed. PausedAt is when it was halted.
	Paused     bool               `json:"paused,omitempty"`
	PausedAt   *time.Time         `json:"paused_at,omitempty"`
	CreatedAt  time.Time          `json:"created_at"`
	FinishedAt *time.Time         `json:"finished_at,omitempty"`
	Counts     map[string]int     `json:"counts"`
	Agents     []RolloutAgentView `json:"agents,omitempty"`
}

// RolloutAgentView is one agent's progress in a rollout. Batch 0 holds
// the agents that were already at the version.
type RolloutAgentView struct {
	Agent     string    `json:"agent"`
	Batch     int       `json:"batch"`
	From      string    `json:"from"`
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Rollout states, as RolloutView.State says them.
const (
	RolloutRunning   = "running"
	RolloutSucceeded = "succeeded"
	RolloutHalted    = "halted"
)

// States of one agent in a rollout (RolloutAgentView.State), in the order
// they normally happen. Succeeded, RolledBack and Failed are final.
const (
	UpgradeQueued            = "queued"
	UpgradeWaitingForIdle    = "waiting_for_idle"
	UpgradeSending           = "sending"
	UpgradeInstalling        = "installing"
	UpgradeAwaitingReconnect = "awaiting_reconnect"
	UpgradeSucceeded         = "succeeded"
	UpgradeRolledBack        = "rolled_back"
	UpgradeFailed            = "failed"
)

// UpgradeFinal reports whether an agent's rollout state is final.
func UpgradeFinal(state string) bool {
	return state == UpgradeSucceeded || state == UpgradeRolledBack || state == UpgradeFailed
}
