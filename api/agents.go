package api

import "time"

// Upgrade states of an agent, as the API shows them.
const (
	UpgradeNone        = "none"
	UpgradeRecommended = "recommended"
	UpgradeRequired    = "required"
)

// AgentView is an agent as GET /api/agents shows it. The fields named in
// DESIGN.md section 7 are a contract.
type AgentView struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	Environment     string `json:"environment"`
	Version         string `json:"version"`
	Connected       bool   `json:"connected"`
	Health          string `json:"health"`
	HealthDetail    string `json:"health_detail"`
	TLSVersion      string `json:"tls_version"`
	Thumbprint      string `json:"thumbprint"`
	CalamariVersion string `json:"calamari_version"`
	CalamariCurrent bool   `json:"calamari_current"`
	Upgrade         string `json:"upgrade"`
	// UpgradeTo is the agent version recommended ("" if none).
	UpgradeTo string `json:"upgrade_to,omitempty"`
	// Node names the coordinator node the agent is connected to, "" when
	// it is not connected.
	Node string `json:"node,omitempty"`
	// NodeState is the state of the coordinator node that recorded the
	// agent's session, as nodes list shows it (running, draining,
	// stopped, dead), or late for a node still counted alive that has
	// missed a heartbeat; "" when no node records a session. An
	// agent whose node is late is shown connected with a warning saying
	// so; one whose node is dead or stopped is not connected, and its
	// health detail names the node.
	NodeState       string    `json:"node_state,omitempty"`
	LastSeen        string    `json:"last_seen"`
	OS              string    `json:"os"`
	Arch            string    `json:"arch"`
	Protocol        int       `json:"protocol"`
	DiskFree        int64     `json:"disk_free"`
	HealthRTTMillis float64   `json:"health_rtt_ms"`
	RegisteredAt    time.Time `json:"registered_at"`
	LastHealthAt    string    `json:"last_health_at"`
	// Mode is how the agent's session is made: ModePolling (the agent
	// dials the coordinator) or ModeListening (the coordinator dials the
	// agent at Address).
	Mode string `json:"mode"`
	// Address is where the coordinator dials a listening agent.
	Address string `json:"address,omitempty"`
	// DialError is why the coordinator's last dial to a listening agent
	// failed, "" once one succeeded.
	DialError string `json:"dial_error,omitempty"`
	// Work is what the agent last reported of its task folders and their
	// retention; absent for agents too old to report it and before the
	// first report.
	Work *AgentWork `json:"work,omitempty"`
	// Features are what the agent said it can do when it last connected
	// ("task_isolation", "task_variables", "work_retention").
	Features []string `json:"features,omitempty"`
	// Lacks names, in words, what this coordinator offers that the
	// agent's version cannot do ("task variables, output variables and
	// artifacts"); upgrading the agent brings them. Empty when it lacks
	// nothing, or has never connected.
	Lacks []string `json:"lacks,omitempty"`
}

// AgentWork is an agent's task folders (<home>/Work) as it last reported
// them, and the retention rule it applied.
type AgentWork struct {
	// Tasks counts the task folders, running and finished.
	Tasks int `json:"tasks"`
	// Running counts those of running or waiting tasks, which retention
	// never removes.
	Running int `json:"running"`
	// Bytes is the size of everything under Work.
	Bytes int64 `json:"bytes"`
	// Keep and MinFreeBytes are the rule the agent applies: the machine
	// policy's once a coordinator told it, its own default before.
	Keep         int   `json:"keep"`
	MinFreeBytes int64 `json:"min_free_bytes"`
	// LastCleanup is when retention last ran, nil if never.
	LastCleanup *time.Time `json:"last_cleanup,omitempty"`
	// LastRemoved counts the folders the last cleanup removed;
	// RemovedTotal those removed since the agent started.
	LastRemoved  int   `json:"last_removed"`
	RemovedTotal int64 `json:"removed_total"`
	// BelowFloor is true when free space stayed below MinFreeBytes after
	// the last cleanup: nothing more could be removed.
	BelowFloor bool `json:"below_floor"`
	// ReportedAt is when the coordinator received the report.
	ReportedAt time.Time `json:"reported_at"`
}

// Agent modes, as AgentView.Mode says them.
const (
	ModePolling   = "polling"
	ModeListening = "listening"
)

// ListeningAgentRequest adds a listening agent (POST /api/agents): the
// coordinator dials Address and accepts only the certificate whose
// thumbprint is Thumbprint, shown by "tendril-agent register --listen"
// on the agent's machine.
type ListeningAgentRequest struct {
	// Name is the agent's name; "" means the host of Address.
	Name        string `json:"name,omitempty" schema:"name"`
	Environment string `json:"environment" schema:"name"`
	// Address is host:port as the coordinator reaches it, which behind NAT
	// differs from the address the agent binds.
	Address    string `json:"address"`
	Thumbprint string `json:"thumbprint"`
}

// AgentAddressRequest moves a listening agent to a new address
// (PUT /api/agents/{name}/address).
type AgentAddressRequest struct {
	Address string `json:"address"`
}

// RotationResult reports a coordinator certificate rotation.
type RotationResult struct {
	Thumbprint string   `json:"thumbprint"`
	Previous   string   `json:"previous"`
	Notified   int      `json:"notified"`
	Failed     []string `json:"failed,omitempty"` // agents that could not be told; they learn on reconnect
	// Behind are the agents, away, that had not yet learned the
	// certificate this rotation replaced: they know neither certificate
	// served from now on, and reconnect by the new one's endorsement.
	Behind []string `json:"behind,omitempty"`
	// Stranded are those of Behind too old to check an endorsement: a
	// forced rotation locks them out until registered again.
	Stranded []string `json:"stranded,omitempty"`
}

// ServerInfo describes this coordinator for GET /api/server.
type ServerInfo struct {
	Version     string   `json:"version"`
	Thumbprint  string   `json:"thumbprint"`
	Thumbprints []string `json:"thumbprints"`
	AgentAddr   string   `json:"agent_addr"`
	TLSMin      string   `json:"tls_min"`
	ProtocolMin int      `json:"protocol_min"`
	ProtocolMax int      `json:"protocol_max"`
	Connected   int      `json:"connected"` // agents connected to this node
	// Node names this coordinator node among those sharing its database.
	Node          string  `json:"node"`
	SigningKey    string  `json:"signing_key"`
	HealthSeconds float64 `json:"health_interval_seconds"`
}

// Health values, as AgentView.Health says them.
const (
	HealthHealthy     = "healthy"
	HealthWarning     = "warning"
	HealthUnhealthy   = "unhealthy"
	HealthUnavailable = "unavailable"
)
