package api

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits are the suffixes ParseSize accepts, in bytes. Both the
// binary (KiB) and the decimal (KB) forms are taken at their word: an
// operator who writes 2GB and sees 1.86GiB back was not misread.
var sizeUnits = []struct {
	suffix string
	bytes  int64
}{
	// Longest suffixes first, so that "KiB" is not read as "B".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// ParseSize reads a size in bytes as a person writes it: "2GiB", "500MB",
// "1.5 GiB", "1048576" (bytes) or "0". Units are case-insensitive; K, M,
// G and T alone are binary (as df -h shows them). Negative and fractional
// byte counts are refused.
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.bytes
			break
		}
	}
	if t == "" {
		return 0, fmt.Errorf("size %q: no number; write it like 2GiB, 500MB or 1048576", s)
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("size %q: must not be negative", s)
		}
		if n > math.MaxInt64/mult {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("size %q: not a size; write it like 2GiB, 500MB or 1048576", s)
	}
	if f < 0 {
		return 0, fmt.Errorf("size %q: must not be negative", s)
	}
	b := f * float64(mult)
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	if b != math.Trunc(b) {
		return 0, fmt.Errorf("size %q: not a whole number of bytes", s)
	}
	return int64(b), nil
}

// FormatSize writes n bytes the short way ParseSize reads back exactly
// when it can: "2GiB", "512MiB", "1500000B" otherwise, "0" for nothing.
func FormatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		suffix string
		bytes  int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n%u.bytes == 0 {
			return strconv.FormatInt(n/u.bytes, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}
