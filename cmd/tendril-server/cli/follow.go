package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
)

// The wait between attempts to resume a followed log doubles from
// followRetryMin up to followRetryMax; tests shorten them.
var (
	followRetryMin = 250 * time.Millisecond
	followRetryMax = 10 * time.Second
)

// outputError is a failure to print a log line, which no retry can fix.
type outputError struct{ err error }

func (e *outputError) Error() string { return fmt.Sprintf("print log: %v", e.err) }
func (e *outputError) Unwrap() error { return e.err }

// followLog prints a task's log through print, from line from to the end
// of the task, and returns the finished task. A stream that breaks is
// resumed from the line after the last one printed, so no line is lost or
// printed twice; while the coordinator does not answer (restarting, say)
// it is asked again with a growing wait, until ctx ends. The first such
// failure, and the recovery, are noted on notes.
func followLog(ctx context.Context, cl *client.Client, id string, from int64, notes io.Writer, print func(api.LogLineView) error) (api.TaskView, error) {
	wait := followRetryMin
	lost := false
	for {
		progressed := false
		end, ended, err := cl.FollowTaskLog(ctx, id, from, true, func(l api.LogLineView) error {
			progressed = true
			from = l.Seq + 1
			if err := print(l); err != nil {
				return &outputError{err: err}
			}
			return nil
		})
		if ended || progressed {
			if lost {
				fmt.Fprintf(notes, "following task %s again\n", id)
				lost = false
			}
			wait = followRetryMin
		}
		if ended {
			return end, nil
		}
		if ctx.Err() != nil {
			return api.TaskView{}, ctx.Err()
		}
		if err != nil {
			if !retryable(err) {
				return api.TaskView{}, err
			}
			if !lost {
				fmt.Fprintf(notes, "following task %s: %v; retrying until the coordinator answers (the task keeps running)\n", id, err)
				lost = true
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return api.TaskView{}, ctx.Err()
		}
		wait = min(2*wait, followRetryMax)
	}
}

// retryable reports whether a failed follow may work if tried again: the
// coordinator is down, unreachable, or answered with a server error (a
// proxy in front of a restarting one, say). Refusals (4xx) are final.
func retryable(err error) bool {
	if _, ok := errors.AsType[*outputError](err); ok {
		return false
	}
	if errors.Is(err, client.ErrNotRunning) {
		return true
	}
	if ae, ok := errors.AsType[*client.Error](err); ok {
		return ae.Status >= 500 || ae.Status == http.StatusTooManyRequests
	}
	_, ok := errors.AsType[net.Error](err)
	return ok
}

// followResult is how following one task ended.
type followResult struct {
	end api.TaskView
	err error // nil when end is the finished task
}

// followTasks follows every task's log at once, printing each line to out
// as it comes, prefixed with the agent's name when there are several.
func followTasks(ctx context.Context, cl *client.Client, tasks []api.TaskView, out, notes io.Writer) []followResult {
	out, notes = &lockedWriter{w: out}, &lockedWriter{w: notes}
	results := make([]followResult, len(tasks))
	var wg sync.WaitGroup
	for i, tk := range tasks {
		prefix := ""
		if len(tasks) > 1 {
			prefix = tk.Agent + ": "
		}
		wg.Go(func() {
			end, err := followLog(ctx, cl, tk.ID, 1, notes, func(l api.LogLineView) error {
				_, err := io.WriteString(out, formatLogLine(prefix, l.Text))
				return err
			})
			results[i] = followResult{end: end, err: err}
		})
	}
	wg.Wait()
	return results
}

// runOutcome turns the followed tasks into the command's end: for one
// task its exit code, for several 0 if all succeeded and else 1, with a
// summary line per agent on notes. Interrupted, the tasks keep running on
// their agents, and the command says how to find them again.
func runOutcome(ctx context.Context, tasks []api.TaskView, results []followResult, notes io.Writer) error {
	if ctx.Err() != nil {
		interrupted := false
		for i, tk := range tasks {
			if results[i].err != nil {
				interrupted = true
				fmt.Fprintf(notes, "task %s keeps running; see it with: tendril-server task show %s\n", tk.ID, tk.ID)
			}
		}
		if interrupted {
			return &exitError{code: 130}
		}
	}
	// Lost output is said whatever the outcome: a task that succeeded
	// with lines missing from its log succeeded, with a warning.
	for _, r := range results {
		if r.err == nil {
			if w := r.end.LostWarning(); w != "" {
				fmt.Fprintf(notes, "warning: task %s on %s: %s\n", r.end.ID, r.end.Agent, w)
			}
		}
	}
	if len(tasks) == 1 {
		if err := results[0].err; err != nil {
			return fmt.Errorf("task %s on %s: %w", tasks[0].ID, tasks[0].Agent, err)
		}
		return taskOutcomeError(results[0].end)
	}
	failed := 0
	tw := tabwriter.NewWriter(notes, 0, 0, 2, ' ', 0)
	for i, tk := range tasks {
		r := results[i]
		outcome := ""
		if r.err != nil {
			outcome = "unknown: " + r.err.Error()
			failed++
		} else {
			outcome = taskOutcome(r.end)
			if taskExitCode(r.end) != 0 {
				failed++
			}
		}
		fmt.Fprintf(tw, "%s\ttask %s\t%s\n", tk.Agent, tk.ID, outcome)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if failed > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d of %d tasks did not succeed", failed, len(tasks))}
	}
	return nil
}

// taskOutcomeError is nil for a task that succeeded, else its exit code
// and a one-line reason.
func taskOutcomeError(t api.TaskView) error {
	code := taskExitCode(t)
	if code == 0 {
		return nil
	}
	return &exitError{code: code, msg: fmt.Sprintf("task %s on %s %s", t.ID, t.Agent, taskOutcome(t))}
}

// lockedWriter serializes whole writes, so lines of concurrent followers
// never interleave mid-line.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
