package metrics

import (
	"reflect"
	"slices"
	"testing"

	"github.com/tendrildeploy/tendril/server/store"
)

// TestMetricsStoreTimesEveryOperation fails when store.Store gains a
// method timedStore does not time: the embedded Store would pass it on
// untimed, and its series would be missing.
func TestMetricsStoreTimesEveryOperation(t *testing.T) {
	iface := reflect.TypeOf((*store.Store)(nil)).Elem()
	for i := range iface.NumMethod() {
		name := iface.Method(i).Name
		if name == "Close" {
			continue
		}
		if !slices.Contains(storeOps, name) {
			t.Errorf("store.Store.%s: not timed; add it to timedStore and storeOps", name)
		}
	}
	if got, want := len(storeOps), iface.NumMethod()-1; got != want {
		t.Errorf("got %d timed operations, want %d (every method but Close)", got, want)
	}
}
