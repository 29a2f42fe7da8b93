package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progressReader counts what is read from r on a progress bar on stderr,
// when stderr is a terminal; otherwise it returns r itself. done ends the
// bar's line, so whatever is printed next starts on a line of its own.
func progressReader(e Env, r io.Reader, size int64, desc string) (_ io.Reader, done func()) {
	if !e.Console || size <= 0 {
		return r, func() {}
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(e.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(e.Stderr) }),
	)
	pr := progressbar.NewReader(r, bar)
	return &pr, func() {
		if !bar.IsFinished() {
			bar.Exit() // prints the completion newline without filling the bar
		}
	}
}
