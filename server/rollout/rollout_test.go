package rollout

import (
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/store"
)

func TestBatchStarted(t *testing.T) {
	tests := []struct {
		name   string
		states []string
		want   bool
	}{
		{"all queued", []string{api.UpgradeQueued, api.UpgradeQueued}, false},
		{"one waiting", []string{api.UpgradeQueued, api.UpgradeWaitingForIdle}, true},
		{"one sending", []string{api.UpgradeSending}, true},
		{"all final", []string{api.UpgradeSucceeded, api.UpgradeFailed}, false},
		{"final and queued", []string{api.UpgradeSucceeded, api.UpgradeQueued}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var agents []store.RolloutAgent
			for _, s := range tt.states {
				agents = append(agents, store.RolloutAgent{Batch: 2, State: s})
			}
			agents = append(agents, store.RolloutAgent{Batch: 1, State: api.UpgradeSending})
			if got := batchStarted(agents, 2); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
