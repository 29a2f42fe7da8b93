package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/tendrildeploy/tendril/bytesize"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
	"github.com/tendrildeploy/tendril/diag"
)

// taskRunExample is shown when task run's arguments are wrong.
const taskRunExample = "tendril-server task run --agent web01 -- run-script --inline 'echo hello'"

func newTaskCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "task",
		Short: "Deployment tasks: run Calamari on agents, show, list and cancel tasks",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)
	group.AddCommand(newTaskRunCmd(e, &t), newTaskShowCmd(e, &t), newTaskListCmd(e, &t), newTaskCancelCmd(e, &t), newTaskArtifactCmd(e, &t))
	return group
}

// calamariArgs returns the arguments after "--", which go to Calamari
// unchanged, and refuses anything before it.
func calamariArgs(c *cobra.Command, args []string) ([]string, error) {
	dash := c.ArgsLenAtDash()
	if dash < 0 {
		dash = len(args)
	}
	if dash > 0 {
		return nil, usageErrorf(c, "unexpected argument %q: Calamari's arguments go after --, e.g. %s", args[0], taskRunExample)
	}
	if len(args) == 0 {
		return nil, usageErrorf(c, "no Calamari arguments given: put them after --, e.g. %s", taskRunExample)
	}
	return args, nil
}

func newTaskRunCmd(e Env, t *targetFlags) *cobra.Command {
	var (
		req                     api.TaskRequest
		agents                  []string
		vars, secrets, varsFrom []string
		file                    string
		asJSON                  bool
	)
	c := &cobra.Command{
		Use:   "run (--agent NAME... | --environment ENV) [--file PKG] [--calamari VERSION] [--isolation full|none] [--lock NAME]... [--var NAME=VALUE]... [--sensitive-var NAME=VALUE|NAME=@FILE]... [--var-from [NAME=]TASK:OUTPUT]... -- CALAMARI-ARGS...",
		Short: "Run Calamari on agents, or on every agent of an environment, and stream the log",
		Long: `Run Calamari on one agent, several (--agent repeated), or every agent of an
environment, and stream the log as it is produced. Everything after -- goes
to Calamari unchanged. A name that is not an agent, or an agent that is not
connected, starts nothing anywhere.

--var NAME=VALUE gives the task's process an environment variable.
--sensitive-var NAME=VALUE does too, but the value is stored encrypted under
the coordinator's master key, travels only inside the agent's session, is
masked as ******** wherever it appears in the task's log, and is never shown
again; NAME=@FILE reads it from a file (one final newline dropped), so that
it stays out of the shell's history and the process list. --var-from
TASK:OUTPUT takes a variable from an output of an earlier task (a script
sets one with: calamari set-output NAME VALUE); NAME=TASK:OUTPUT names the
variable differently from the output.

--file uploads a file first; the coordinator puts it in the task's folder on
the agent before the task starts.

--isolation full (the default) runs the task alone on each agent: it waits
for the tasks running there to finish, and later ones wait for it.
--isolation none lets it run beside other tasks, except those sharing one
of its --lock names, which run one after the other. A waiting task's log
says which task it waits for.

The exit code is the task's (1 if it failed without one, 130 if it was
cancelled); with several agents, 0 if every task succeeded, else 1.
Ctrl-C stops following but not the task: it keeps running, and
"tendril-server task show ID --follow" picks it up again.`,
		Example: "  " + taskRunExample + "\n  tendril-server task run --environment Production --file app.tar.gz -- CALAMARI-ARGS...",
		Args: func(c *cobra.Command, args []string) error {
			_, err := calamariArgs(c, args)
			return err
		},
		RunE: func(c *cobra.Command, args []string) error {
			cargs, err := calamariArgs(c, args)
			if err != nil {
				return err
			}
			if (len(agents) == 0) == (req.Environment == "") {
				return usageErrorf(c, "give exactly one of --agent NAME (repeatable) or --environment ENV")
			}
			if len(agents) > 0 {
				// The first goes in Agent, which coordinators older than
				// Agents understand.
				req.Agent, req.Agents = agents[0], agents[1:]
			}
			if err := api.ValidateIsolation(req.Isolation, req.Locks); err != nil {
				return usageErrorf(c, "%v", err)
			}
			if req.Variables, err = parseVariables(vars, secrets); err != nil {
				return usageErrorf(c, "%v", err)
			}
			if req.VariablesFrom, err = parseVariablesFrom(varsFrom); err != nil {
				return usageErrorf(c, "%v", err)
			}
			req.Args = cargs
			return adminCallFor(c, *t, e, 0, func(ctx context.Context, cl *client.Client) error {
				return runTasks(ctx, e, cl, req, file, asJSON)
			})
		},
	}
	// A Calamari flag given without "--" reaches this command's parser.
	c.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErrorf(c, "%v (Calamari's arguments go after --, e.g. %s)", err, taskRunExample)
	})
	f := c.Flags()
	f.StringArrayVar(&agents, "agent", nil, "run on this agent (repeatable)")
	f.StringVar(&req.Environment, "environment", "", "run on every agent of this environment")
	f.StringVar(&file, "file", "", "upload this file first and put it in the task's folder under its base name")
	f.StringVar(&req.Calamari, "calamari", "", "Calamari version to run (default: the latest)")
	f.StringVar(&req.Isolation, "isolation", "", `"full": run alone on the agent (default); "none": beside other tasks`)
	f.StringArrayVar(&req.Locks, "lock", nil, "hold this named lock while running: tasks sharing a lock run one after the other (repeatable)")
	f.StringArrayVar(&vars, "var", nil, "give the task the environment variable NAME=VALUE (repeatable)")
	f.StringArrayVar(&secrets, "sensitive-var", nil, "NAME=VALUE or NAME=@FILE: a variable stored encrypted and masked in the log (repeatable)")
	f.StringArrayVar(&varsFrom, "var-from", nil, "[NAME=]TASK:OUTPUT: a variable from an output of an earlier task (repeatable)")
	f.BoolVar(&asJSON, "json", false, "print the created tasks as JSON and do not follow them")
	return c
}

