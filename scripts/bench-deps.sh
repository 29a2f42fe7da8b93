#!/usr/bin/env bash
# bench-deps.sh installs what `make bench` needs beyond the tests'
# dependencies (scripts/deps.sh) and the machine lacks: the OpenSSH server
# and client that the transfer benchmark (tendril-fleet bench-transfer)
# compares Tendril with, and the proxies it measures agents behind. It
# changes nothing and prints nothing on a machine that has everything, so
# it is safe to run each time.
set -euo pipefail

missing=()
# sshd, started by the benchmark on a free loopback port with its own
# configuration and throwaway keys; the distribution's service is not used.
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
# ssh, scp and ssh-keygen: the client side of the comparison.
for c in ssh scp ssh-keygen; do
	if ! command -v "$c" >/dev/null 2>&1; then
		missing+=(openssh-client)
		break
	fi
done
# tinyproxy and nginx: the benchmark starts its own of each on a free
# loopback port (internal/proxyrun) and times an agent behind each, as the
# tests do; the distribution's services are not used.
command -v tinyproxy >/dev/null 2>&1 || missing+=(tinyproxy)
command -v nginx >/dev/null 2>&1 || missing+=(nginx)

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "bench-deps.sh: please install: ${missing[*]} (no apt-get on this machine)" >&2
	exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
	sudo=(sudo)
fi
echo "bench-deps.sh: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian may start the packaged tinyproxy and nginx on install; the
# benchmark starts its own, and nothing else here should keep running.
for daemon in tinyproxy nginx; do
	if [[ " ${missing[*]} " == *" $daemon "* ]]; then
		"${sudo[@]}" pkill -x "$daemon" || true
	fi
done
