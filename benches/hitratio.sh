#!/usr/bin/env bash
# Hit ratio in equal memory, side by side: upcache, Redis (allkeys-lru and allkeys-lfu) and
# memcached, each given the same budget B, under the cache-aside workload of `loadgen
# cacheaside` (see benches/loadgen/src/cacheaside.rs for every dimension).
# Dimensions: B = 64 MiB (--quick: 8 MiB); keys of 16 B, values of 64-512 B (a fixed function
# of the key); a key space of 8x the keys whose payload fits in B; Zipf alpha 0.8, 1.0, 1.2;
# 1.5 M warm-up GETs then 1.5 M measured GETs (--quick: 200 k each), a SET on every miss; depth
# 32 x 4 connections over loopback TCP; variants `plain` and `scan` (one sequential pass over
# 2x the budget's worth of new keys halfway through the measured GETs).
# Every row gets a fresh server (nothing carried over between rows), pinned to CPU 1, the load
# generator to CPU 0; every server is stopped by its pid. Ends with, per (alpha, variant),
# whether upcache's hit ratio is >= the best of the others and its RSS <= theirs.
#
# Budgets, as each server counts them:
#   upcache    --max-memory B: everything its store holds (records, index, metadata)
#   Redis      maxmemory B: used_memory, which includes its own overhead (dict, objects,
#              allocator bins, client buffers); policy allkeys-lru or allkeys-lfu, defaults
#              otherwise (maxmemory-samples 5, lfu-log-factor 10, lfu-decay-time 1)
#   memcached  -m B/MiB: item slab pages only (1 MiB pages, handed to slab classes as they
#              fill); its hash table and connection buffers are outside it. Defaults
#              otherwise: growth factor 1.25, -I 1m, slab_reassign and slab_automove=1,
#              segmented LRU (hot/warm/cold) with the LRU crawler; -t 1 like Redis's one thread
#
#   bash benches/hitratio.sh            # 24 rows; 12-19 minutes on the shared 2-CPU VM
#   bash benches/hitratio.sh --quick    # 8 MiB, shorter rows; 1-3.5 minutes there
#   HITRATIO_JSON=rows.jsonl bash benches/hitratio.sh   # also keep the rows as JSON lines
#   BUDGET_MIB=32 WARMUP=1000000 GETS=1000000 bash benches/hitratio.sh   # other dimensions
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET_MIB=${BUDGET_MIB:-64}
WARMUP=${WARMUP:-1500000}
GETS=${GETS:-1500000}
for arg in "$@"; do
  case "$arg" in
    --quick) BUDGET_MIB=8; WARMUP=200000; GETS=200000 ;;
    *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
  esac
done
B=$((BUDGET_MIB << 20))
ALPHAS=(0.8 1.0 1.2)
VARIANTS=(plain scan)
SERVERS=(upcache redis-lru redis-lfu memcached)

source benches/common.sh
setup hitratio redis-server memcached
cargo build --release -q -p upcache --bin upcache
U=$PWD/target/release/upcache
JSON=${HITRATIO_JSON:-$W/rows.jsonl}
: >"$JSON"
MC_USER=(); [[ $(id -u) -eq 0 ]] && MC_USER=(-u root)

# upcache's budget: the one place it is given. A build without `serve --max-memory` (before
# the budget landed) runs unbounded, and says so here and in every verdict line (its server
# reports no limit, so the verdict marks its rows n/a).
UPCACHE_BUDGET=(--max-memory "$B")
SERVE_HELP=$("$U" serve --help)  # read whole: `| grep -q` could SIGPIPE it under pipefail
if [[ $SERVE_HELP != *--max-memory* ]]; then
  echo "# WARNING: this upcache has no 'serve --max-memory': its rows run WITHOUT a budget (not comparable)"
  UPCACHE_BUDGET=()
fi

echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(uname -r)"
echo "# servers pinned to CPU $SERVER_CPU, load generator to CPU $CLIENT_CPU; loopback TCP"
echo "# budget B = $B bytes: upcache serve ${UPCACHE_BUDGET[*]:-(none)}; redis $(redis-server --version | cut -d' ' -f3 | cut -d= -f2) maxmemory $B; memcached $(memcached -V | cut -d' ' -f2) -m $BUDGET_MIB -t 1"

# start_server KIND ROW: a fresh, empty server of KIND with the budget; sets SPID and TARGET.
start_server() {
  local port
  case "$1" in
    upcache)
      "${PIN[@]}" "$U" --dir "$W" serve "hit$2" --no-auto-kill "${UPCACHE_BUDGET[@]}" >"$W/up$2.line" &
      SPID=$!; PIDS+=("$SPID")
      first_line "$W/up$2.line" >/dev/null
      TARGET="upcache=$W/up$2.line" ;;
    redis-lru|redis-lfu)
      port=$(free_port)
      "${PIN[@]}" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --io-threads 1 --protected-mode yes --daemonize no --logfile "$W/redis$2.log" \
        --maxmemory "$B" --maxmemory-policy "allkeys-${1#redis-}" &
      SPID=$!; PIDS+=("$SPID"); wait_for "$port"
      TARGET="redis=tcp:127.0.0.1:$port" ;;
    memcached)
      port=$(free_port)
      "${PIN[@]}" memcached -l 127.0.0.1 -p "$port" -U 0 -t 1 -m "$BUDGET_MIB" -c 1024 "${MC_USER[@]}" &
      SPID=$!; PIDS+=("$SPID"); wait_for "$port"
      TARGET="memcached=tcp:127.0.0.1:$port" ;;
  esac
}

row=0
for alpha in "${ALPHAS[@]}"; do
  for variant in "${VARIANTS[@]}"; do
    for server in "${SERVERS[@]}"; do
      row=$((row + 1))
      start_server "$server" "$row"
      header=(); [[ $row -eq 1 ]] && header=(--header)
      taskset -c "$CLIENT_CPU" "$L" cacheaside --target "$TARGET" --label "$server" --pid "$SPID" \
        --budget "$B" --alpha "$alpha" --variant "$variant" --warmup-gets "$WARMUP" --gets "$GETS" \
        "${header[@]}" --json "$JSON"
      kill "$SPID"; wait "$SPID" 2>/dev/null || true
    done
  done
done
echo "# hit % over the measured GETs (the scan's own requests excluded); 2nd half: after the scan;"
echo "# ceiling: what a cache with no budget would hit on the same GETs (counted by the client);"
echo "# keys, evicted, own MiB and limit as each server reports them (own: upcache memory_bytes or"
echo "# store_bytes, Redis used_memory, memcached bytes); RSS: VmRSS at the end; ops/s: GETs and SETs"
echo
"$L" cacheaside-verdict "$JSON"