// parseVariables reads --var and --sensitive-var. A sensitive value
// given as @FILE is read from the file, without one final newline.
func parseVariables(vars, secrets []string) ([]api.Variable, error) {
	var out []api.Variable
	for _, kv := range vars {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("--var %q: want NAME=VALUE", kv)
		}
		out = append(out, api.Variable{Name: name, Value: value})
	}
	for _, kv := range secrets {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			// The argument is not repeated: it may be the secret itself.
			return nil, errors.New("--sensitive-var: want NAME=VALUE or NAME=@FILE (the argument has no NAME=)")
		}
		if path, isFile := strings.CutPrefix(value, "@"); isFile {
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("--sensitive-var %s: %w", name, err)
			}
			value = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		}
		out = append(out, api.Variable{Name: name, Value: value, Sensitive: true})
	}
	return out, nil
}

// parseVariablesFrom reads --var-from [NAME=]TASK:OUTPUT.
func parseVariablesFrom(specs []string) ([]api.VariableFrom, error) {
	var out []api.VariableFrom
	for _, spec := range specs {
		var vf api.VariableFrom
		ref := spec
		if name, rest, ok := strings.Cut(spec, "="); ok {
			vf.Name, ref = name, rest
		}
		task, output, ok := strings.Cut(ref, ":")
		if !ok || task == "" || output == "" || (vf.Name == "" && strings.Contains(spec, "=")) {
			return nil, fmt.Errorf("--var-from %q: want TASK:OUTPUT or NAME=TASK:OUTPUT", spec)
		}
		vf.Task, vf.Output = task, output
		out = append(out, vf)
	}
	return out, nil
}

