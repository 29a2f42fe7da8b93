package rollout

import (
	"testing"

	"github.com/tendrildeploy/tendril/server/store"
)

func TestBatchStarted(t *testing.T) {
	tests := []struct {
		name   string
		states []string
		want   bool
	}{
		{"all queued", []string{store.UpgradeQueued, store.UpgradeQueued}, false},
		{"one waiting", []string{store.UpgradeQueued, store.UpgradeWaitingForIdle}, true},
		{"one sending", []string{store.UpgradeSending}, true},
		{"all final", []string{store.UpgradeSucceeded, store.UpgradeFailed}, false},
		{"final and queued", []string{store.UpgradeSucceeded, store.UpgradeQueued}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var agents []store.RolloutAgent
			for _, s := range tt.states {
				agents = append(agents, store.RolloutAgent{Batch: 2, State: s})
			}
			agents = append(agents, store.RolloutAgent{Batch: 1, State: store.UpgradeSending})
			if got := batchStarted(agents, 2); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
