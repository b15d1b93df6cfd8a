#!/usr/bin/env bash
# Dora benchmarks, called by `make bench`. Side by side, a small object
# through a one-step pipeline:
#   (a) direct:  POST /handler?cmd=<step> with the object as body, to the instance
#   (b) router:  GET /small?<step> through a Dora router (bench/cmd/harness)
#   (c) nginx:   the (a) request through nginx as a reverse proxy to the same instance
# printing requests/s, p50, p99 and the router's peak RSS; then a big object
# through three steps (MB/s, peak RSS).
#
# Knobs (env): BENCH_DURATION (10s), BENCH_CONCURRENCY (32), BENCH_SMALL
# (4096 bytes), BENCH_BIG_MIB (1024; 0 skips), BENCH_UFOP (passthru),
# BENCH_STEP (the step text, default $BENCH_UFOP), BENCH_INSTANCE_BIN (a
# prebuilt instance program instead of examples/$BENCH_UFOP).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DUR=${BENCH_DURATION:-10s}
CONC=${BENCH_CONCURRENCY:-32}
SMALL=${BENCH_SMALL:-4096}
BIG=${BENCH_BIG_MIB:-1024}
UFOP=${BENCH_UFOP:-passthru}
STEP=${BENCH_STEP:-$UFOP}

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
	local i0 p0 out
	i0=$(cpu_ticks "$IPID")
	p0=$(cpu_ticks "${pids[@]}")
	out=$("$TMP/load" -label "$label" "$@")
	echo "$out"
	local n
	n=$(echo "$out" | awk 'NR == 1 {for (i = 1; i <= NF; i++) if ($(i+1) == "ok") {print $i; exit}}')
	if [ -n "$n" ] && [ "$n" -gt 0 ]; then
		awk -v i=$(($(cpu_ticks "$IPID") - i0)) -v p=$(($(cpu_ticks "${pids[@]}") - p0)) -v n="$n" -v tck="$TCK" -v hasp="${#pids[@]}" \
			'BEGIN {printf "%-28s CPU per request: instance %.0f µs", "", i / tck / n * 1e6; if (hasp > 0) printf ", proxy %.0f µs", p / tck / n * 1e6; printf "\n"}'
	fi
}

echo "building..."
if [ -n "${BENCH_INSTANCE_BIN:-}" ]; then
	cp "$BENCH_INSTANCE_BIN" "$TMP/$UFOP"
else
	(cd "$ROOT" && go build -o "$TMP/$UFOP" "./examples/$UFOP")
fi
(cd "$ROOT" && go build -o "$TMP/harness" ./bench/cmd/harness &&
	go build -o "$TMP/load" ./bench/cmd/load)

PI=$(free_port)
PORT=$PI PORT_HTTP=$PI HOST=127.0.0.1 "$TMP/$UFOP" >"$TMP/instance.log" 2>&1 &
IPID=$!
PIDS+=($IPID)
wait_port "$PI"

PR=$(free_port)
echo "creating objects (small ${SMALL} B, big ${BIG} MiB)..."
"$TMP/harness" -listen "127.0.0.1:$PR" -dir "$TMP/data" -instances "127.0.0.1:$PI" \
	-ufop "$UFOP" -small "$SMALL" -big-mib "$BIG" >"$TMP/harness.out" 2>"$TMP/harness.log" &
HPID=$!
PIDS+=($HPID)
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
PIDS+=($NPID)
wait_port "$PN"
NPIDS=("$NPID" $(pgrep -P "$NPID" || true))

head -c "$SMALL" /dev/urandom >"$TMP/small.bin"
CMD=$(printf '%s' "$STEP" | sed 's|/|%2F|g')

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(go version | awk '{print $3}'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== ${SMALL}-byte object, one step ($STEP), $CONC connections, $DUR each ($(nproc) cores shared by client, proxy and instance)"
run_load "(a) direct to instance" -- -url "http://127.0.0.1:$PI/handler?cmd=$CMD" -method POST -body "$TMP/small.bin" -c "$CONC" -d "$DUR"
run_load "(b) through the router" "$HPID" -- -url "http://127.0.0.1:$PR/small?$STEP" -host bench.localhost -c "$CONC" -d "$DUR"
run_load "(c) through nginx" "${NPIDS[@]}" -- -url "http://127.0.0.1:$PN/handler?cmd=$CMD" -method POST -body "$TMP/small.bin" -c "$CONC" -d "$DUR"
echo "router peak RSS after the small runs: $(peak_rss $HPID)"

if [ "$BIG" -gt 0 ]; then
	echo
	echo "== ${BIG} MiB object through three steps ($STEP|$STEP|$STEP)"
	run_load "(b) big through the router" "$HPID" -- -url "http://127.0.0.1:$PR/big?$STEP|$STEP|$STEP" -host bench.localhost -n 1 -c 1 -stream
	echo "router peak RSS (object creation included): $(peak_rss $HPID)"
	echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
