#!/usr/bin/env bash
# fuzz.sh runs every fuzz target in the module for FUZZTIME (default 30s).
# go test -fuzz takes one target of one package at a time, so the targets
# are found in the sources.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}

found=0
while IFS= read -r file; do
	dir=$(dirname "$file")
	for target in $(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' "$file"); do
		found=1
		echo "== $dir $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "./$dir"
	done
done < <(grep -rl --include='*_test.go' '^func Fuzz' . | sed 's|^\./||' | sort)

if [ "$found" -eq 0 ]; then
	echo "no fuzz targets found"
fi
