#!/usr/bin/env bash
# Runs every fuzz target of the project for a bounded time each (default 30s)
# and prints, per target, the executions and executions per second it made.
# A target is any `func FuzzXxx(f *testing.F)` in a _test.go file.
#
# -fuzzminimizetime is bounded (FUZZ_MINIMIZE, default 1s): by default Go
# spends up to 60s minimizing every new interesting input, during which the
# target reports 0 execs/s; in a 30s budget that was most of the run.
set -euo pipefail
budget=${1:-30s}
minimize=${FUZZ_MINIMIZE:-1s}
cd "$(dirname "$0")/.."
found=0
summary=()
while IFS= read -r file; do
  dir=$(dirname "$file")
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
    found=$((found+1))
    echo "fuzz: ./$dir $target for $budget"
    log=$(mktemp)
    if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$budget" -fuzzminimizetime="$minimize" "./$dir" 2>&1 | tee "$log"; then
      rm -f "$log"
      exit 1
    fi
    # The last progress line: "fuzz: elapsed: 31s, execs: 29795 (0/sec), ...".
    line=$(grep -E '^fuzz: elapsed: [0-9]+s, execs: [0-9]+' "$log" | tail -1 || true)
    rm -f "$log"
    secs=$(sed -E 's/^fuzz: elapsed: ([0-9]+)s.*/\1/' <<<"$line")
    execs=$(sed -E 's/.*execs: ([0-9]+).*/\1/' <<<"$line")
    rate=0
    if [ -n "$line" ] && [ "${secs:-0}" -gt 0 ]; then rate=$((execs / secs)); fi
    if [ "${execs:-0}" -eq 0 ]; then
      echo "fuzz: $target made no executions" >&2
      exit 1
    fi
    summary+=("$(printf '%-40s %-24s %10s execs %8s execs/s' "./$dir" "$target" "${execs:-0}" "$rate")")
  done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' || true)
[ "$found" -gt 0 ] || { echo "fuzz: no fuzz targets found" >&2; exit 1; }
echo "fuzz: summary (budget $budget per target)"
printf '%s\n' "${summary[@]}"
