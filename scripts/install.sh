#!/bin/sh
# install.sh installs the Tendril agent from a release archive as a
# service, in one line:
#
#   sudo ./install.sh --join 'tendril://HOST:PORT/?thumbprint=...&token=...'
#
# It copies the tendril-agent binary next to this script to the bin folder,
# registers the agent with the coordinator, installs the service and starts
# it. Running it again skips what is done already (a registered home, an
# installed service), so it also repairs a half-finished install.
set -eu

usage() {
	cat <<USAGE
Usage: install.sh --join JOINSTRING [--home DIR] [--name NAME] [--agent-name NAME]
                  [--environment ENV] [--bin-dir DIR] [--dry-run]

  --join JOINSTRING   join string from "tendril-server token create" (not needed
                      when the home is already registered)
  --home DIR          agent home folder (default /var/lib/tendril-agent)
  --name NAME         service name (default: derived from the home folder)
  --agent-name NAME   agent name on the coordinator (default: the host name)
  --environment ENV   environment to join (default: the token's)
  --bin-dir DIR       where the binary goes (default /usr/local/bin for the
                      default home, else DIR/bin next to the home: agents that
                      upgrade themselves must not share one binary)
  --dry-run           print what would be done, change nothing
USAGE
}

die() {
	echo "install.sh: $*" >&2
	exit 1
}

join="" home="/var/lib/tendril-agent" name="" agent_name="" environment="" bin_dir="" dry_run=0
while [ $# -gt 0 ]; do
	case "$1" in
	--join | --home | --name | --agent-name | --environment | --bin-dir)
		[ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"
		case "$1" in
		--join) join=$2 ;;
		--home) home=$2 ;;
		--name) name=$2 ;;
		--agent-name) agent_name=$2 ;;
		--environment) environment=$2 ;;
		--bin-dir) bin_dir=$2 ;;
		esac
		shift 2
		;;
	--dry-run) dry_run=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done

case "$home" in
/*) ;;
*) die "--home must be an absolute path, got $home" ;;
esac
if [ -z "$bin_dir" ]; then
	if [ "$home" = /var/lib/tendril-agent ]; then
		bin_dir=/usr/local/bin
	else
		bin_dir="$home/bin"
	fi
fi

here=$(cd "$(dirname "$0")" && pwd)
src="$here/tendril-agent"
[ -x "$src" ] || die "no tendril-agent binary next to install.sh ($src)"
if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
	die "installing a service needs root: run with sudo"
fi

run() {
	if [ "$dry_run" -eq 1 ]; then
		echo "+ $*"
	else
		"$@"
	fi
}

exe="$bin_dir/tendril-agent"
name_args=""
[ -n "$name" ] && name_args="--name $name"

# 1. The binary. A running agent's binary is replaced by its own upgrades,
# not by this script: a copy that differs from the archive's is kept.
if [ -e "$exe" ] && ! cmp -s "$src" "$exe"; then
	echo "install.sh: keeping the existing $exe ($("$exe" version 2>/dev/null || echo unknown version)); remove it to install this one" >&2
elif [ ! -e "$exe" ]; then
	run mkdir -p "$bin_dir"
	run cp "$src" "$exe.tmp"
	run chmod 0755 "$exe.tmp"
	run mv "$exe.tmp" "$exe"
fi

# 2. The registration.
if [ -f "$home/agent.json" ]; then
	echo "install.sh: $home is registered already; keeping its registration"
else
	[ -n "$join" ] || die "--join is required: $home is not registered (get a join string with: tendril-server token create --environment ENV)"
	set -- register --home "$home" --join "$join"
	[ -n "$agent_name" ] && set -- "$@" --name "$agent_name"
	[ -n "$environment" ] && set -- "$@" --environment "$environment"
	run "$exe" "$@"
fi

# 3. The service: installed unless it is, then started.
# shellcheck disable=SC2086 # name_args is empty or two words without spaces
status=0
if [ "$dry_run" -eq 1 ] && [ ! -x "$exe" ]; then
	status=4
else
	"$exe" service status --home "$home" $name_args >/dev/null 2>&1 || status=$?
fi
if [ "$status" -eq 4 ]; then
	# shellcheck disable=SC2086
	run "$exe" service install --home "$home" $name_args
fi
# shellcheck disable=SC2086
run "$exe" service start --home "$home" $name_args
if [ "$dry_run" -eq 0 ]; then
	# shellcheck disable=SC2086
	echo "install.sh: the agent service is $("$exe" service status --home "$home" $name_args || true); log: $home/Logs/agent.log"
fi
