//go:build unix

package kind

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"
)

func TestNoSpaceError(t *testing.T) {
	write := &fs.PathError{Op: "write", Path: "/data/calamari/.upload-1", Err: syscall.ENOSPC}
	tests := []struct {
		name string
		err  *NoSpaceError
		want string
	}{
		{"free and needed", &NoSpaceError{Free: 6 << 20, Needed: 40 << 20, Err: write}, "no space left in the data folder (6.0 MiB free, 40 MiB needed)"},
		{"large, rounded", &NoSpaceError{Free: 1536 << 20, Needed: 2047<<20 + 900<<10}, "no space left in the data folder (1536 MiB free, 2048 MiB needed)"},
		{"nothing free", &NoSpaceError{Free: 0, Needed: 300 << 10}, "no space left in the data folder (0.0 MiB free, 0.3 MiB needed)"},
		{"needed unknown", &NoSpaceError{Free: 12 << 20, Err: write}, "no space left in the data folder (12 MiB free)"},
		{"free unknown", &NoSpaceError{Free: -1, Needed: 40 << 20}, "no space left in the data folder (40 MiB needed)"},
		{"nothing known", &NoSpaceError{Free: -1, Err: write}, "no space left in the data folder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if !errors.Is(tt.err, ErrNoSpace) || !IsNoSpace(fmt.Errorf("upload: %w", tt.err)) {
				t.Error("not of kind ErrNoSpace")
			}
			if tt.err.Err != nil && !errors.Is(tt.err, syscall.ENOSPC) {
				t.Error("the write's error is not reachable through it")
			}
		})
	}
}

func TestIsNoSpace(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"full disk", fmt.Errorf("receive: %w", &fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}), true},
		{"quota", &fs.PathError{Op: "write", Path: "/x", Err: syscall.EDQUOT}, true},
		{"of the kind", fmt.Errorf("%w: database or disk is full", ErrNoSpace), true},
		{"another errno", &fs.PathError{Op: "write", Path: "/x", Err: syscall.EIO}, false},
		{"read-only", &fs.PathError{Op: "open", Path: "/x", Err: syscall.EROFS}, false},
		{"unreachable database", ErrUnavailable, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		if got := IsNoSpace(tt.err); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}
