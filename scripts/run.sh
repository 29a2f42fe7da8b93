#!/usr/bin/env bash
# run.sh is `make run`: a coordinator in ./data and one agent enrolled with
# it, both in the background of this script, until Ctrl-C stops both.
#
# It is idempotent: the first run initializes ./data and registers the
# agent; later runs reuse both.
#
# The agent's tasks run as the agent's user, and the data folder holds the
# coordinator's keys (admin.key, signing.key, master.key). Run as root, the
# agent gets a user of its own (tendril-agent, created if missing) and a
# home outside the data folder (./agent-home, owned by that user), and the
# data folder stays 0700 root: a task cannot read the keys. Run as anyone
# else, the agent shares your user and home is ./data/agent-home: the
# script says so, since tasks can then read the keys.
#
# Environment: TENDRIL_LISTEN (agent port, default :10943) and TENDRIL_HTTP
# (API, default 127.0.0.1:10980) override the coordinator's addresses;
# as root, TENDRIL_AGENT_USER and TENDRIL_AGENT_HOME the agent's user and
# home.
set -euo pipefail
cd "$(dirname "$0")/.."

data=./data
home=$data/agent-home
agent_user=${TENDRIL_AGENT_USER:-tendril-agent}
listen=${TENDRIL_LISTEN:-:10943}
http=${TENDRIL_HTTP:-127.0.0.1:10980}
server=bin/tendril-server
agent=bin/tendril-agent

# The admin commands below must talk to the coordinator started here, not
# to one the caller's environment points at.
unset TENDRIL_URL TENDRIL_API_KEY TENDRIL_DATA

say() { printf '%s\n' "$*"; }
die() {
	printf 'make run: %s\n' "$*" >&2
	exit 1
}

# hostport HOST:PORT prints "HOST PORT"; an empty or wildcard host becomes
# loopback, which is where this script reaches the processes it started.
hostport() {
	local host=${1%:*} port=${1##*:}
	host=${host#[}
	host=${host%]}
	case $host in "" | 0.0.0.0 | ::) host=127.0.0.1 ;; esac
	printf '%s %s\n' "$host" "$port"
}
read -r http_host http_port < <(hostport "$http")
read -r agent_host agent_port < <(hostport "$listen")
case $http_host in *:*) api_url="http://[$http_host]:$http_port" ;; *) api_url="http://$http_host:$http_port" ;; esac
case $agent_host in *:*) agent_dial="[$agent_host]:$agent_port" ;; *) agent_dial="$agent_host:$agent_port" ;; esac

[ -x "$server" ] && [ -x "$agent" ] || die "$server and $agent are missing: run \"make build\" first"

# as_agent prefixes a command that runs as the agent's user: nothing when
# not root. An array, not a function, so that the agent's pid below is
# runuser's (which passes TERM on) or the agent's own.
as_agent=()
if [ "$(id -u)" -eq 0 ]; then
	if ! id -u "$agent_user" >/dev/null 2>&1; then
		say "Creating the system user $agent_user for the agent, so that its tasks cannot read $data"
		if command -v useradd >/dev/null 2>&1; then
			useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$agent_user" ||
				die "could not create the user $agent_user"
		elif command -v adduser >/dev/null 2>&1; then
			adduser -S -D -H -h /nonexistent -s /sbin/nologin "$agent_user" || die "could not create the user $agent_user"
		else
			die "no useradd or adduser to create the user $agent_user; create it, or set TENDRIL_AGENT_USER to an unprivileged user"
		fi
	fi
	[ "$(id -u "$agent_user")" -ne 0 ] || die "TENDRIL_AGENT_USER=$agent_user is root: give an unprivileged user"
	if command -v runuser >/dev/null 2>&1; then
		as_agent=(runuser -u "$agent_user" --)
	elif command -v setpriv >/dev/null 2>&1; then
		as_agent=(setpriv --reuid="$agent_user" --regid="$(id -g "$agent_user")" --init-groups --)
	else
		die "no runuser or setpriv to run the agent as $agent_user"
	fi
	home=$(realpath -m "${TENDRIL_AGENT_HOME:-./agent-home}")
	# An agent registered by an earlier run as root lived in the data
	# folder: it moves out, keeping its identity.
	if [ ! -e "$home" ] && [ -f "$data/agent-home/agent.json" ]; then
		say "Moving the agent home out of $data to $home"
		mv "$data/agent-home" "$home"
	fi
	mkdir -p "$home/bin"
	# The agent runs its own copy, which it may replace when upgraded.
	install -m 0755 "$agent" "$home/bin/tendril-agent"
	chown -R "$agent_user": "$home"
	chmod 0700 "$home"
	agent=$home/bin/tendril-agent
	"${as_agent[@]}" test -x "$agent" ||
		die "the user $agent_user cannot reach $home (a folder above it is not searchable by others): set TENDRIL_AGENT_HOME to a folder it can reach"
	if [ -d "$data" ]; then
		chmod 0700 "$data"
	fi
else
	say "Note: the agent runs as $(id -un), as the coordinator does, so its tasks can read $data (admin.key, signing.key); run make run as root to give the agent a user of its own, and in production run the agent as its own user on another host."
fi

server_pid=""
agent_pid=""

