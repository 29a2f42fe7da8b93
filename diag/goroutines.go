package diag

import (
	"bytes"
	"fmt"
	"runtime/pprof"
)

// GoroutinesName is the entry a goroutine dump is stored as.
const GoroutinesName = "goroutines.txt"

// Goroutines dumps this process's goroutines with their full stacks, as
// a crash would print them (pprof's goroutine profile at debug level 2),
// without stopping anything: what is stuck, and where.
func Goroutines() ([]byte, error) {
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		return nil, fmt.Errorf("dump goroutines: %w", err)
	}
	return b.Bytes(), nil
}
