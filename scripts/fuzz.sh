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
# Go keeps every new interesting input in $GOCACHE/fuzz/<package>/<target>
# and replays all of them as a baseline before fuzzing; on a machine that runs
# this script every day that corpus only grows and would eat the budget. Only
# the newest FUZZ_CACHE_KEEP (default 400) inputs per target are kept.
keep=${FUZZ_CACHE_KEEP:-400}
cache="$(go env GOCACHE)/fuzz/$(go list -m)"
# prune DIR N: keep only the newest N inputs of a target's cache dir.
prune() {
  [ -d "$1" ] || return 0
  find "$1" -maxdepth 1 -type f -printf '%T@ %p\n' | sort -rn |
    tail -n +$(($2 + 1)) | cut -d' ' -f2- | xargs -r rm -f
}
found=0
summary=()
while IFS= read -r file; do
  dir=$(dirname "$file")
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
    found=$((found+1))
    echo "fuzz: ./$dir $target for $budget"
    tcache="$cache/$dir/$target"
    prune "$tcache" "$keep"
    log=$(mktemp)
    attempt=0
    # A target is run again (at most twice) only for the two ways a run
    # can fail that say nothing about the code; any other failure, or a
    # third run, fails the target.
    while :; do
      attempt=$((attempt+1))
      if go test -run='^$' -fuzz="^${target}\$" -fuzztime="$budget" -fuzzminimizetime="$minimize" "./$dir" 2>&1 | tee "$log"; then
        grep -qE '^fuzz: elapsed: [0-9]+s, execs: [0-9]+' "$log" && break
        # No execs line: Go replays the seed and cached inputs (the
        # baseline) before it fuzzes, within the same -fuzztime, and on a
        # loaded machine a slow target (router/builtin runs jpegtran) may
        # not get through them: "gathering baseline coverage: 29/438" at
        # the end. The cache is cut to half of what got through, seeds
        # counted, and the target runs again.
        base=$(grep -oE 'gathering baseline coverage: [0-9]+/[0-9]+' "$log" | tail -1 | grep -oE '[0-9]+/[0-9]+' || true)
        if [ "$attempt" -lt 3 ] && [ -n "$base" ]; then
          ran=${base%/*} total=${base#*/}
          cached=0
          [ -d "$tcache" ] && cached=$(find "$tcache" -maxdepth 1 -type f | wc -l)
          cut=$((ran / 2 - (total - cached)))
          [ "$cut" -lt 0 ] && cut=0
          if [ "$cut" -lt "$cached" ]; then
            echo "fuzz: $target: replaying its inputs took the whole budget ($ran of $total); keeping the newest $cut of $cached cached inputs and running it again"
            prune "$tcache" "$cut"
            continue
          fi
        fi
        rm -f "$log"
        echo "fuzz: $target made no executions" >&2
        exit 1
      fi
      # Go's fuzz coordinator can report its own -fuzztime running out as a
      # failure: the deadline closes ctx.Done() before the derived context
      # of the workers is cancelled, and stop() keeps DeadlineExceeded as the
      # error (internal/fuzz/fuzz.go, the `err == fuzzCtx.Err()` check). Such a
      # run found no failing input: no "Failing input written" line and the
      # only failure text is the deadline. It is run again.
      if [ "$attempt" -lt 3 ] && grep -qx '    context deadline exceeded' "$log" &&
        ! grep -q 'Failing input written' "$log" && ! grep -qE '^\s+[A-Za-z0-9_]+_test\.go:[0-9]+:' "$log"; then
        echo "fuzz: $target: the coordinator reported its own time limit as a failure (no failing input); running it again"
        continue
      fi
      rm -f "$log"
      exit 1
    done
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
