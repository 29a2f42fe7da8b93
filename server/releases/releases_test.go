package releases

import "testing"

func TestNewestRelease(t *testing.T) {
	rs := []Release{
		{Version: "2.0.0-rc.1", Breaking: true},
		{Version: "1.10.0"},
		{Version: "1.9.0", Breaking: true},
		{Version: "1.2.0", Breaking: true},
		{Version: "1.x"},
	}
	for _, tc := range []struct {
		current, latest string
		breaking        bool
	}{
		{"1.2.0", "1.10.0", true},            // 1.9.0 on the way is breaking; the rc is not offered
		{"1.9.0", "1.10.0", false},           // only stable releases to a stable coordinator
		{"2.0.0-beta.1", "2.0.0-rc.1", true}, // a coordinator on a pre-release is offered the next one
		{"2.0.0-rc.1", "", false},
		{"2.0.0", "", false},
	} {
		latest, breaking, skipped, err := newestRelease(tc.current, rs)
		if err != nil || latest.Version != tc.latest || breaking != tc.breaking || skipped != 1 {
			t.Errorf("from %s: got %q breaking %v skipped %d %v, want %q breaking %v", tc.current, latest.Version, breaking, skipped, err, tc.latest, tc.breaking)
		}
	}
	if latest, _, _, _ := newestRelease("1.9.0", rs[1:]); latest.Version != "1.10.0" {
		t.Errorf("1.10.0 must sort above 1.9.0, got %q", latest.Version)
	}
	if _, _, _, err := newestRelease("dev", rs); err == nil {
		t.Error("an invalid own version must be an error, not a notice")
	}
}