# stop ends both processes and waits for them, so that Ctrl-C leaves
# nothing running. TERM is what the service managers send too.
stop() {
	trap - INT TERM EXIT
	local code=${1:-0}
	if [ -n "$server_pid$agent_pid" ]; then
		say ""
		say "Stopping..."
		[ -n "$agent_pid" ] && kill -TERM "$agent_pid" 2>/dev/null || true
		[ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null || true
		[ -n "$agent_pid" ] && wait "$agent_pid" 2>/dev/null || true
		[ -n "$server_pid" ] && wait "$server_pid" 2>/dev/null || true
		say "Stopped."
	fi
	exit "$code"
}
trap 'stop 0' INT TERM
# Any failure on the way up must not leave half a setup running.
trap 'stop 1' EXIT

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# A second coordinator on the same data folder would fight over it.
if [ -f "$data/run.json" ]; then
	pid=$(sed -nE 's/^ *"pid": *([0-9]+).*/\1/p' "$data/run.json")
	if alive "$pid"; then
		trap - EXIT
		die "a coordinator is already running with $data (pid $pid); stop it first"
	fi
fi

if ! "$server" thumbprint --data "$data" >/dev/null 2>&1; then
	say "Initializing a coordinator in $data"
	# init's closing hint (how to start the coordinator) is done below.
	"$server" init --data "$data" | grep -v '^Start the coordinator'
	say ""
fi

mkdir -p "$data"
say "Starting the coordinator (log: $data/server.log)"
"$server" run --data "$data" --listen "$listen" --http "$http" >>"$data/server.log" 2>&1 &
server_pid=$!

# healthz succeeds when the API answers GET /healthz with 200.
healthz() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsS -o /dev/null --max-time 2 "$api_url/healthz" 2>/dev/null
	else
		# bash alone, for machines without curl.
		(
			exec 3<>"/dev/tcp/$http_host/$http_port" || exit 1
			printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$http_host" >&3
			head -n 1 <&3 | grep -q ' 200 '
		) 2>/dev/null
	fi
}

deadline=$((SECONDS + 30))
until healthz; do
	alive "$server_pid" || die "the coordinator exited; see $data/server.log: $(tail -n 1 "$data/server.log")"
	[ $SECONDS -lt $deadline ] || die "the coordinator did not answer $api_url/healthz within 30s; see $data/server.log"
	sleep 0.2
done
# run.json is written as the coordinator starts serving; admin commands
# given --data read it.
until [ -f "$data/run.json" ]; do
	[ $SECONDS -lt $deadline ] || die "the coordinator wrote no $data/run.json"
	sleep 0.1
done

if [ ! -f "$home/agent.json" ]; then
	say "Registering an agent in $home (environment Local)"
	join=$("$server" token create --data "$data" --environment Local --ttl 10m --server "$agent_dial")
	"${as_agent[@]}" "$agent" register --home "$home" --join "$join"
fi
name=$(sed -nE 's/^ *"name": *"([^"]*)".*/\1/p' "$home/agent.json" | head -n 1)
[ -n "$name" ] || die "no agent name in $home/agent.json"

say "Starting the agent $name (log: $data/agent.log)"
"${as_agent[@]}" "$agent" run --home "$home" >>"$data/agent.log" 2>&1 &
agent_pid=$!

# connected_healthy reads `agents list --json` (one field per line) and
# succeeds when the agent called $name is connected and healthy.
connected_healthy() {
	"$server" agents list --data "$data" --json 2>/dev/null | awk -v name="$name" '
		/^ *"name": / { n = $0; sub(/^ *"name": *"/, "", n); sub(/".*$/, "", n); c = 0 }
		/^ *"connected": / { c = ($0 ~ /true/) }
		/^ *"health": / { if (n == name && c && $0 ~ /"healthy"/) ok = 1 }
		END { exit !ok }'
}

deadline=$((SECONDS + 60))
until connected_healthy; do
	alive "$server_pid" || die "the coordinator exited; see $data/server.log"
	alive "$agent_pid" || die "the agent exited; see $data/agent.log: $(tail -n 1 "$data/agent.log")"
	[ $SECONDS -lt $deadline ] || die "the agent $name was not connected and healthy within 60s; see $data/agent.log and $data/server.log"
	sleep 0.5
done

# The Calamari bundle make build just produced: uploading it again is a
# no-op, and the agent installs it at its next health check or task.
bundle="dist/calamari-${VERSION:-0.0.0-dev}.tar.gz"
if [ -f "$bundle" ]; then
	say "Uploading the Calamari bundle $bundle"
	"$server" calamari push "$bundle" --data "$data" || die "could not upload $bundle; see $data/server.log"
	# Install it now rather than at the next health check, so the agent is
	# listed current from the start.
	"$server" calamari update --agent "$name" --data "$data" || die "could not install Calamari on $name; see $data/agent.log"
fi

say ""
say "Tendril is running."
say "  Web console:      $api_url/   (sign in with the admin API key: cat $data/admin.key)"
say "  Coordinator API:  $api_url   (agents connect to $listen)"
say "  Admin API key:    in $data/admin.key, readable only by you (print it: cat $data/admin.key)"
say "  Logs:             $data/server.log, $data/agent.log"
say ""
"$server" agents list --data "$data"
say ""
say "Try: $server agents list --data $data"
say "     $server task run --agent $name --data $data -- run-script --inline 'echo hello from \$(hostname)'"
say "Press Ctrl-C to stop the coordinator and the agent."

trap - EXIT
trap 'stop 0' INT TERM
# Wait for either process; one that exits on its own is a failure to
# report, and the other one is stopped with it.
set +e
wait -n "$server_pid" "$agent_pid"
code=$?
set -e
if [ "$code" -eq 0 ]; then
	# Both programs exit 0 only when asked to stop (an interrupt that
	# reached them directly): a normal stop, not a failure.
	stop 0
fi
if alive "$server_pid"; then
	say "The agent exited (status $code); see $data/agent.log"
else
	say "The coordinator exited (status $code); see $data/server.log"
fi
stop 1
