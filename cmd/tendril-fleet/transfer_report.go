package main

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"
)

// mibps is a throughput in MiB/s, or "-" without a time.
func mibps(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MiB/s", float64(bytes)/(1<<20)/d.Seconds())
}

// pct is how fast d is against the ceiling, in percent of its throughput
// (same bytes, so ceiling/d).
func pct(ceiling, d time.Duration) string {
	if d <= 0 || ceiling <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*ceiling.Seconds()/d.Seconds())
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// spread is "median of N, min–max".
func spread(ds []time.Duration, unit func(time.Duration) string) string {
	if len(ds) == 0 {
		return "no runs"
	}
	return fmt.Sprintf("median of %d, %s–%s", len(ds), unit(slices.Min(ds)), unit(slices.Max(ds)))
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// renderTransferTable is figures 5 and 6 as a markdown table: figure,
// goal, measured, compared with.
func renderTransferTable(t *transferBench, r *transferResults) string {
	if r == nil {
		return "(no results)"
	}
	var b strings.Builder
	b.WriteString("| figure | goal | measured | compared with (same run) |\n|---|---|---|---|\n")
	row := func(fig, goal, measured, cmp string) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", fig, goal, measured, cmp)
	}
	if len(r.direct.push) > 0 {
		tlsMed, push := median(r.tls), median(r.direct.push)
		row(fmt.Sprintf("5. push of a %s bundle to one agent: transfer, verify, extract, Success.txt", mib(r.bundleBytes)),
			"≥ 80% of raw TLS",
			fmt.Sprintf("%s = %s = **%s of raw TLS** (%s)", secs(push), mibps(r.bundleBytes, push), pct(tlsMed, push), spread(r.direct.push, secs)),
			fmt.Sprintf("raw TLS %s (%s): %s = %s (%s); scp: %s = %s = %s of raw TLS (%s)",
				r.tlsVersion, r.tlsCipher, secs(tlsMed), mibps(r.bundleBytes, tlsMed), spread(r.tls, secs),
				secs(median(r.scp)), mibps(r.bundleBytes, median(r.scp)), pct(tlsMed, median(r.scp)), spread(r.scp, secs)))
		if len(r.direct.pushLanded) > 0 {
			landed := median(r.direct.pushLanded)
			row("5. same push, transfer alone: from the update call until every byte is in the agent's file",
				"≥ 80% of raw TLS",
				fmt.Sprintf("%s = %s = **%s of raw TLS** (%s)", secs(landed), mibps(r.bundleBytes, landed), pct(tlsMed, landed), spread(r.direct.pushLanded, secs)),
				fmt.Sprintf("scp (also writes a file): %s of raw TLS", pct(tlsMed, median(r.scp))))
		}
		row("5. same push, until the update API call returns (it ends with a health check that re-verifies every installed version)", "",
			fmt.Sprintf("%s (%s)", secs(median(r.direct.pushAPI)), spread(r.direct.pushAPI, secs)), "")
		if len(r.direct.pushCPU) > 0 {
			var total time.Duration
			for _, d := range r.direct.pushCPU {
				total += d
			}
			pushed := float64(r.bundleBytes) * float64(len(r.direct.pushCPU)) / (1 << 20)
			row("5. the agent's CPU per MiB pushed (user+sys of the agent process from the update call to its return, /proc/PID/stat)", "",
				fmt.Sprintf("**%.2f ms/MiB** (%s in %d pushes)", float64(total)/float64(time.Millisecond)/pushed, secs(total), len(r.direct.pushCPU)),
				fmt.Sprintf("CPU profiles during each push, next to this file: agent-cpu-push-%d.0.*.pprof, and the coordinator's, coordinator-cpu-push-*", benchMajor))
		}
	}
	for _, f := range r.fleet {
		var others []string
		for _, o := range r.fleet {
			if o.agents != f.agents && o.peak > 0 {
				others = append(others, fmt.Sprintf("%d agents: %s → %s", o.agents, mib(o.rssBefore), mib(o.peak)))
			}
		}
		row(fmt.Sprintf("5. push of a %s bundle to %d agents: every agent installed", mib(r.fleetBundleBytes), f.agents), "",
			fmt.Sprintf("%s (%s in all)", secs(f.installed), mibps(r.fleetBundleBytes*int64(f.agents), f.installed)),
			fmt.Sprintf("update API call returned after %s; CPU: coordinator %s, simulator %s", secs(f.api), secs(f.coordCPU), secs(f.simCPU)))
		peakName := "peak (VmHWM, reset before the push)"
		if f.peakSinceStart {
			peakName = "peak since start (VmHWM)"
		}
		row(fmt.Sprintf("5. coordinator RSS during the push to %d agents: before → %s → after", f.agents, peakName),
			"does not grow with agents",
			fmt.Sprintf("%s → **%s** → %s (Go heap in use %s → %s)", mib(f.rssBefore), mib(f.peak), mib(f.rssAfter), mib(int64(f.heapBefore)), mib(int64(f.heapAfter))),
			strings.Join(others, "; "))
	}
	if len(r.direct.task) > 0 {
		row(fmt.Sprintf("6. task round trip: `run-script --inline true` on one agent through the API, create to final state (Calamari %s)", r.taskCalamari),
			"faster than SSH",
			fmt.Sprintf("**%s** (%s)", ms(median(r.direct.task)), spread(r.direct.task, ms)),
			fmt.Sprintf("`ssh` over a held ControlMaster connection, `true`, bash not reading ~/.bashrc: **%s** (%s)",
				ms(median(r.ssh)), spread(r.ssh, ms)))
		row("6. the same ssh, bash reading this machine's ~/.bashrc (as a plain `ssh host true` does here)", "", ms(median(r.sshShell)),
			fmt.Sprintf("%s; first of each, not counted: task %s, ssh %s and %s (each sets up its master connection)",
				spread(r.sshShell, ms), ms(r.direct.taskFirst), ms(r.sshFirst), ms(r.sshShellFirst)))
		if len(r.direct.taskToStart) > 0 {
			row("6. task round trip, from the task's timestamps: created → started (includes the Calamari check) / started → finished", "",
				fmt.Sprintf("%s / %s (medians)", ms(median(r.direct.taskToStart)), ms(median(r.direct.taskRun))),
				"the rest is the API calls: create, and the followed log delivering the final state")
		}
	}
	return b.String()
}

