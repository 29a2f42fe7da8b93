package api

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"0", 0, ""},
		{"1048576", 1 << 20, ""},
		{"2GiB", 2 << 30, ""},
		{"2gib", 2 << 30, ""},
		{"1.5 GiB", 3 << 29, ""},
		{"500MB", 500e6, ""},
		{"4G", 4 << 30, ""},
		{"10KiB", 10 << 10, ""},
		{"7B", 7, ""},
		{" 3 TiB ", 3 << 40, ""},
		{"", 0, "no number"},
		{"GiB", 0, "no number"},
		{"-1", 0, "must not be negative"},
		{"-2GiB", 0, "must not be negative"},
		{"-0.5GiB", 0, "must not be negative"},
		{"lots", 0, "not a size"},
		{"2 gigs", 0, "not a size"},
		{"0.5B", 0, "not a whole number of bytes"},
		{"NaN", 0, "not a size"},
		{"9999999TiB", 0, "too large"},
		{"1e30", 0, "too large"},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("ParseSize(%q): got %d, %v; want %d", tt.in, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseSize(%q): got %d, %v; want an error with %q", tt.in, got, err, tt.wantErr)
		}
	}
}

func TestFormatSizeRoundTrips(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"}, {1 << 30, "1GiB"}, {3 << 29, "1536MiB"}, {1 << 40, "1TiB"}, {1500000, "1500000B"}, {1024, "1KiB"},
	}
	for _, tt := range tests {
		got := FormatSize(tt.in)
		if got != tt.want {
			t.Errorf("FormatSize(%d): got %q, want %q", tt.in, got, tt.want)
		}
		if back, err := ParseSize(got); err != nil || back != tt.in {
			t.Errorf("ParseSize(FormatSize(%d)): got %d, %v; want %d", tt.in, back, err, tt.in)
		}
	}
}
