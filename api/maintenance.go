package api

import "time"

// Snapshot is a database snapshot a running coordinator wrote into its
// data folder for a backup.
type Snapshot struct {
	Name          string `json:"name"` // file name in the data folder
	SchemaVersion int    `json:"schema_version"`
	Version       string `json:"version"` // the coordinator's
}

// MaintenanceView is the maintenance state as the API shows it.
type MaintenanceView struct {
	On    bool       `json:"on"`
	Since *time.Time `json:"since,omitempty"`
	// RunningTasks and QueuedTasks are the tasks not yet finished;
	// RunningRollouts the rollouts still upgrading agents. A drain is
	// complete when all three are zero.
	RunningTasks    int `json:"running_tasks"`
	QueuedTasks     int `json:"queued_tasks"`
	RunningRollouts int `json:"running_rollouts"`
}

// Drained reports whether nothing is left running or waiting to run.
func (v MaintenanceView) Drained() bool {
	return v.RunningTasks == 0 && v.QueuedTasks == 0 && v.RunningRollouts == 0
}

// MaintenanceRequest is the body of PUT /api/maintenance.
type MaintenanceRequest struct {
	On *bool `json:"on"`
}
