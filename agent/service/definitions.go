package service

import (
	"fmt"
	"strings"
	"text/template"
	"time"
)

// stopMargin is how much longer than the agent's own stop timeout a
// service manager waits before it kills: the agent's bound comes first.
const stopMargin = 5 * time.Second

// definition is what a template needs.
type definition struct {
	Config
	Description string
	Args        []string
	// StopSeconds is how long the service manager waits for a stop.
	StopSeconds int
	PIDFile     string
	Env         string
}

func newDefinition(c Config) definition {
	return definition{
		Config:      c,
		Description: "Tendril deployment agent with home " + c.Home,
		Args:        c.Arguments(),
		StopSeconds: int((c.StopTimeout + stopMargin + time.Second - 1) / time.Second),
		PIDFile:     PIDFile(c.Name),
		Env:         Env,
	}
}

var funcs = template.FuncMap{"sh": shellQuote, "sd": systemdQuote, "sdpath": systemdPath}

// systemdUnit is the unit kardianos installs for linux-systemd.
// KillMode=process: a stop signals the agent alone, which stops its own
// tasks; the upgrade watchdog it starts must survive the agent's exit (it
// restores the previous binary when a new version dies), which the default
// control-group mode would prevent.
var systemdUnit = template.Must(template.New("unit").Funcs(funcs).Parse(`[Unit]
Description={{sdpath .Description}}
Documentation=https://github.com/tendrildeploy/tendril#installing-the-agent-as-a-service
After=network-online.target
Wants=network-online.target
ConditionFileIsExecutable={{sdpath .Executable}}

[Service]
Type=simple
ExecStart={{sd .Executable}}{{range .Args}} {{sd .}}{{end}}
WorkingDirectory={{sdpath .Home}}
Environment={{sd (printf "%s=%s" .Env .Name)}}
Restart=on-failure
RestartSec=5
KillMode=process
TimeoutStopSec={{.StopSeconds}}

[Install]
WantedBy=multi-user.target
`))

// sysvScript is the init script kardianos installs for unix-systemv as
// /etc/init.d/NAME. status follows LSB: 0 running, 1 dead with a pid file
// left, 3 not running.
var sysvScript = template.Must(template.New("sysv").Funcs(funcs).Parse(`#!/bin/sh
### BEGIN INIT INFO
# Provides:          {{.Name}}
# Required-Start:    $network $remote_fs
# Required-Stop:     $network $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: Tendril deployment agent ({{.Name}})
# Description:       {{.Description}}
### END INIT INFO
# Written by "tendril-agent service install"; removed by "service uninstall".

name={{sh .Name}}
exe={{sh .Executable}}
home={{sh .Home}}
pid_file={{sh .PIDFile}}
stop_seconds={{.StopSeconds}}
# Tells the agent that this script runs it, and under which name.
{{.Env}}={{sh .Name}}
export {{.Env}}

# is_running: the pid file names a live process (not a zombie) that runs
# the agent's binary (an upgrade replaces the file: "(deleted)").
is_running() {
    [ -f "$pid_file" ] || return 1
    pid=$(cat "$pid_file" 2>/dev/null)
    case "$pid" in ''|*[!0-9]*) return 1 ;; esac
    state=$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$pid/stat" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ] || return 1
    case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in
        "$exe"|"$exe (deleted)") return 0 ;;
    esac
    return 1
}

do_start() {
    if is_running; then
        echo "$name is already running"
        return 0
    fi
    mkdir -p "$home/Logs"
    cd "$home" || exit 1
    # setsid: the agent leaves the caller's session and process group. Its
    # own log is $home/Logs/agent.log; this file catches what the Go
    # runtime prints when it crashes.
    setsid {{sh .Executable}}{{range .Args}} {{sh .}}{{end}} </dev/null >>"$home/Logs/service.out" 2>&1 &
    echo $! >"$pid_file"
    sleep 1
    if ! is_running; then
        rm -f "$pid_file"
        echo "$name failed to start; see $home/Logs/agent.log and $home/Logs/service.out" >&2
        return 1
    fi
    echo "Started $name"
}

do_stop() {
    if ! is_running; then
        rm -f "$pid_file"
        echo "$name is not running"
        return 0
    fi
    kill -TERM "$pid"
    i=0
    while is_running && [ "$i" -lt $((stop_seconds * 10)) ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if is_running; then
        echo "$name did not stop within $stop_seconds s; killing it" >&2
        kill -KILL "$pid"
        sleep 0.5
    fi
    rm -f "$pid_file"
    echo "Stopped $name"
}

case "$1" in
    start) do_start ;;
    stop) do_stop ;;
    restart|force-reload) do_stop && do_start ;;
    status)
        if is_running; then
            echo "Running"
            exit 0
        elif [ -f "$pid_file" ]; then
            echo "Stopped (dead, pid file left)"
            exit 1
        else
            echo "Stopped"
            exit 3
        fi
        ;;
    *)
        echo "Usage: $0 {start|stop|restart|status}" >&2
        exit 2
        ;;
esac
`))

// SystemdUnit is the systemd unit installed for c.
func SystemdUnit(c Config) (string, error) {
	if err := c.validate(); err != nil {
		return "", err
	}
	return render(systemdUnit, c)
}

// SysVScript is the SysV init script installed for c.
func SysVScript(c Config) (string, error) {
	if err := c.validate(); err != nil {
		return "", err
	}
	return render(sysvScript, c)
}

func render(t *template.Template, c Config) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, newDefinition(c)); err != nil {
		return "", fmt.Errorf("render %s for service %s: %w", t.Name(), c.Name, err)
	}
	out := b.String()
	// kardianos expands {{...}} in the text it is given: a home holding
	// braces would be mangled. Names cannot; paths could, rarely.
	if strings.Contains(out, "{{") {
		return "", fmt.Errorf("render %s for service %s: paths must not contain \"{{\"", t.Name(), c.Name)
	}
	return out, nil
}

// shellQuote quotes s for sh in single quotes.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// systemdQuote quotes one word of a systemd command line or assignment:
// specifiers (%) and variables ($) are escaped, and a word with spaces,
// quotes or backslashes is double-quoted.
func systemdQuote(s string) string {
	s = strings.NewReplacer("%", "%%", "$", "$$").Replace(s)
	if s != "" && !strings.ContainsAny(s, " \t\"'\\;") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// systemdPath escapes the specifiers of a value that systemd takes whole
// (a path, a description).
func systemdPath(s string) string { return strings.ReplaceAll(s, "%", "%%") }