// runTasks uploads the file, if any, creates the tasks and follows them to
// their end.
func runTasks(ctx context.Context, e Env, cl *client.Client, req api.TaskRequest, file string, asJSON bool) error {
	if file != "" {
		err := uploadFile(e, file, func(u upload) error {
			fv, err := cl.UploadFile(ctx, u.r, u.size)
			if err != nil {
				return err
			}
			req.File = &api.FileRef{Name: filepath.Base(file), SHA256: fv.SHA256}
			return nil
		})
		if err != nil && ctx.Err() != nil {
			return &exitError{code: 130, msg: fmt.Sprintf("interrupted while uploading %s; no task was started", file)}
		}
		if err != nil {
			return err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, adminTimeout)
	tasks, err := cl.CreateTasks(cctx, req)
	cancel()
	if err != nil && ctx.Err() != nil {
		return &exitError{code: 130, msg: "interrupted while creating the task; see whether it started with: tendril-server task list"}
	}
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(e.Stdout, tasks)
	}
	for _, tk := range tasks {
		fmt.Fprintf(e.Stderr, "task %s on %s\n", tk.ID, tk.Agent)
	}
	results := followTasks(ctx, cl, tasks, e.Stdout, e.Stderr)
	return runOutcome(ctx, tasks, results, e.Stderr)
}

// taskShow is what task show --json prints.
type taskShow struct {
	Task api.TaskView      `json:"task"`
	Log  []api.LogLineView `json:"log"`
}

