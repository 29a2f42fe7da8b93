// Package bytesize writes sizes for people, in binary units as ls -h and
// du -h do: "812 B", "1.5 KiB", "3.2 GiB". The agent's messages, the
// console and the CLI say sizes alike.
package bytesize

import "fmt"

// Format writes n bytes with one decimal in the largest binary unit
// below it, or in bytes under 1 KiB.
func Format(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
