#!/usr/bin/env bash
# dist.sh VERSION builds the release archives in ./dist: for each platform
# tendril-agent-<v>-<os>-<arch> and tendril-server-<v>-<os>-<arch> (.tar.gz,
# .zip on Windows), the Calamari bundle, and SHA256SUMS over all of them.
# The agent archive holds install.sh (Linux, macOS).
set -euo pipefail

version=${1:?usage: dist.sh VERSION}
go=${GO:-go}
platforms=(linux/amd64 linux/arm64 windows/amd64 darwin/arm64)
ldflags="-X github.com/tendrildeploy/tendril/version.Version=$version"
root=$(cd "$(dirname "$0")/.." && pwd)
dist="$root/dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dist"

zipdir() { # zipdir ARCHIVE DIR: DIR (relative to cwd) into ARCHIVE
	if command -v zip >/dev/null 2>&1; then
		zip -qr "$1" "$2"
	elif command -v python3 >/dev/null 2>&1; then
		python3 -m zipfile -c "$1" "$2"
	else
		echo "dist.sh: need zip or python3 for the Windows archives (apt-get install zip)" >&2
		exit 1
	fi
}

archives=()
for p in "${platforms[@]}"; do
	os=${p%/*} arch=${p#*/}
	ext=""
	[ "$os" = windows ] && ext=.exe
	for cmd in tendril-agent tendril-server; do
		base="$cmd-$version-$os-$arch"
		mkdir -p "$work/$base"
		(cd "$root" && CGO_ENABLED=0 GOOS=$os GOARCH=$arch "$go" build -trimpath -ldflags "$ldflags" -o "$work/$base/$cmd$ext" "./cmd/$cmd")
		if [ "$cmd" = tendril-agent ] && [ "$os" != windows ]; then
			cp "$root/scripts/install.sh" "$work/$base/install.sh"
			chmod 0755 "$work/$base/install.sh"
		fi
		rm -f "$dist/$base.tar.gz" "$dist/$base.zip"
		if [ "$os" = windows ]; then
			(cd "$work" && zipdir "$dist/$base.zip" "$base")
			archives+=("$base.zip")
		else
			tar -C "$work" -czf "$dist/$base.tar.gz" --owner=0 --group=0 "$base"
			archives+=("$base.tar.gz")
		fi
	done
done
(cd "$root" && "$go" run ./internal/mkbundle -go "$go" -version "$version" -out "$dist/calamari-$version.tar.gz")
archives+=("calamari-$version.tar.gz")
(cd "$dist" && sha256sum "${archives[@]}" >SHA256SUMS)
echo "dist.sh: ${#archives[@]} archives and SHA256SUMS in $dist"