func newTaskShowCmd(e Env, t *targetFlags) *cobra.Command {
	var asJSON, follow bool
	c := &cobra.Command{
		Use:   "show ID",
		Short: "Show a task: its agent, state, exit code, times, Calamari version, arguments and log",
		Long: `Show a task: its agent, state, exit code, times, Calamari version, arguments
and log. With --follow, keep printing the log until the task ends, and exit
as "task run" does (the task's exit code).`,
		Args: oneArg("task ID"),
		RunE: func(c *cobra.Command, args []string) error {
			timeout := adminTimeout
			if follow {
				timeout = 0
			}
			return adminCallFor(c, *t, e, timeout, func(ctx context.Context, cl *client.Client) error {
				err := showTask(ctx, e, cl, args[0], follow, asJSON)
				if err != nil && follow && c.Context().Err() != nil {
					return &exitError{code: 130}
				}
				return err
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, `print {"task": TASK, "log": [LINE...]}`)
	c.Flags().BoolVar(&follow, "follow", false, "keep printing the log until the task ends")
	return c
}

func showTask(ctx context.Context, e Env, cl *client.Client, id string, follow, asJSON bool) error {
	readLog := func(print func(api.LogLineView) error) (api.TaskView, bool, error) {
		if follow {
			end, err := followLog(ctx, cl, id, 1, e.Stderr, print)
			return end, err == nil, err
		}
		return cl.FollowTaskLog(ctx, id, 1, false, print)
	}
	if asJSON {
		out := taskShow{Log: []api.LogLineView{}}
		end, ended, err := readLog(func(l api.LogLineView) error {
			out.Log = append(out.Log, l)
			return nil
		})
		if err != nil {
			return err
		}
		out.Task = end
		if !ended {
			// Read after the log, so the task is at least as new as it.
			if out.Task, err = cl.Task(ctx, id); err != nil {
				return err
			}
		}
		if err := writeJSON(e.Stdout, out); err != nil {
			return err
		}
		if follow {
			return taskOutcomeError(out.Task)
		}
		return nil
	}
	tk, err := cl.Task(ctx, id)
	if err != nil {
		return err
	}
	if err := writeTaskHeader(e.Stdout, tk); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(e.Stdout); err != nil {
		return err
	}
	end, _, err := readLog(func(l api.LogLineView) error {
		_, err := io.WriteString(e.Stdout, formatLogLine("", l.Text))
		return err
	})
	if err != nil {
		return err
	}
	if follow {
		return taskOutcomeError(end)
	}
	return nil
}

func newTaskListCmd(e Env, t *targetFlags) *cobra.Command {
	var (
		agent  string
		limit  int
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "list",
		Short: "List tasks, newest first",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if c.Flags().Changed("limit") && (limit < 1 || limit > 1000) {
				return usageErrorf(c, "--limit must be from 1 to 1000, got %d", limit)
			}
			return adminCall(c, *t, e, func(ctx context.Context, cl *client.Client) error {
				ts, err := cl.Tasks(ctx, agent, limit)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(e.Stdout, ts)
				}
				return writeTasks(e.Stdout, ts)
			})
		},
	}
	f := c.Flags()
	f.StringVar(&agent, "agent", "", "only this agent's tasks")
	f.IntVar(&limit, "limit", 0, "at most this many tasks, 1 to 1000 (default: the coordinator's)")
	f.BoolVar(&asJSON, "json", false, "print the GET /api/tasks array")
	return c
}

func newTaskCancelCmd(e Env, t *targetFlags) *cobra.Command {
	var group string
	c := &cobra.Command{
		Use:   "cancel (ID... | --group GROUP)",
		Short: "Cancel tasks: a queued one never starts, a running one has its whole process tree killed",
		Long: `Cancel tasks by ID, or every unfinished task of one request (--group: the
tasks "task run" started on several agents, whose group "task show" and
"task list --json" give). A queued task never starts; a running one has its
whole process tree killed. Exits 1 if any cancellation failed.`,
		Args: func(c *cobra.Command, args []string) error {
			if (len(args) == 0) == (group == "") {
				return usageErrorf(c, "give task IDs or --group GROUP")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			return adminCall(c, *t, e, func(ctx context.Context, cl *client.Client) error {
				ids := args
				if group != "" {
					tasks, err := cl.TasksOf(ctx, api.TaskFilter{Group: group, Limit: 1000})
					if err != nil {
						return err
					}
					if len(tasks) == 0 {
						return fmt.Errorf("no tasks in group %q (see tendril-server task list --json)", group)
					}
					for _, tk := range tasks {
						if !tk.Finished() {
							ids = append(ids, tk.ID)
						}
					}
					if len(ids) == 0 {
						_, err := fmt.Fprintf(e.Stdout, "Every task of group %s has already finished\n", group)
						return err
					}
				}
				failed := 0
				for _, id := range ids {
					tk, err := cl.CancelTask(ctx, id)
					if err != nil {
						failed++
						fmt.Fprintf(e.Stderr, "task %s: %v\n", id, err)
						continue
					}
					state := tk.State
					if tk.StateReason != "" && !tk.Finished() {
						state += "; " + tk.StateReason
					}
					fmt.Fprintf(e.Stdout, "Cancellation of task %s on %s requested (state: %s); follow it with: tendril-server task show %s --follow\n",
						tk.ID, tk.Agent, state, tk.ID)
				}
				if failed > 0 {
					return &exitError{code: 1, msg: fmt.Sprintf("%d of %d cancellations failed", failed, len(ids))}
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&group, "group", "", "cancel every unfinished task of this group")
	return c
}

func newTaskArtifactCmd(e Env, t *targetFlags) *cobra.Command {
	var (
		out   string
		force bool
	)
	c := &cobra.Command{
		Use:   "artifact ID NAME [--out FILE]",
		Short: "Download a file a task's script attached (calamari artifact PATH)",
		Long: `Download a file a task's script attached with "calamari artifact PATH".
"tendril-server task show ID" lists a task's artifacts. The file is written
to NAME in the current folder, or to --out FILE ("-" for standard output);
an existing file is kept unless --force is given.`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageErrorf(c, "want a task ID and an artifact name, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			id, name := args[0], args[1]
			if out == "" {
				out = filepath.Base(name)
			}
			return adminCallFor(c, *t, e, 0, func(ctx context.Context, cl *client.Client) error {
				if out == "-" {
					_, err := cl.TaskArtifact(ctx, id, name, e.Stdout)
					return err
				}
				if _, err := os.Lstat(out); err == nil && !force {
					return fmt.Errorf("%s exists; give --force to replace it, or --out another file", out)
				}
				var n int64
				if err := diag.WriteFile(out, func(w io.Writer) error {
					var err error
					n, err = cl.TaskArtifact(ctx, id, name, w)
					return err
				}); err != nil {
					return err
				}
				_, err := fmt.Fprintf(e.Stderr, "wrote %s (%s)\n", out, bytesize.Format(n))
				return err
			})
		},
	}
	c.Flags().StringVar(&out, "out", "", `file to write ("-" for standard output; default: NAME in the current folder)`)
	c.Flags().BoolVar(&force, "force", false, "replace an existing file")
	return c
}
