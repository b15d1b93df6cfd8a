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
PIDS+=($!)
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
PIDS+=($!)
wait_port "$PN"

head -c "$SMALL" /dev/urandom >"$TMP/small.bin"
CMD=$(printf '%s' "$STEP" | sed 's|/|%2F|g')

echo
echo "== ${SMALL}-byte object, one step ($STEP), $CONC connections, $DUR each (2 cores shared by client, proxy and instance)"
"$TMP/load" -label "(a) direct to instance" -url "http://127.0.0.1:$PI/handler?cmd=$CMD" -method POST -body "$TMP/small.bin" -c "$CONC" -d "$DUR"
"$TMP/load" -label "(b) through the router" -url "http://127.0.0.1:$PR/small?$STEP" -host bench.localhost -c "$CONC" -d "$DUR"
"$TMP/load" -label "(c) through nginx" -url "http://127.0.0.1:$PN/handler?cmd=$CMD" -method POST -body "$TMP/small.bin" -c "$CONC" -d "$DUR"
echo "router peak RSS after the small runs: $(peak_rss $HPID)"

if [ "$BIG" -gt 0 ]; then
	echo
	echo "== ${BIG} MiB object through three steps ($STEP|$STEP|$STEP)"
	"$TMP/load" -label "(b) big through the router" -url "http://127.0.0.1:$PR/big?$STEP|$STEP|$STEP" -host bench.localhost -n 1 -c 1 -stream
	echo "router peak RSS (object creation included): $(peak_rss $HPID)"
fi
