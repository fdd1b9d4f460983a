#!/usr/bin/env bash
# The benchmark: upcache against Redis and memcached (and the floor server) on this machine,
# same client, same run. Installs redis-server and memcached if missing, starts every server
# on loopback TCP and on a Unix socket with explicit settings, pinned to one CPU while the load
# generator is pinned to another, measures memory (on servers of its own), runs the matrix, one
# cell over a larger key space, first-open and client measurements, the cost of fan-out to
# another client (`loadgen fanout`: 65,536 waits woken by a CLEAR, 1,000 SETs to 4,096
# subscriptions, each next to the same work with nobody listening), the lateness of expiry
# events against Redis's (`loadgen expiry-lag`, on servers of its own), and stops every server
# it started by its pid. Every matrix cell shows the client's own ceiling (its rate against the
# floor were it always busy) and marks with '*' a run that is client-bound (the client ran or
# waited for its CPU at least 80 % of the time); ratios with a client-bound side are left out
# of the matrix's closing count.
#
#   bash benches/run.sh           # full matrix (GET/SET x depth 1,16,64 x 1,4,50 connections x TCP/Unix), < 12 min
#   bash benches/run.sh --quick   # depth 1,16 x 1,4 connections, short cells, 100k keys for memory, < 2 min
#   bash benches/run.sh --expiry  # only the expiry lag (0, 100k and 1M background keys), < 3 min
#   bash benches/run.sh --quick --expiry   # only the expiry lag, 0 and 100k background keys, < 1 min
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=""
ONLY_EXPIRY=""
FANOUT_ROUNDS=5
MEM_KEYS=1000000
MEM_OVERWRITES=3000000
EXPIRY_BACKGROUND=0,100000,1000000
EXPIRY_GIVE_UP_MS=10000
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=--quick; MEM_KEYS=100000; MEM_OVERWRITES=300000; FANOUT_ROUNDS=1
             EXPIRY_BACKGROUND=0,100000; EXPIRY_GIVE_UP_MS=5000 ;;
    --expiry) ONLY_EXPIRY=1 ;;
    *) echo "usage: $0 [--quick] [--expiry]" >&2; exit 2 ;;
  esac
done

source benches/common.sh
setup bench redis-server memcached

# Expiry lag, on a Redis and an upcache server of its own (Unix sockets, nothing else stored):
# 10,000 keys with deadlines the client knows, spread over 3 s, next to each count of
# background keys with a 1-hour TTL. Redis keeps its defaults for expiry (hz 10,
# active-expire-effort 1).
expiry_lag() {
  local redis_pid up up_pid
  "${PIN[@]}" redis-server --port 0 --unixsocket "$W/redis-expiry.sock" --unixsocketperm 700 \
    --save '' --appendonly no --io-threads 1 --daemonize no --logfile "$W/redis-expiry.log" &
  PIDS+=($!); redis_pid=$!
  read -r up up_pid < <("$L" serve --name bench-expiry --dir "$W" --transport unix)
  PIDS+=("$up_pid"); taskset -pc "$SERVER_CPU" "$up_pid" >/dev/null
  wait_for "$W/redis-expiry.sock"
  taskset -c "$CLIENT_CPU" "$L" expiry-lag --keys 10000 --spread-ms 3000 \
    --background "$EXPIRY_BACKGROUND" --give-up-ms "$EXPIRY_GIVE_UP_MS" \
    --target "upcache=$up" --target "redis=unix:$W/redis-expiry.sock"
  kill "$redis_pid" "$up_pid"
}

MC_USER=(); [[ $(id -u) -eq 0 ]] && MC_USER=(-u root)
echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(uname -r)"
echo "# servers pinned to CPU $SERVER_CPU, load generator to CPU $CLIENT_CPU"
echo "# peers: $(redis-server --version | cut -d' ' -f3) (io-threads 1, no persistence); memcached $(memcached -V | cut -d' ' -f2) (-t 1)"
echo
if [[ -n $ONLY_EXPIRY ]]; then expiry_lag; exit 0; fi

# Memory first, on servers of its own that hold nothing yet: bytes per key from empty, then
# again after overwrites with values of varying sizes. They are stopped before the matrix, so
# the matrix's servers hold only the matrix's key space.
M_REDIS_PORT=$(free_port)
"${PIN[@]}" redis-server --bind 127.0.0.1 --port "$M_REDIS_PORT" --save '' --appendonly no --io-threads 1 \
  --protected-mode yes --daemonize no --logfile "$W/redis-mem.log" &
