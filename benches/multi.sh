#!/usr/bin/env bash
# Multi-key requests against pipelines of single requests for the same keys, in one run:
# upcache get_many/set_many against pipelined GET/SET, Redis MGET/MSET against pipelined
# GET/SET, memcached multi-get (`get k1 k2 ...`) against pipelined `get` (memcached has no
# multi-set: its set row is the pipeline only).
# Dimensions: 100,000 keys of 16 B with 64 B values (stored first, so reads hit), batches of 16
# and 64 keys, 4 connections with one batch in flight each, TCP on loopback, 0.5 s warm-up and
# 2 s measured per cell; servers pinned to CPU 1, the load generator to CPU 0. Figures are keys
# per second. The floor server's rows are the client's ceiling per cell; a figure of at least
# 80 % of it is marked client-bound.
#
#   bash benches/multi.sh                 # about 2 minutes
#   BATCHES=16,64,256 bash benches/multi.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BATCHES=${BATCHES:-16,64}
source benches/common.sh
setup multi redis-server memcached

"${PIN[@]}" "$L" foreground --file "$W/up.json" >/dev/null 2>&1 & PIDS+=($!)
"${PIN[@]}" "$L" floor >"$W/floor.txt" 2>/dev/null & PIDS+=($!)
RPORT=$(free_port)
"${PIN[@]}" redis-server --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no \
  --io-threads 1 --daemonize no --logfile "$W/redis.log" & PIDS+=($!)
MPORT=$(free_port)
MC_USER=(); [[ $(id -u) -eq 0 ]] && MC_USER=(-u nobody)
"${PIN[@]}" memcached -l 127.0.0.1 -p "$MPORT" -U 0 -t 1 -m 1024 "${MC_USER[@]}" & PIDS+=($!)
first_line "$W/up.json" >/dev/null
wait_for "$RPORT"
wait_for "$MPORT"
FLOOR=$(first_line "$W/floor.txt")

taskset -c "$CLIENT_CPU" "$L" multi --batches "$BATCHES" \
  --target "floor=$FLOOR" \
  --target "upcache=$W/up.json" \
  --target "redis=tcp:127.0.0.1:$RPORT" \
  --target "memcached=tcp:127.0.0.1:$MPORT"
