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

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
if ! command -v redis-server >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi

cargo build --release -q -p upcache-loadgen
L=$PWD/target/release/loadgen
W=$(mktemp -d /tmp/upcache-tasks.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

if [[ $(nproc) -ge 2 ]]; then SERVER_CPU=1; CLIENT_CPU=0; else SERVER_CPU=0; CLIENT_CPU=0; fi
PIN=(taskset -c "$SERVER_CPU")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for FILE-OR-PORT: until a socket file exists or a port accepts, 10 s at most
  for _ in $(seq 200); do
    if [[ "$1" == /* ]]; then [[ -S "$1" ]] && return 0
    else (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; fi
    sleep 0.05
  done
  echo "server on $1 did not start" >&2; exit 1
}
first_line() { for _ in $(seq 200); do [[ -s "$1" ]] && { head -1 "$1"; return 0; }; sleep 0.05; done; exit 1; }

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
