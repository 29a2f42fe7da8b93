package protocol

import "time"

// Disk retention on agents: the coordinator says which task folders
// (<home>/Work/<ticket>) an agent keeps, the agent reports what it holds.
//
// The rule reaches every agent in Welcome.WorkRetention, which agents
// older than it ignore (Frame.Decode ignores unknown fields). A change of
// the machine policy reaches connected agents as a TypeWorkRetention
// request, sent only to agents that list FeatureWorkRetention in
// Hello.Features: an older agent would answer it with CodeUnknownType.
// The agent reports what it holds in Health.Work, which older
// coordinators ignore.

// FeatureWorkRetention, in Hello.Features, says that the agent applies
// Welcome.WorkRetention, answers TypeWorkRetention and reports Health.Work.
const FeatureWorkRetention = "work_retention"

// TypeWorkRetention is coordinator -> agent: a WorkRetention, answered by
// TypeAck.
const TypeWorkRetention = "work_retention"

// WorkRetention is the rule an agent applies to its finished task folders.
type WorkRetention struct {
	// Keep is how many finished task folders the agent keeps, newest
	// first; older ones go once they finished long enough ago that no
	// coordinator still reads them. 0 or more.
	Keep int `json:"keep"`
	// MinFree is the free-space floor, in bytes, of the file system
	// holding the agent's home; 0 means none. Below it the oldest finished
	// folders go, Keep notwithstanding, until free space is back above it.
	MinFree int64 `json:"min_free"`
}

// WorkReport is what an agent holds in its Work folder and what its
// retention did last, in Health.Work.
type WorkReport struct {
	// Tasks counts the task folders; Running those of tasks running or
	// waiting, which retention never removes.
	Tasks   int `json:"tasks"`
	Running int `json:"running"`
	// Bytes is the size of everything under Work, as of the last cleanup.
	Bytes int64 `json:"bytes"`
	// Rule is the rule the agent applies: the coordinator's, or the
	// agent's own default before a coordinator said one.
	Rule WorkRetention `json:"rule"`
	// LastCleanup is when retention last ran; zero if never.
	LastCleanup time.Time `json:"last_cleanup,omitzero"`
	// LastRemoved counts the folders the last cleanup removed;
	// RemovedTotal those removed since the agent started.
	LastRemoved  int   `json:"last_removed"`
	RemovedTotal int64 `json:"removed_total"`
	// BelowFloor is true when free space was still below Rule.MinFree
	// after the last cleanup: nothing more could be removed.
	BelowFloor bool `json:"below_floor,omitempty"`
}
