package protocol

import (
	"encoding/json"
	"fmt"
)

// Message types for agent self-upgrade. Coordinator -> agent:
// AgentUpgrade -> PushReady, then the package bytes, then -> UpgradeReady
// once the agent has verified, smoke-tested and swapped in the new binary;
// it then restarts into it. Success is only ever concluded from the new
// version's Hello.
const (
	TypeAgentUpgrade = "agent_upgrade"
	TypeUpgradeReady = "upgrade_ready"
)

// AgentPackage describes one agent binary. The coordinator signs its
// SigningBytes with its Ed25519 key at upload; agents verify the signature
// with the key learned at registration before using the binary.
type AgentPackage struct {
	Version string `json:"version"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	SHA256  string `json:"sha256"` // of the binary
	Size    int64  `json:"size"`
}

// agentPackageDomain separates agent package signatures from every other
// use of the signing key (Calamari manifests).
const agentPackageDomain = "tendril agent package v1\n"

// SigningBytes is what is signed: a domain prefix and the canonical JSON
// of the package description.
func (p AgentPackage) SigningBytes() []byte {
	b, err := json.Marshal(p) // field order is fixed by the struct
	if err != nil {
		panic(fmt.Sprintf("marshal agent package: %v", err)) // only strings and an int64
	}
	return append([]byte(agentPackageDomain), b...)
}

// AgentUpgrade offers a new agent binary.
type AgentUpgrade struct {
	RolloutID string       `json:"rollout_id"`
	Package   AgentPackage `json:"package"`
	Signature []byte       `json:"signature"`
	// AllowDowngrade permits a version lower than the running one.
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
	// GraceSeconds is how long the new version has to connect and commit
	// before the watchdog restores the previous binary.
	GraceSeconds int `json:"grace_seconds"`
}

// UpgradeReady says the new binary is verified, passed its smoke test and
// is in place; the agent restarts into it after replying.
type UpgradeReady struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Upgrade outcomes an agent reports in its Hello after an upgrade.
const (
	UpgradeCommitted  = "committed"   // the new version connected and committed
	UpgradeRolledBack = "rolled_back" // the watchdog restored the previous binary
	UpgradeFailed     = "failed"      // refused or failed before the swap
)

// UpgradeReport tells the coordinator how the agent's last upgrade ended.
// The agent sends it in every Hello until a Welcome acknowledges it.
type UpgradeReport struct {
	RolloutID string `json:"rollout_id"`
	From      string `json:"from"`
	To        string `json:"to"`
	Result    string `json:"result"`
	Reason    string `json:"reason,omitempty"`
}
