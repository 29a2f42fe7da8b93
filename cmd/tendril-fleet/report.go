package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianF(fs []float64) float64 {
	if len(fs) == 0 {
		return 0
	}
	s := slices.Clone(fs)
	slices.Sort(s)
	return s[len(s)/2]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// renderTable is the results as a markdown table, one row per figure and
// a column per fleet size.
func renderTable(rs []result) string {
	if len(rs) == 0 {
		return "(no results)"
	}
	var b strings.Builder
	b.WriteString("| figure | goal |")
	for _, r := range rs {
		fmt.Fprintf(&b, " %d agents |", r.agents)
	}
	b.WriteString("\n|---|---|")
	for range rs {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	row := func(name, goal string, f func(r result) string) {
		fmt.Fprintf(&b, "| %s | %s |", name, goal)
		for _, r := range rs {
			fmt.Fprintf(&b, " %s |", f(r))
		}
		b.WriteString("\n")
	}
	row("1. coordinator RSS per agent, idle", "≤ 40 KiB and below the anchor", func(r result) string {
		if r.rssAfter == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f KiB", float64(r.rssAfter-r.rssBefore)/1024/float64(r.agents))
	})
	row("anchor: plain TLS 1.3 + yamux server, RSS per session", "", func(r result) string {
		if r.plain == nil || r.plain.rssAfter == 0 {
			return "-"
		}
		a := r.plain
		return fmt.Sprintf("%.1f KiB (heap %.1f KiB, stacks %.1f KiB, %.2f goroutines)",
			float64(a.rssAfter-a.rssBefore)/1024/float64(r.agents),
			(a.heapAfter-a.heapBefore)/1024/float64(r.agents),
			(a.stackAfter-a.stackBefore)/1024/float64(r.agents),
			(a.gorAfter-a.gorBefore)/float64(r.agents))
	})
	row("1. coordinator RSS before → after", "", func(r result) string {
		return fmt.Sprintf("%.0f → %.0f MiB", float64(r.rssBefore)/(1<<20), float64(r.rssAfter)/(1<<20))
	})
	row("1. Go heap in use per agent", "", func(r result) string {
		return fmt.Sprintf("%.1f KiB", (r.heapAfter-r.heapBefore)/1024/float64(r.agents))
	})
	row("1. goroutine stacks per agent", "", func(r result) string {
		return fmt.Sprintf("%.1f KiB", (r.stackAfter-r.stackBefore)/1024/float64(r.agents))
	})
	row("1. goroutines per agent", "", func(r result) string {
		return fmt.Sprintf("%.2f", (r.gorAfter-r.gorBefore)/float64(r.agents))
	})
	row("2. connect ramp: all connected", "", func(r result) string { return secs(r.connect) })
	row("2. connect ramp: all listed healthy", "≤ 10 s (10,000)", func(r result) string { return secs(r.healthy) })
	row("2. handshakes/s (agents / time to connected)", "", func(r result) string {
		if r.connect == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f", float64(r.agents)/r.connect.Seconds())
	})
	row("2. connection attempts (ok+failed+refused+shed+busy+silent)", "", func(r result) string { return fmt.Sprintf("%.0f", r.handshakeAttempts) })
	row("2. CPU during ramp (user+sys): coordinator / simulator", "", func(r result) string {
		return secs(r.cpu) + " / " + secs(r.simCPU)
	})
	row("3. health sweep (median)", "≤ 1 s", func(r result) string {
		if len(r.sweep) == 0 {
			return "-"
		}
		return fmt.Sprintf("%s (of %d: %s)", secs(median(r.sweep)), len(r.sweep), durs(r.sweep))
	})
	row("4. storm: all connected again", "", func(r result) string { return medianOf(r.storm) })
	row("4. storm: all listed healthy", "≤ 30 s", func(r result) string { return medianOf(r.stormHealthy) })
	row("4. storm: connection attempts", "", func(r result) string {
		if len(r.stormAttempts) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f", medianF(r.stormAttempts))
	})
	row("4. agents that gave up / coordinator crashed", "0 / no", func(r result) string {
		crashed := "no"
		if r.coordinatorCrashed {
			crashed = "YES"
		}
		return fmt.Sprintf("%d / %s", r.gaveUp, crashed)
	})
	row("idle CPU over the idle window: coordinator / simulator", "", func(r result) string {
		if r.idleWindow == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f%% / %.0f%% of a core", 100*r.coordIdle.Seconds()/r.idleWindow.Seconds(), 100*r.simIdleCPU.Seconds()/r.idleWindow.Seconds())
	})
	row("simulator RSS per agent", "", func(r result) string {
		if r.simRSS == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f KiB", float64(r.simRSS)/1024/float64(r.agents))
	})
	return b.String()
}

func durs(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmt.Sprintf("%.2f", d.Seconds())
	}
	return strings.Join(s, ", ")
}

func medianOf(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	if len(ds) == 1 {
		return secs(ds[0])
	}
	return fmt.Sprintf("%s (median of %d: %s)", secs(median(ds)), len(ds), durs(ds))
}

func command(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.Join(strings.Fields(line)[1:], " ")
}

func renderDoc(b *bench, args []string, rs []result, table string, took time.Duration) string {
	dirty := ""
	if command("git", "status", "--porcelain") != "" {
		dirty = " (dirty tree)"
	}
	var s strings.Builder
	fmt.Fprintf(&s, "# Fleet benchmark results\n\n")
	fmt.Fprintf(&s, "- when: %s, took %s\n", time.Now().UTC().Format(time.RFC3339), took.Round(time.Second))
	fmt.Fprintf(&s, "- command: `%s`\n", strings.Join(args, " "))
	fmt.Fprintf(&s, "- commit: %s%s\n", command("git", "rev-parse", "--short", "HEAD"), dirty)
	fmt.Fprintf(&s, "- machine: %d CPUs, %s memory, kernel %s, %s\n", runtime.NumCPU(), memTotal(), command("uname", "-r"), runtime.Version())
	fmt.Fprintf(&s, "- coordinator: --health-interval %s, default accept limits; simulator and coordinator are separate processes on this machine\n", b.healthInterval)
	if len(b.gcEnv) > 0 {
		fmt.Fprintf(&s, "- Go runtime settings given to the coordinator and the anchor: `%s`\n", strings.Join(b.gcEnv, " "))
	}
	if b.anchor {
		s.WriteString("- anchor (figure 1): `tendril-fleet plain-server`, its own process started with the coordinator's environment: TLS 1.3 with the agent session's settings (ECDSA certificates both ways), `yamux.Server` with `yamux.DefaultConfig()` and one goroutine accepting streams per session; `tendril-fleet plain-clients` holds the sessions from another process, each having said one hello on a stream; measured before the coordinator starts, its memory read as the coordinator's (2 s after start, and after the same idle wait)\n")
	}
	s.WriteString("\n")
	s.WriteString(table)
	return s.String()
}
