#!/usr/bin/env bash
# deps.sh installs what the tests need and the machine lacks. It changes
# nothing on a machine that has everything, so it is safe to run each time.
set -euo pipefail

missing=()
# openssl: a non-Go TLS peer for the TLS policy tests.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# A C compiler: go test -race needs cgo.
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
# systemd-analyze: verifies the agent's generated systemd unit. Debian's
# systemd package provides it; it works without systemd as PID 1.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# PostgreSQL's server binaries: the store tests start a throwaway cluster
# with them (internal/pgtest). Debian keeps them out of PATH, in
# /usr/lib/postgresql/<version>/bin. Its package may also start a cluster
# of its own on install; the tests do not use it.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	missing+=(postgresql)
fi
# chromium: the web console's browser tests drive it headless (chromedp).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# tinyproxy: a real HTTP CONNECT proxy for the agents-behind-a-proxy tests,
# each of which starts its own on a free loopback port (internal/proxytest).
command -v tinyproxy >/dev/null 2>&1 || missing+=(tinyproxy)
# nginx: a real TLS-terminating reverse proxy for the agents-on-443 tests,
# each of which starts its own (internal/proxytest).
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
# ip (iproute2): the listening-agent tests run agents in network
# namespaces that cannot dial out.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# promtool: the metrics tests check /metrics with "promtool check metrics".
# Debian's prometheus package provides it; it may enable a Prometheus
# service of its own on install, which the tests do not use.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps.sh: please install: ${missing[*]} (no apt-get on this machine)" >&2
	exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
	sudo=(sudo)
fi
echo "deps.sh: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian may start the packaged tinyproxy and nginx on install; the tests
# start their own, and nothing else here should keep running.
for daemon in tinyproxy nginx; do
	if [[ " ${missing[*]} " == *" $daemon "* ]]; then
		"${sudo[@]}" pkill -x "$daemon" || true
	fi
done
