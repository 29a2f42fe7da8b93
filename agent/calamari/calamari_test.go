package calamari

import (
	"errors"
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidateVersion(t *testing.T) {
	tests := []struct {
		v  string
		ok bool
	}{
		{"1.2.3", true},
		{"1.2.3-rc.1+build.5", true},
		{"", false},
		{"v1.2.3", false},
		{"1.2", false},
		{"../1.2.3", false},
		{"1.2.3/x", false},
		{".1.2.3", false},
		{`1.2.3\x`, false},
	}
	for _, tt := range tests {
		err := ValidateVersion(tt.v)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidVersion)) {
			t.Errorf("ValidateVersion(%q): got %v, want ok=%v", tt.v, err, tt.ok)
		}
	}
}

func TestIsBadRequest(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("install: %w", bundle.ErrBadSignature), true},
		{fmt.Errorf("install: %w", bundle.ErrUnsafeArchive), true},
		{fmt.Errorf("install: %w", bundle.ErrCorrupt), true},
		{fmt.Errorf("receive: %w", protocol.ErrTransfer), true},
		{ErrVersionMismatch, true},
		{errors.New("no space left on device"), false},
	}
	for _, tt := range tests {
		if got := IsBadRequest(tt.err); got != tt.want {
			t.Errorf("IsBadRequest(%v): got %v, want %v", tt.err, got, tt.want)
		}
	}
}
