package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tendrildeploy/tendril/api"
)

// defaultFollowIdle is how long a followed log may be silent before the
// client gives up on the connection: four of the coordinator's 15-second
// keep-alives.
const defaultFollowIdle = time.Minute

// maxLogLine bounds one line of a task log stream (one JSON object).
const maxLogLine = 4 << 20

// errFollowIdle cancels a follow whose connection went silent.
var errFollowIdle = errors.New("the log stream was silent for too long")

// UploadFile uploads a file of size bytes read from r (POST /api/files),
// for a task to send to its agent (api.TaskRequest.File). The body is
// streamed, and the SHA-256 the coordinator reports is checked against
// the one of the bytes sent.
func (c *Client) UploadFile(ctx context.Context, r io.Reader, size int64) (api.FileView, error) {
	var out api.FileView
	sum, err := c.upload(ctx, "/api/files", r, size, &out)
	if err != nil {
		return api.FileView{}, fmt.Errorf("upload file: %w", err)
	}
	if out.SHA256 != sum || out.Size != size {
		return api.FileView{}, fmt.Errorf("upload file: the coordinator stored %d bytes with SHA-256 %s, but %d bytes with SHA-256 %s were sent", out.Size, out.SHA256, size, sum)
	}
	return out, nil
}

// CreateTasks starts Calamari on the agent or environment the request
// names, one task per agent (POST /api/tasks). A request that cannot run
// on every target is refused whole.
func (c *Client) CreateTasks(ctx context.Context, req api.TaskRequest) ([]api.TaskView, error) {
	var out []api.TaskView
	if err := c.create(ctx, "/api/tasks", req, &out); err != nil {
		return nil, fmt.Errorf("create task: %w", err)
	}
	return out, nil
}

// Task returns one task (GET /api/tasks/{id}).
func (c *Client) Task(ctx context.Context, id string) (api.TaskView, error) {
	var out api.TaskView
	if id == "" {
		return out, errors.New("get task: no task ID given")
	}
	if err := c.do(ctx, http.MethodGet, "/api/tasks/"+url.PathEscape(id), nil, &out); err != nil {
		return api.TaskView{}, fmt.Errorf("get task: %w", err)
	}
	return out, nil
}

// Tasks lists tasks, newest first (GET /api/tasks). agent "" means every
// agent; limit 0 means the coordinator's default.
func (c *Client) Tasks(ctx context.Context, agent string, limit int) ([]api.TaskView, error) {
	return c.TasksOf(ctx, api.TaskFilter{Agent: agent, Limit: limit})
}

// TasksOf lists the tasks f selects, newest first (GET /api/tasks).
func (c *Client) TasksOf(ctx context.Context, f api.TaskFilter) ([]api.TaskView, error) {
	q := url.Values{}
	if f.Agent != "" {
		q.Set("agent", f.Agent)
	}
	if f.Group != "" {
		q.Set("group", f.Group)
	}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	resp, err := c.send(ctx, http.MethodGet, "/api/tasks", q, nil, -1, "", "application/json")
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	defer resp.Body.Close()
	var out []api.TaskView
	if err := decodeResponse(resp, &out); err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return out, nil
}

// CancelTask asks for a task to stop (POST /api/tasks/{id}/cancel): a
// queued task never starts; a running one has its whole process tree
// killed by the agent. The returned view is the task right after the
// request, usually before the agent has reported the end.
func (c *Client) CancelTask(ctx context.Context, id string) (api.TaskView, error) {
	var out api.TaskView
	if id == "" {
		return out, errors.New("cancel task: no task ID given")
	}
	if err := c.do(ctx, http.MethodPost, "/api/tasks/"+url.PathEscape(id)+"/cancel", nil, &out); err != nil {
		return api.TaskView{}, fmt.Errorf("cancel task: %w", err)
	}
	return out, nil
}

// logObject is one object of the task log stream: a log line, or the end.
type logObject struct {
	api.LogLineView
	End *api.TaskView `json:"end"`
}

// FollowTaskLog streams a task's log from line number from on (GET
// /api/tasks/{id}/log), calling fn for each line in order. With follow,
// the stream stays open until the task has finished and every line was
// sent.
//
// When the final object arrives, FollowTaskLog returns the finished task
// and ended true. It returns ended false and a nil error when the stream
// stopped before that: without follow, because the task is still running;
// with follow, because the connection broke or stayed silent for too long.
// The caller may then resume from the last line's Seq+1. err is non-nil
// when the request failed (an *Error, ErrNotRunning, or a network error),
// when ctx ended, when a line could not be decoded, or when fn failed (its
// error is returned as is).
func (c *Client) FollowTaskLog(ctx context.Context, id string, from int64, follow bool, fn func(api.LogLineView) error) (end api.TaskView, ended bool, err error) {
	if id == "" {
		return api.TaskView{}, false, errors.New("follow task log: no task ID given")
	}
	from = max(from, 1)
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var idle *time.Timer
	if follow && c.followIdle > 0 {
		idle = time.AfterFunc(c.followIdle, func() { cancel(errFollowIdle) })
		defer idle.Stop()
	}
	q := url.Values{"from": {strconv.FormatInt(from, 10)}, "follow": {strconv.FormatBool(follow)}}
	resp, err := c.send(rctx, http.MethodGet, "/api/tasks/"+url.PathEscape(id)+"/log", q, nil, -1, "", "application/x-ndjson")
	if err != nil {
		if ctx.Err() == nil && errors.Is(context.Cause(rctx), errFollowIdle) {
			return api.TaskView{}, false, nil
		}
		return api.TaskView{}, false, fmt.Errorf("follow task log: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxLogLine)
	for sc.Scan() {
		if idle != nil {
			idle.Reset(c.followIdle)
		}
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue // keep-alive
		}
		var o logObject
		if err := json.Unmarshal(b, &o); err != nil {
			return api.TaskView{}, false, fmt.Errorf("follow task log: decode line after %d: %w", from-1, err)
		}
		if o.End != nil {
			return *o.End, true, nil
		}
		if err := fn(o.LogLineView); err != nil {
			return api.TaskView{}, false, err
		}
		from = o.Seq + 1
	}
	if ctx.Err() != nil {
		return api.TaskView{}, false, ctx.Err()
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return api.TaskView{}, false, fmt.Errorf("follow task log: line after %d is longer than %d bytes", from-1, maxLogLine)
	}
	// The stream ended early or broke: the caller resumes if it wants.
	return api.TaskView{}, false, nil
}

// TaskArtifact writes a task's artifact to w (GET
// /api/tasks/{id}/artifacts/{name}) and returns how many bytes it wrote.
func (c *Client) TaskArtifact(ctx context.Context, id, name string, w io.Writer) (int64, error) {
	if id == "" || name == "" {
		return 0, errors.New("download artifact: a task ID and an artifact name are needed")
	}
	return c.download(ctx, http.MethodGet, "/api/tasks/"+url.PathEscape(id)+"/artifacts/"+url.PathEscape(name), "application/octet-stream", w,
		fmt.Sprintf("download artifact %s of task %s", name, id))
}
