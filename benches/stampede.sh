#!/usr/bin/env bash
# Cache stampede: N callers (threads, each with its own connections, as separate processes
# would have) ask for one missing key at once; the value takes COMPUTE_MS to compute.
# upcache's get_or_compute (server leases, waiters served by a push) against the usual Redis
# recipe (`SET lock NX PX 30000`, GET polled every 5 ms), same harness, same run.
# Dimensions: N = 8 and 64, computation 50 ms, values of 64 B, ROUNDS rounds per cell, TCP on
# loopback; servers pinned to CPU 1, the load generator to CPU 0.
# Reported: computations per round (goal: 1), from the value's store (the instant the
# computation returned it) to the last caller's value (goal: under 1 ms), and the total.
#
#   bash benches/stampede.sh              # 10 rounds, under a minute
#   ROUNDS=20 CALLERS=8,64,256 bash benches/stampede.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-10}
CALLERS=${CALLERS:-8,64}
COMPUTE_MS=${COMPUTE_MS:-50}
source benches/common.sh
setup stampede redis-server

RPORT=$(free_port)
"${PIN[@]}" redis-server --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no \
  --io-threads 1 --daemonize no --logfile "$W/redis.log" &
PIDS+=($!)
wait_for "$RPORT"
# A detached upcache server that stays without clients; its pid joins the ones to stop.
read -r UPFILE UPPID < <("${PIN[@]}" "$L" serve --name stampede --dir "$W")
PIDS+=("$UPPID")

taskset -c "$CLIENT_CPU" "$L" stampede --target "upcache=$UPFILE" \
  --target "redis=tcp:127.0.0.1:$RPORT" --callers "$CALLERS" --compute-ms "$COMPUTE_MS" \
  --rounds "$ROUNDS"