PIDS+=($!); M_REDIS_PID=$!
M_MC_PORT=$(free_port)
"${PIN[@]}" memcached -l 127.0.0.1 -p "$M_MC_PORT" -U 0 -t 1 -m 2048 -c 1024 "${MC_USER[@]}" &
PIDS+=($!); M_MC_PID=$!
read -r UP_MEM UP_MEM_PID < <("$L" serve --name bench-mem --dir "$W" --transport tcp)
PIDS+=("$UP_MEM_PID"); taskset -pc "$SERVER_CPU" "$UP_MEM_PID" >/dev/null
wait_for "$M_REDIS_PORT"; wait_for "$M_MC_PORT"
taskset -c "$CLIENT_CPU" "$L" memory --keys "$MEM_KEYS" --overwrites "$MEM_OVERWRITES" \
  --target "upcache=$UP_MEM" --target "redis=tcp:127.0.0.1:$M_REDIS_PORT" --target "memcached=tcp:127.0.0.1:$M_MC_PORT" \
  --pid "upcache=$UP_MEM_PID" --pid "redis=$M_REDIS_PID" --pid "memcached=$M_MC_PID"
kill "$M_REDIS_PID" "$M_MC_PID" "$UP_MEM_PID"
echo

REDIS_PORT=$(free_port)
"${PIN[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --unixsocket "$W/redis.sock" --unixsocketperm 700 \
  --save '' --appendonly no --io-threads 1 --protected-mode yes --daemonize no --logfile "$W/redis.log" &
PIDS+=($!); REDIS_PID=$!
MC_PORT=$(free_port)
"${PIN[@]}" memcached -l 127.0.0.1 -p "$MC_PORT" -U 0 -t 1 -m 2048 -c 1024 "${MC_USER[@]}" &
PIDS+=($!); MC_PID=$!
"${PIN[@]}" memcached -s "$W/memcached.sock" -a 0700 -t 1 -m 2048 -c 1024 "${MC_USER[@]}" &
PIDS+=($!)
"${PIN[@]}" "$L" floor > "$W/floor-tcp" &
PIDS+=($!)
"${PIN[@]}" "$L" floor --unix-dir "$W" > "$W/floor-unix" &
PIDS+=($!)
read -r UP_TCP UP_TCP_PID < <("$L" serve --name bench-tcp --dir "$W" --transport tcp)
PIDS+=("$UP_TCP_PID"); taskset -pc "$SERVER_CPU" "$UP_TCP_PID" >/dev/null
read -r UP_UNIX UP_UNIX_PID < <("$L" serve --name bench-unix --dir "$W" --transport unix)
PIDS+=("$UP_UNIX_PID"); taskset -pc "$SERVER_CPU" "$UP_UNIX_PID" >/dev/null
wait_for "$REDIS_PORT"; wait_for "$W/redis.sock"; wait_for "$MC_PORT"; wait_for "$W/memcached.sock"
FLOOR_TCP=$(first_line "$W/floor-tcp"); FLOOR_UNIX=$(first_line "$W/floor-unix")

taskset -c "$CLIENT_CPU" "$L" matrix $QUICK --json "${BENCH_JSON:-/dev/null}" \
  --target "upcache=$UP_TCP" --target "upcache=$UP_UNIX" \
  --target "redis=tcp:127.0.0.1:$REDIS_PORT" --target "redis=unix:$W/redis.sock" \
  --target "memcached=tcp:127.0.0.1:$MC_PORT" --target "memcached=unix:$W/memcached.sock" \
  --target "floor=$FLOOR_TCP" --target "floor=$FLOOR_UNIX"
echo
if [[ -z $QUICK ]]; then
  # One cell again over ten times the key space: lookups then miss the CPU caches, which the
  # floor (no lookups) never does.
  echo "# GET, depth 64, 4 connections, TCP, over 1,000,000 keys (the matrix uses 100,000)"
  for t in "upcache=$UP_TCP" "redis=tcp:127.0.0.1:$REDIS_PORT" "memcached=tcp:127.0.0.1:$MC_PORT" "floor=$FLOOR_TCP"; do
    taskset -c "$CLIENT_CPU" "$L" run --target "$t" --op get --depth 64 --conns 4 --keys 1000000
  done
  echo
fi
"$L" first-open --runs 20 --transport tcp
"$L" first-open --runs 20 --transport unix
echo
taskset -c "$CLIENT_CPU" "$L" client --transport tcp
taskset -c "$CLIENT_CPU" "$L" client --transport unix
echo
# Last on the matrix's servers: its CLEARs empty them. Not pinned: the prober and the subscriber's reader
# are threads of one process, kept apart from each other where the CPUs allow.
"$L" fanout --rounds "$FANOUT_ROUNDS" --target "upcache=$UP_TCP"
"$L" fanout --rounds "$FANOUT_ROUNDS" --target "upcache=$UP_UNIX"
echo
expiry_lag