// signed is d with its sign, in unit: how much a median is above (or
// below) another; "±" when it rounds to nothing, which a sign would
// overstate.
func signed(d time.Duration, unit func(time.Duration) string) string {
	switch {
	case unit(d.Abs()) == unit(0):
		return "±" + unit(0)
	case d < 0:
		return "-" + unit(-d)
	}
	return "+" + unit(d)
}

// viaSessionsNoun is what each proxy's count of an agent's connections
// counts.
var viaSessionsNoun = map[string]string{
	"tinyproxy": "CONNECT requests",
	"nginx":     "WebSocket upgrades",
}

// renderViaTable is the one-agent figures of the agents behind a proxy
// next to the direct agent's, from the same runs: a column per road, each
// proxy's medians set against direct's (throughput as a share of
// direct's, times as a difference). "" when no proxy was measured.
func renderViaTable(r *transferResults) string {
	if r == nil || len(r.vias) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n**One agent through a proxy** (same runs as above, interleaved; the direct column is the agent above):\n\n")
	b.WriteString("| figure | direct |")
	for _, v := range r.vias {
		fmt.Fprintf(&b, " %s |", viaNames[v.via])
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---|", len(r.vias)) + "\n")
	row := func(fig string, cell func(rt *roadTimes, direct bool) string) {
		fmt.Fprintf(&b, "| %s | %s |", fig, cell(&r.direct, true))
		for _, v := range r.vias {
			fmt.Fprintf(&b, " %s |", cell(&v.roadTimes, false))
		}
		b.WriteString("\n")
	}
	// throughput is a push figure: time, MiB/s, and for a proxy its share
	// of direct's throughput.
	throughput := func(pick func(*roadTimes) []time.Duration) func(*roadTimes, bool) string {
		return func(rt *roadTimes, direct bool) string {
			ds := pick(rt)
			if len(ds) == 0 {
				return "-"
			}
			m, share := median(ds), ""
			if !direct {
				share = " = **" + pct(median(pick(&r.direct)), m) + " of direct**"
			}
			return fmt.Sprintf("%s = %s%s (%s)", secs(m), mibps(r.bundleBytes, m), share, spread(ds, secs))
		}
	}
	// elapsed is a time figure: the median, and for a proxy how much it
	// adds to direct's.
	elapsed := func(pick func(*roadTimes) []time.Duration, unit func(time.Duration) string) func(*roadTimes, bool) string {
		return func(rt *roadTimes, direct bool) string {
			ds := pick(rt)
			if len(ds) == 0 {
				return "-"
			}
			m, more := median(ds), ""
			if !direct && len(pick(&r.direct)) > 0 {
				more = fmt.Sprintf(", **%s** on direct", signed(m-median(pick(&r.direct)), unit))
			}
			return fmt.Sprintf("%s%s (%s)", unit(m), more, spread(ds, unit))
		}
	}
	if len(r.direct.push) > 0 {
		row(fmt.Sprintf("5. push of a %s bundle to one agent: transfer, verify, extract, Success.txt", mib(r.bundleBytes)),
			throughput(func(rt *roadTimes) []time.Duration { return rt.push }))
		row("5. same push, transfer alone: from the update call until every byte is in the agent's file",
			throughput(func(rt *roadTimes) []time.Duration { return rt.pushLanded }))
		row("5. same push, until the update API call returns",
			elapsed(func(rt *roadTimes) []time.Duration { return rt.pushAPI }, secs))
	}
	if len(r.direct.task) > 0 {
		row(fmt.Sprintf("6. task round trip: `run-script --inline true` through the API, create to final state (Calamari %s)", r.taskCalamari),
			elapsed(func(rt *roadTimes) []time.Duration { return rt.task }, ms))
		row("6. task round trip, from the task's timestamps: created → started / started → finished (medians)", func(rt *roadTimes, _ bool) string {
			if len(rt.taskToStart) == 0 {
				return "-"
			}
			return fmt.Sprintf("%s / %s", ms(median(rt.taskToStart)), ms(median(rt.taskRun)))
		})
		row("6. first task round trip, not counted", func(rt *roadTimes, _ bool) string { return ms(rt.taskFirst) })
	}
	b.WriteString("| proxy, and the connections it logged for the agent (2 = its registration and one session, no reconnect) | - |")
	for _, v := range r.vias {
		fmt.Fprintf(&b, " %s; %d %s |", v.version, v.sessions, viaSessionsNoun[v.via])
	}
	b.WriteString("\n")
	return b.String()
}

// renderTransferDoc is the results file: the table, then how each figure
// was measured and every individual time.
func renderTransferDoc(t *transferBench, args []string, r *transferResults, table string, took time.Duration, runErr error) string {
	dirty := ""
	if command("git", "status", "--porcelain") != "" {
		dirty = " (dirty tree)"
	}
	var s strings.Builder
	fmt.Fprintf(&s, "# Transfer benchmark results (figures 5 and 6)\n\n")
	fmt.Fprintf(&s, "- when: %s, took %s\n", time.Now().UTC().Format(time.RFC3339), took.Round(time.Second))
	fmt.Fprintf(&s, "- command: `%s`\n", strings.Join(args, " "))
	fmt.Fprintf(&s, "- commit: %s%s\n", command("git", "rev-parse", "--short", "HEAD"), dirty)
	fmt.Fprintf(&s, "- machine: %d CPUs, %s memory, kernel %s, %s\n", runtime.NumCPU(), memTotal(), command("uname", "-r"), runtime.Version())
	if r != nil {
		fmt.Fprintf(&s, "- load average (1, 5, 15 min) before: %s; after: %s\n", r.loadBefore, r.loadAfter)
		fmt.Fprintf(&s, "- CPU busy over 2 s before the benchmark started anything (others' work): %s\n", r.busyBefore)
		fmt.Fprintf(&s, "- ssh: %s\n", r.sshVersion)
		for _, v := range r.vias {
			fmt.Fprintf(&s, "- %s: %s\n", v.via, v.version)
		}
	}
	if runErr != nil {
		fmt.Fprintf(&s, "- **the run failed**: %v\n", runErr)
	}
	s.WriteString("\n")
	s.WriteString(table)
	s.WriteString(`
## How it was measured

Everything runs on this machine, on loopback, started and stopped by
` + "`tendril-fleet bench-transfer`" + `. Each coordinator is ` + "`tendril-server run --data DIR --listen 127.0.0.1:PORT --http 127.0.0.1:PORT --health-interval 1h0m0s --log-level warn`" + `
on a fresh data folder: the long interval keeps periodic health sweeps (which
re-verify every installed bundle and start automatic pushes) out of the timed
windows; each agent still gets its health check when it connects.

- **One agent** (figures 5 and 6): the real ` + "`tendril-agent`" + ` binary as its own
  process (` + "`tendril-agent register --home H --join JOIN --name bench-agent`" + `, then
  ` + "`tendril-agent run --home H`" + `), in its own environment.
- **Push to one agent**: per run a new version of the bundle (random, so
  incompressible, payload plus a stub entry point; packed with bundle.Pack) is
  uploaded (not timed), then ` + "`POST /api/calamari/update`" + ` for the agent is timed. The
  benchmark looks at the agent's folder every millisecond: "transfer alone" is
  when the partial file holds every byte (it is never synced);
  "installed" is when ` + "`Calamari/<version>/Success.txt`" + ` is in place (every file
  extracted, verified and synced, the folder renamed into place). The agent
  extracts while it receives, so the partial file is complete only moments
  before Success.txt.
- **Agent CPU per MiB**: the agent process's user+sys time
  (` + "`/proc/PID/stat`" + `, 10 ms ticks) read just before and just after each timed
  update call, summed over the runs and divided by the MiB pushed. The direct
  agent runs with ` + "`TENDRIL_PPROF=127.0.0.1:PORT`" + ` (the coordinator too) and a 3 s
  CPU profile of each is taken from the start of every timed push
  (` + "`agent-cpu-push-VERSION.pprof`" + `, ` + "`coordinator-cpu-push-VERSION.pprof`" + `, next to
  this file; ` + "`go tool pprof -top bin/tendril-agent agent-cpu-push-*.pprof`" + `).
- **Raw TLS** (the ceiling): in this process, a TCP connection on loopback with
  the agent session's TLS settings (protocol.ServerTLS/ClientTLS: TLS 1.3, fresh
  ECDSA P-256 certificates pinned by thumbprint both ways); the server side
  writes the same bundle bytes from memory, the client reads and discards them.
  Timed from the first write to the last byte read; the handshake is not timed.
- **scp**: ` + "`scp -F none -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i KEY -q -P PORT BUNDLE USER@127.0.0.1:DEST`" + `
  (OpenSSH's default cipher; SFTP protocol), the same bundle file, to Debian's sshd
  started with its own sshd_config (` + "`/usr/sbin/sshd -D -e -f CONFIG`" + `), a throwaway
  host key and client key; wall time of the scp process, so it includes its SSH
  handshake. The copy lands on the same disk as the agent's.
- Push, scp and raw TLS run once per run, in an order that rotates between
  runs; times are medians over the runs.
- **Many agents**: ` + "`tendril-fleet run`" + ` (package fleet: real agents, real TLS,
  yamux and protocol in one process; the host is what they share) as its own
  process, homes registered once (not timed). Per size, largest first: a fresh
  coordinator process, the simulator with that many agents, wait until all are
  listed healthy, upload a new bundle version (not timed), reset the
  coordinator's peak RSS (` + "`echo 5 > /proc/PID/clear_refs`" + `), then time
  ` + "`POST /api/calamari/update`" + ` for the environment until every agent's
  Success.txt of that version is in place (looked at every 10 ms) and until the
  call returns; then read VmHWM. Every agent installs the bundle for real in its
  own home (the work folder is removed at the end). One push per size.
- **Task round trip**: ` + "`POST /api/tasks`" + ` with ` + "`run-script --inline true`" + ` pinned to the
  real Calamari bundle, then ` + "`GET /api/tasks/ID/log?follow=true`" + ` until the
  final state arrives (what ` + "`tendril-server task run`" + ` does), from this process
  with a kept-alive HTTP connection. It includes the coordinator's check that
  the agent's Calamari is intact (every file re-hashed) before the task.
  Compared with ` + "`ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i KEY -o ControlMaster=auto -o ControlPath=DIR/KIND-%C -o ControlPersist=60 -p PORT USER@127.0.0.1 true`" + `
  (wall time of the ssh process), one of each in turn; the first of each is
  not counted (it sets up the master connection). Two client keys: Debian's
  bash started by sshd reads ~/.bashrc even to run ` + "`true`" + `, and this machine's
  root ~/.bashrc runs ` + "`pyenv init`" + `, which costs more than SSH itself. One key's
  authorized_keys line sets ` + "`environment=\"SHLVL=1\"`" + ` (sshd_config
  ` + "`PermitUserEnvironment SHLVL`" + `), so bash counts itself nested and skips
  ~/.bashrc: SSH's own cost, like the ` + "`/bin/sh -c true`" + ` a Calamari run-script
  starts. The other key runs the shell as the machine has it.
- **Through a proxy** (` + "`--via`" + `, default ` + "`tinyproxy,nginx`" + `): besides the direct agent, one
  more real agent per proxy is registered with, and runs against, the same
  coordinator, reaching it only through that proxy, started by the benchmark
  on a free loopback port with the configuration the tests use
  (internal/proxyrun): Debian's tinyproxy asking for Basic credentials
  (` + "`tendril-agent register --home H --join JOIN --proxy http://bench:PASSWORD@127.0.0.1:PORT --name bench-agent-tinyproxy`" + `,
  a throwaway password; every session is a CONNECT tunnel to the agent port),
  and Debian's nginx as one process terminating TLS with a self-signed
  certificate and passing the WebSocket upgrade at ` + "`/agent`" + ` to the coordinator's
  HTTP listener (` + "`tendril-agent register --home H --server wss://127.0.0.1:PORT/agent --server-thumbprint HEX --token TOKEN --name bench-agent-nginx`" + `;
  the agent's session is TLS inside the WebSocket inside nginx's TLS). Each
  measurement above is taken the same way for them, in the same runs: each
  task round trip iteration runs the direct agent's task, then each proxied
  agent's, then the two ssh; each push run pushes the run's version to every
  agent, in the rotating order with scp and raw TLS. After the runs each
  proxied agent is stopped and the proxy's log counted: CONNECT requests to
  the agent port (tinyproxy) or ended WebSocket upgrades (nginx); 2 is the
  registration and one session, so no timed figure met a reconnect.
`)
	if r != nil {
		s.WriteString("\n## Every time measured\n\n")
		list := func(name string, ds []time.Duration, unit func(time.Duration) string) {
			if len(ds) == 0 {
				return
			}
			v := make([]string, len(ds))
			for i, d := range ds {
				v[i] = unit(d)
			}
			fmt.Fprintf(&s, "- %s: %s\n", name, strings.Join(v, ", "))
		}
		fmt.Fprintf(&s, "- bundle: %d bytes (one agent), %d bytes (fleet)\n", r.bundleBytes, r.fleetBundleBytes)
		list("push, installed", r.direct.push, secs)
		list("push, transfer alone", r.direct.pushLanded, secs)
		list("push, API call", r.direct.pushAPI, secs)
		list("push, agent CPU", r.direct.pushCPU, secs)
		list("scp", r.scp, secs)
		list("raw TLS", r.tls, secs)
		if len(r.compareOrders) > 0 {
			fmt.Fprintf(&s, "- order per run: %s\n", strings.Join(r.compareOrders, " | "))
		}
		for _, f := range r.fleet {
			fmt.Fprintf(&s, "- %d agents, Calamari %s: installed on all in %s, API %s, %d installed, coordinator RSS %d → peak %d → after %d bytes, Go heap in use %.0f → %.0f bytes, heap profile after: %s, coordinator crashed: %v\n",
				f.agents, f.version, secs(f.installed), secs(f.api), f.installedCount, f.rssBefore, f.peak, f.rssAfter, f.heapBefore, f.heapAfter, f.profile, f.coordinatorCrashed)
		}
		list("task round trip", r.direct.task, ms)
		list("ssh round trip, no ~/.bashrc", r.ssh, ms)
		list("ssh round trip, with ~/.bashrc", r.sshShell, ms)
		list("task created → started", r.direct.taskToStart, ms)
		list("task started → finished", r.direct.taskRun, ms)
		for _, v := range r.vias {
			list(v.via+": push, installed", v.push, secs)
			list(v.via+": push, transfer alone", v.pushLanded, secs)
			list(v.via+": push, API call", v.pushAPI, secs)
			list(v.via+": task round trip", v.task, ms)
			list(v.via+": task created → started", v.taskToStart, ms)
			list(v.via+": task started → finished", v.taskRun, ms)
		}
	}
	return s.String()
}
