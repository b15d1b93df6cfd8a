#!/usr/bin/env bash
# Runs every fuzz target of the project for a bounded time each (default 30s).
# A target is any `func FuzzXxx(f *testing.F)` in a _test.go file.
set -euo pipefail
budget=${1:-30s}
cd "$(dirname "$0")/.."
found=0
while IFS= read -r file; do
  dir=$(dirname "$file")
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
    found=$((found+1))
    echo "fuzz: ./$dir $target for $budget"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$budget" "./$dir"
  done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' || true)
[ "$found" -gt 0 ] || { echo "fuzz: no fuzz targets found" >&2; exit 1; }
