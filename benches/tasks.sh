#!/usr/bin/env bash
# The async clients: upcache's `aio::UpCache` against redis-rs's multiplexed connection (and
# upcache's against the floor server, its ceiling here), one connection shared by 1, 64 and
# 1,024 tokio tasks doing GETs, over TCP and Unix sockets (`loadgen tasks`, see
# benches/loadgen/src/tasks.rs). Servers are pinned to one CPU and the load generator (a
# multi-thread runtime with one worker per CPU it may use) to another, as in benches/run.sh;
# every server it starts is stopped by its pid. Installs redis-server if missing. About 1 minute.
#
#   bash benches/tasks.sh              # warm-up 0.5 s, 2 s per cell
#   bash benches/tasks.sh --quick      # 0.2 s per cell
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=(--warmup 0.5 --duration 2)
if [[ "${1:-}" == "--quick" ]]; then DUR=(--warmup 0.1 --duration 0.2); fi

source benches/common.sh
setup tasks redis-server

echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(uname -r)"
echo "# servers pinned to CPU $SERVER_CPU, load generator to CPU $CLIENT_CPU; redis $(redis-server --version | cut -d' ' -f3) (io-threads 1, no persistence)"
REDIS_PORT=$(free_port)
"${PIN[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --unixsocket "$W/redis.sock" --unixsocketperm 700 \
  --save '' --appendonly no --io-threads 1 --protected-mode yes --daemonize no --logfile "$W/redis.log" &
PIDS+=($!)
"${PIN[@]}" "$L" floor > "$W/floor-tcp" &
PIDS+=($!)
"${PIN[@]}" "$L" floor --unix-dir "$W" > "$W/floor-unix" &
PIDS+=($!)
read -r UP_TCP UP_TCP_PID < <("$L" serve --name tasks-tcp --dir "$W" --transport tcp)
PIDS+=("$UP_TCP_PID"); taskset -pc "$SERVER_CPU" "$UP_TCP_PID" >/dev/null
read -r UP_UNIX UP_UNIX_PID < <("$L" serve --name tasks-unix --dir "$W" --transport unix)
PIDS+=("$UP_UNIX_PID"); taskset -pc "$SERVER_CPU" "$UP_UNIX_PID" >/dev/null
wait_for "$REDIS_PORT"; wait_for "$W/redis.sock"
FLOOR_TCP=$(first_line "$W/floor-tcp"); FLOOR_UNIX=$(first_line "$W/floor-unix")

taskset -c "$CLIENT_CPU" "$L" tasks "${DUR[@]}" \
  --target "upcache=$UP_TCP" --target "upcache=$UP_UNIX" \
  --target "redis=tcp:127.0.0.1:$REDIS_PORT" --target "redis=unix:$W/redis.sock" \
  --target "floor=$FLOOR_TCP" --target "floor=$FLOOR_UNIX"
