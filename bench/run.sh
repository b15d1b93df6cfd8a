#!/usr/bin/env bash
# Dora benchmarks, called by `make bench`. Prints the goals table of
# issue 11 and ends with one line of medians:
#   ratios: router/nginx=… cpu/nginx=… instance/direct=… three/one=… cachehit/nginx=… gib/baseline=…
# (the line issue 11 asks for, unchanged; the wake-up row, a time rather
# than a ratio, is in the table above it).
#
# Runs, on one machine (compare ratios within a run, never across runs);
# every ratio of the table is the median of BENCH_ROUNDS (3) interleaved
# rounds, each round's ratio taken between runs of that round:
#   a small object through a one-step pipeline:
#     (a) direct:  POST /handler?cmd=<step> with the object as body, to the instance
#     (b) router:  GET /small?<step> through a Dora router (bench/cmd/harness)
#     (c) nginx:   the (a) request through nginx as a reverse proxy to the same instance
#     (d) the Go floor: the (b) request through bench/cmd/floor, the least
#         a Go proxy does for it (no HTTP library), to the same instance
#     (e) the Go floor, three steps: (d) through the instance three times,
#         each answer the next input (floor -steps 3), divided by that
#         round's (d): the most the three/one row can reach on this
#         machine for a proxy that does nothing else
#   with requests/s, p50, p99 and the CPU per request of instance and proxy,
#   and in the same round the object through three steps
#   (<step>|<step>|<step>) via the router, divided by that round's (b);
#   a result-cache hit (ufop "cached", the same program with cache: on)
#   alternating with nginx serving the same bytes as a static file;
#   p99 at a fixed rate, half the router's peak, direct, router and nginx
#   interleaved (-rate, open loop);
#   a big object through three steps alternating with a chain of seven
#   loopback socket copies (bench/cmd/chain; beside it the same chain
#   copying through user space, -copy user), with the router's peak RSS
#   during each stream (the row shows the largest);
#   the first request after scale to zero to a host process: the Go
#   benchmark BenchmarkWakeFromZero (cli/platform) on the embedded platform,
#   BENCH_WAKES wake-ups, each from zero instances.
#
# Knobs (env): BENCH_DURATION (10s), BENCH_CONCURRENCY (32), BENCH_SMALL
# (4096 bytes), BENCH_BIG_MIB (1024; 0 skips), BENCH_UFOP (passthru),
# BENCH_STEP (the step text, default $BENCH_UFOP), BENCH_ROUNDS (3),
# BENCH_SIDE_DURATION ($BENCH_DURATION) for each three-step, cache-hit
# and static-file run, BENCH_RATE_DURATION (5s) and BENCH_RATE_ROUNDS
# ($BENCH_ROUNDS) for the fixed-rate runs, BENCH_ROUTER_ENV (environment
# for the router alone, as "GOGC=400"), BENCH_INSTANCE_BIN (a prebuilt
# instance program instead of examples/$BENCH_UFOP), BENCH_WAKES (7
# wake-ups from zero; 0 skips).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DUR=${BENCH_DURATION:-10s}
CONC=${BENCH_CONCURRENCY:-32}
SMALL=${BENCH_SMALL:-4096}
BIG=${BENCH_BIG_MIB:-1024}
UFOP=${BENCH_UFOP:-passthru}
STEP=${BENCH_STEP:-$UFOP}
ROUNDS=${BENCH_ROUNDS:-3}
RATE_DUR=${BENCH_RATE_DURATION:-5s}
RATE_ROUNDS=${BENCH_RATE_ROUNDS:-$ROUNDS}
SIDE_DUR=${BENCH_SIDE_DURATION:-$DUR}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dora-bench.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

wait_port() { # port [seconds]
	local i
	for ((i = 0; i < ${2:-20} * 20; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	echo "nothing listens on port $1" >&2
	return 1
}

peak_rss() { # pid → peak RSS (VmHWM)
	awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$1/status"
}
rss() { # pid → RSS now (VmRSS)
	awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$1/status"
}

TCK=$(getconf CLK_TCK)
cpu_ticks() { # pids... → user+system clock ticks used so far
	local p t=0
	for p in "$@"; do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}

# run_load label proxy-pids... -- load args: runs the load tool and adds the
# CPU time per request of the instance and of the proxy (router, nginx),
# a figure less sensitive than req/s to what else the machine runs.
run_load() {
	local label=$1
	shift
	local pids=()
	while [ "$1" != "--" ]; do
		pids+=("$1")
		shift
	done
	shift
	local i0 p0 m0 out
	i0=$(cpu_ticks "$IPID")
	p0=$(cpu_ticks "${pids[@]}")
	m0=$(head -1 /proc/stat)
	out=$("$TMP/load" -kv -label "$label" "$@")
	echo "$out" | grep -v '^kv '
	kv() { echo "$out" | awk -v k="$1" '/^kv / {for (i = 2; i <= NF; i++) {split($i, a, "="); if (a[1] == k) print a[2]}}'; }
	RPS=$(kv rps) P99=$(kv p99us) MBPS=$(kv mbps)
	ICPU=0 PCPU=0
	local n
	n=$(kv ok)
	if [ -n "$n" ] && [ "$n" -gt 0 ]; then
		ICPU=$(awk -v i=$(($(cpu_ticks "$IPID") - i0)) -v n="$n" -v tck="$TCK" 'BEGIN {printf "%.1f", i / tck / n * 1e6}')
		PCPU=$(awk -v p=$(($(cpu_ticks "${pids[@]}") - p0)) -v n="$n" -v tck="$TCK" 'BEGIN {printf "%.1f", p / tck / n * 1e6}')
		printf '%-28s CPU per request: instance %.0f µs' "" "$ICPU"
		if [ "${#pids[@]}" -gt 0 ]; then printf ', proxy %.0f µs' "$PCPU"; fi
		printf '; machine %s busy\n' "$(busy "$m0" "$(head -1 /proc/stat)")"
	fi
}

# gc_since n: the router's GC cycles after the first n lines of its
# gctrace, their longest stop-the-world phase and longest concurrent mark
# (wall clock)
gc_lines() { awk '/^gc / {n++} END {print n + 0}' "$TMP/harness.log"; }
gc_since() {
	awk -v skip="$1" '/^gc / {if (++k <= skip) next; split($5, c, "+"); s = c[1] > c[3] ? c[1] : c[3]; if (s > stw) stw = s; if (c[2] > mark) mark = c[2]; n++}
		END {if (n == 0) print "no GC cycle"; else printf "%d GC cycles, longest stop-the-world %.2f ms, longest mark %.1f ms\n", n, stw, mark}' "$TMP/harness.log"
}

# busy "cpu line of /proc/stat before" "after" → share of the machine's
# CPU time not idle in between (other tenants' work included)
busy() { awk -v a="$1" -v b="$2" 'BEGIN {n = split(a, x); split(b, y); t = 0; for (i = 2; i <= 9; i++) t += y[i] - x[i]; if (t <= 0) print "?"; else printf "%.0f %%", 100 * (1 - (y[5] - x[5] + y[6] - x[6]) / t)}'; }

# median of the arguments (numbers; 0 when there are none)
median() {
	if [ $# -eq 0 ]; then
		echo 0
		return
	fi
	printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
# ratio a b → a/b with two decimals (0 when b is 0)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print 0; else printf "%.2f", a / b}'; }

echo "building..."
if [ -n "${BENCH_INSTANCE_BIN:-}" ]; then
	cp "$BENCH_INSTANCE_BIN" "$TMP/$UFOP"
else
	(cd "$ROOT" && go build -o "$TMP/$UFOP" "./examples/$UFOP")
fi
(cd "$ROOT" && go build -o "$TMP/harness" ./bench/cmd/harness &&
	go build -o "$TMP/load" ./bench/cmd/load && go build -o "$TMP/chain" ./bench/cmd/chain &&
	go build -o "$TMP/floor" ./bench/cmd/floor)

PI=$(free_port)
PORT=$PI PORT_HTTP=$PI HOST=127.0.0.1 "$TMP/$UFOP" >"$TMP/instance.log" 2>&1 &
IPID=$!
PIDS+=("$IPID")
wait_port "$PI"

PR=$(free_port)
echo "creating objects (small ${SMALL} B, big ${BIG} MiB)..."
# gctrace: one line per GC cycle of the router on its stderr (harness.log),
# summed up after each fixed-rate run. BENCH_ROUTER_ENV adds environment
# for the router alone (say GOGC=400, to compare a GC setting in one run).
# shellcheck disable=SC2086 # BENCH_ROUTER_ENV is split into NAME=value words on purpose
env GODEBUG="${GODEBUG:+$GODEBUG,}gctrace=1" ${BENCH_ROUTER_ENV:-} \
	"$TMP/harness" -listen "127.0.0.1:$PR" -dir "$TMP/data" -instances "127.0.0.1:$PI" \
	-ufop "$UFOP" -small "$SMALL" -big-mib "$BIG" >"$TMP/harness.out" 2>"$TMP/harness.log" &
HPID=$!
PIDS+=("$HPID")
wait_port "$PR" 600

PN=$(free_port)
mkdir -p "$TMP/nginx/logs"
cat >"$TMP/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $TMP/nginx/body;
	proxy_temp_path $TMP/nginx/proxy;
	fastcgi_temp_path $TMP/nginx/fastcgi;
	uwsgi_temp_path $TMP/nginx/uwsgi;
	scgi_temp_path $TMP/nginx/scgi;
	upstream instance { server 127.0.0.1:$PI; keepalive 128; }
	server {
		listen 127.0.0.1:$PN;
		location /static/ {
			root $TMP;
		}
		location / {
			proxy_pass http://instance;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_request_buffering off;
		}
	}
}
CONF
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" &
NPID=$!
PIDS+=("$NPID")
wait_port "$PN"
mapfile -t NPIDS < <(echo "$NPID"; pgrep -P "$NPID" || true)

head -c "$SMALL" /dev/urandom >"$TMP/small.bin"
CMD=$(printf '%s' "$STEP" | sed 's|/|%2F|g')

# The Go floor (bench/cmd/floor): the (b) request served by the least a Go
# program does for it (no HTTP library, no checks) through the same
# instance. Its CPU per request beside the router's and nginx's shows how
# much of the router's is its own work and how much any Go proxy pays.
PF=$(free_port)
"$TMP/floor" -listen "127.0.0.1:$PF" -instance "127.0.0.1:$PI" -object "$TMP/small.bin" -step "$STEP" >"$TMP/floor.log" 2>&1 &
FPID=$!
PIDS+=("$FPID")
wait_port "$PF"
PF3=$(free_port)
"$TMP/floor" -listen "127.0.0.1:$PF3" -instance "127.0.0.1:$PI" -object "$TMP/small.bin" -step "$STEP" -steps 3 >"$TMP/floor3.log" 2>&1 &
F3PID=$!
PIDS+=("$F3PID")
wait_port "$PF3"

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(go version | awk '{print $3}'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== ${SMALL}-byte object, one step ($STEP) direct, through the router and through nginx, then three steps ($STEP|$STEP|$STEP) through the router, then the Go floor (bench/cmd/floor) with one and three steps; $CONC connections, $DUR each (three steps $SIDE_DUR), $ROUNDS interleaved rounds ($(nproc) cores shared by client, proxy and instance)"
R_RN=() R_CPU=() R_INST=() ROUTER_RPS=() R_THREE=() THREE_RPS=() R_FLOOR=() R_RFLOOR=() R_FTHREE=()
for ((round = 1; round <= ROUNDS; round++)); do
	echo "-- round $round"
	run_load "(a) direct to instance" -- -url "http://127.0.0.1:$PI/handler?cmd=$CMD" -method POST -body "$TMP/small.bin" -c "$CONC" -d "$DUR"
	D_ICPU=$ICPU
	run_load "(b) through the router" "$HPID" -- -url "http://127.0.0.1:$PR/small?$STEP" -host bench.localhost -c "$CONC" -d "$DUR"
	B_RPS=$RPS B_ICPU=$ICPU B_PCPU=$PCPU
	run_load "(c) through nginx" "${NPIDS[@]}" -- -url "http://127.0.0.1:$PN/handler?cmd=$CMD" -method POST -body "$TMP/small.bin" -c "$CONC" -d "$DUR"
	C_PCPU=$PCPU
	R_RN+=("$(ratio "$B_RPS" "$RPS")") R_CPU+=("$(ratio "$B_PCPU" "$C_PCPU")") R_INST+=("$(ratio "$B_ICPU" "$D_ICPU")") ROUTER_RPS+=("$B_RPS")
	# Three steps ÷ the one step (b) of the same round, like the ratios
	# above: what else the machine runs changes over minutes, so figures
	# 10 s apart share more of it than figures from different rounds.
	run_load "(b) three steps, router" "$HPID" -- -url "http://127.0.0.1:$PR/small?$STEP|$STEP|$STEP" -host bench.localhost -c "$CONC" -d "$SIDE_DUR"
	R_THREE+=("$(ratio "$RPS" "$B_RPS")") THREE_RPS+=("$(printf '%.0f' "$RPS")")
	run_load "(d) the Go floor" "$FPID" -- -url "http://127.0.0.1:$PF/small" -c "$CONC" -d "$DUR"
	R_FLOOR+=("$(ratio "$PCPU" "$C_PCPU")") R_RFLOOR+=("$(ratio "$B_PCPU" "$PCPU")")
	D_RPS=$RPS
	run_load "(e) the Go floor, 3 steps" "$F3PID" -- -url "http://127.0.0.1:$PF3/small" -c "$CONC" -d "$SIDE_DUR"
	R_FTHREE+=("$(ratio "$RPS" "$D_RPS")")
done
echo "router peak RSS after the small runs: $(peak_rss $HPID)"

echo
echo "== a result-cache hit against nginx serving the same bytes as a static file, $CONC connections, $SIDE_DUR each, $ROUNDS interleaved rounds"
curl -sf -o "$TMP/static/small.bin" --create-dirs -H "Host: bench.localhost" "http://127.0.0.1:$PR/small?cached" # warms the cache
chmod o+x "$TMP" "$TMP/static" && chmod o+r "$TMP/static/small.bin" # nginx's workers run as another user
R_HIT=() HIT_RPS=() STATIC_RPS=()
for ((round = 1; round <= ROUNDS; round++)); do
	echo "-- round $round"
	run_load "(b) cache hit, router" "$HPID" -- -url "http://127.0.0.1:$PR/small?cached" -host bench.localhost -c "$CONC" -d "$SIDE_DUR"
	H_RPS=$RPS
	run_load "(c) static file, nginx" "${NPIDS[@]}" -- -url "http://127.0.0.1:$PN/static/small.bin" -c "$CONC" -d "$SIDE_DUR"
	R_HIT+=("$(ratio "$H_RPS" "$RPS")") HIT_RPS+=("$(printf '%.0f' "$H_RPS")") STATIC_RPS+=("$(printf '%.0f' "$RPS")")
done

ROUTER_MED=$(median "${ROUTER_RPS[@]}")
RATE=$(awk -v r="$ROUTER_MED" 'BEGIN {printf "%d", r / 2}')
echo
# Open loop (bench/cmd/load -rate): request i is due at i/RATE, sent by
# whichever of the 4×CONC connections is free, and its latency counts from
# its due time, so a wait for a connection or for the machine counts. One
# pacer thread sleeps with nanosleep: an idle Go program's timers wake up
# to a millisecond late and would send the requests in bursts. Direct,
# router and nginx (proxying the direct request) run interleaved,
# $RATE_ROUNDS rounds; the machine's busy share is printed with each run.
echo "== fixed rate: $RATE requests/s (half the router's median peak), $((4 * CONC)) connections, $RATE_DUR each, $RATE_ROUNDS interleaved rounds"
R_ADD=() R_NADD=() R_BP99=() R_DP99=() R_NP99=()
for ((round = 1; round <= RATE_ROUNDS; round++)); do
	echo "-- round $round"
	run_load "(a) direct, fixed rate" -- -url "http://127.0.0.1:$PI/handler?cmd=$CMD" -method POST -body "$TMP/small.bin" -c "$((4 * CONC))" -d "$RATE_DUR" -rate "$RATE"
	D_P99=$P99
	G0=$(gc_lines)
	run_load "(b) router, fixed rate" "$HPID" -- -url "http://127.0.0.1:$PR/small?$STEP" -host bench.localhost -c "$((4 * CONC))" -d "$RATE_DUR" -rate "$RATE"
	B_P99=$P99
	printf '%-28s router: %s\n' "" "$(gc_since "$G0")"
	run_load "(c) nginx, fixed rate" "${NPIDS[@]}" -- -url "http://127.0.0.1:$PN/handler?cmd=$CMD" -method POST -body "$TMP/small.bin" -c "$((4 * CONC))" -d "$RATE_DUR" -rate "$RATE"
	R_ADD+=("$(awk -v a="$B_P99" -v b="$D_P99" 'BEGIN {printf "%.2f", (a - b) / 1000}')")
	R_NADD+=("$(awk -v a="$P99" -v b="$D_P99" 'BEGIN {printf "%.2f", (a - b) / 1000}')")
	R_BP99+=("$(awk -v a="$B_P99" 'BEGIN {printf "%.2f", a / 1000}')") R_DP99+=("$(awk -v a="$D_P99" 'BEGIN {printf "%.2f", a / 1000}')")
	R_NP99+=("$(awk -v a="$P99" 'BEGIN {printf "%.2f", a / 1000}')")
done
ADDED_P99=$(median "${R_ADD[@]}") NGINX_ADDED=$(median "${R_NADD[@]}")

R_GB=() GIB_MBPS=() BASE_MBPS=() RSS_ROUNDS=() R_UGB=() UBASE_MBPS=()
RSS_BEFORE=$(peak_rss "$HPID") # the peak over everything before the streams (the resets below lose it)
if [ "$BIG" -gt 0 ]; then
	echo
	echo "== ${BIG} MiB object through three steps ($STEP|$STEP|$STEP), against $BIG MiB through seven loopback sockets, $ROUNDS interleaved rounds"
	for ((round = 1; round <= ROUNDS; round++)); do
		echo "-- round $round"
		"$TMP/chain" -hops 7 -mib "$BIG" -kv >"$TMP/chain.out"
		grep -v '^kv ' "$TMP/chain.out"
		BASE=$(awk '/^kv / {split($2, a, "="); print a[2]}' "$TMP/chain.out")
		# The same chain with every relay copying through user space, as a
		# program handling the bytes must (the chain above splices): not
		# the goal's baseline, shown beside it.
		"$TMP/chain" -hops 7 -mib "$BIG" -copy user -kv >"$TMP/chain.out"
		grep -v '^kv ' "$TMP/chain.out"
		UBASE=$(awk '/^kv / {split($2, a, "="); print a[2]}' "$TMP/chain.out")
		# The router's peak RSS is reset (clear_refs 5: to its RSS now)
		# before each stream, so each round's figure is that stream's peak,
		# not the big object's creation at start; the row shows the max.
		if ! echo 5 2>/dev/null >"/proc/$HPID/clear_refs"; then
			echo "could not reset the router's peak RSS: the figure includes what came before" >&2
		fi
		RSS0=$(rss "$HPID")
		run_load "(b) big through the router" "$HPID" -- -url "http://127.0.0.1:$PR/big?$STEP|$STEP|$STEP" -host bench.localhost -n 1 -c 1 -stream
		RSS=$(peak_rss "$HPID")
		printf '%-28s router RSS %s before the stream, peak %s during it\n' "" "$RSS0" "$RSS"
		R_GB+=("$(ratio "$MBPS" "$BASE")") GIB_MBPS+=("$MBPS") BASE_MBPS+=("$BASE") RSS_ROUNDS+=("${RSS% MiB}")
		R_UGB+=("$(ratio "$MBPS" "$UBASE")") UBASE_MBPS+=("$UBASE")
	done
fi

WAKES=${BENCH_WAKES:-7} WAKE=- WAKE_MAX=-
if [ "$WAKES" -gt 0 ]; then
	echo
	echo "== first request after scale to zero, host process: BenchmarkWakeFromZero (cli/platform), $WAKES wake-ups, autoscaler tick 1 h"
	if ! (cd "$ROOT" && go test -run '^$' -bench '^BenchmarkWakeFromZero$' -benchtime "${WAKES}x" ./cli/platform/) >"$TMP/wake.out" 2>&1; then
		cat "$TMP/wake.out" >&2
		exit 1
	fi
	grep -E '^ +wake_bench_test|^BenchmarkWakeFromZero' "$TMP/wake.out"
	# wake_metric unit → what BenchmarkWakeFromZero reported in unit (seconds, 3 decimals)
	wake_metric() { awk -v u="$1" '/^BenchmarkWakeFromZero/ {for (i = 3; i < NF; i++) if ($(i + 1) == u) printf "%.3f", $i}' "$TMP/wake.out"; }
	WAKE=$(wake_metric s/wake) WAKE_MAX=$(wake_metric max-s/wake)
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

RN=$(median "${R_RN[@]}") RCPU=$(median "${R_CPU[@]}") RINST=$(median "${R_INST[@]}")
THREE=$(median "${R_THREE[@]}") HIT=$(median "${R_HIT[@]}") GB=$(median "${R_GB[@]}")
echo
echo "| measure, same run | this run | goal |"
echo "|---|---|---|"
echo "| 4 KiB one step, router ÷ nginx req/s, median of $ROUNDS | $RN (rounds: ${R_RN[*]}) | ≥ 1.0 |"
echo "| router CPU per request ÷ nginx's | $RCPU (rounds: ${R_CPU[*]}); the Go floor ÷ nginx's $(median "${R_FLOOR[@]}") (rounds: ${R_FLOOR[*]}), the router ÷ the Go floor $(median "${R_RFLOOR[@]}") (rounds: ${R_RFLOOR[*]}) | ≤ 1.0 |"
echo "| instance CPU per request behind the router ÷ direct | $RINST (rounds: ${R_INST[*]}) | ≤ 1.1 |"
echo "| 4 KiB three steps ÷ one step req/s (the same round's), median of $ROUNDS | $THREE (rounds: ${R_THREE[*]}; three steps ${THREE_RPS[*]} req/s); the Go floor's three ÷ one $(median "${R_FTHREE[@]}") (rounds: ${R_FTHREE[*]}) | ≥ 0.5 |"
echo "| p99 added by the router at half its peak rate ($RATE/s), median of $RATE_ROUNDS | $ADDED_P99 ms (rounds: ${R_ADD[*]}; p99 router ${R_BP99[*]} / direct ${R_DP99[*]} ms); nginx adds $NGINX_ADDED ms (p99 ${R_NP99[*]} ms) | ≤ 1 ms |"
if [ "$BIG" -gt 0 ]; then
	RSS_MAX=$(printf '%s\n' "${RSS_ROUNDS[@]}" | sort -g | tail -1)
	RSS_RUN=$(printf '%s\n' "$RSS_MAX" "${RSS_BEFORE% MiB}" | sort -g | tail -1)
	echo "| $BIG MiB through three steps ÷ 7-hop loopback chain, median of $ROUNDS | $GB (rounds: ${R_GB[*]}; router ${GIB_MBPS[*]} / chain ${BASE_MBPS[*]} MB/s; ÷ the chain copying through user space: $(median "${R_UGB[@]}"), rounds ${R_UGB[*]}, chain ${UBASE_MBPS[*]} MB/s), router peak RSS during the streams $RSS_MAX MiB (rounds: ${RSS_ROUNDS[*]}; whole run $RSS_RUN MiB) | ≥ 0.9, RSS ≤ 64 MiB |"
else
	echo "| big object through three steps ÷ 7-hop loopback chain | skipped (BENCH_BIG_MIB=0) | ≥ 0.9 |"
fi
echo "| result-cache hit req/s ÷ nginx static file, median of $ROUNDS | $HIT (rounds: ${R_HIT[*]}; hit ${HIT_RPS[*]} / static ${STATIC_RPS[*]} req/s) | ≥ 1.0 |"
if [ "$WAKES" -gt 0 ]; then
	echo "| first request after scale to zero, host process | $WAKE s (max $WAKE_MAX) | ≤ 0.3 s |"
else
	echo "| first request after scale to zero, host process | skipped (BENCH_WAKES=0) | ≤ 0.3 s |"
fi
echo "ratios: router/nginx=$RN cpu/nginx=$RCPU instance/direct=$RINST three/one=$THREE cachehit/nginx=$HIT gib/baseline=$GB"
