#!/usr/bin/env bash
# What a TTL costs: SET with a TTL against plain SET, for upcache and Redis (`SET .. PX`) with
# the floor server beside them, and memory per key with and without TTLs, in one run.
# Dimensions: 100,000 keys of 16 B with 64 B values for throughput (TCP, depth 1 with one
# connection, depth 16 and 64 with four; 0.5 s warm-up, 2 s measured, ROUNDS rounds with the
# servers alternating), 1,000,000 keys for memory; the TTL is one hour (nothing expires during
# the run). Servers pinned to CPU 1, the load generator to CPU 0; loopback only.
#
#   bash benches/ttl.sh              # 3 rounds, about 4 minutes
#   ROUNDS=5 bash benches/ttl.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
MEM_KEYS=${MEM_KEYS:-1000000}
TTL=3600000
BOUND=0.8 # a figure of at least this share of the floor's is client-bound (loadgen's CLIENT_BOUND)
source benches/common.sh
setup ttl redis-server

start_redis() { # start_redis NAME: a Redis on a free loopback port; sets RPORT and RPID
  RPORT=$(free_port)
  "${PIN[@]}" redis-server --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no \
    --io-threads 1 --daemonize no --logfile "$W/$1.log" &
  RPID=$!; PIDS+=("$RPID"); wait_for "$RPORT"
}

echo "# SET with a TTL ($TTL ms) against SET: 100000 keys of 16 B, values of 64 B, TCP, $ROUNDS rounds alternating, ops/s"
"${PIN[@]}" "$L" foreground --file "$W/up.json" >/dev/null 2>&1 & PIDS+=($!)
"${PIN[@]}" "$L" floor >"$W/floor.txt" 2>/dev/null & PIDS+=($!)
start_redis redis
first_line "$W/up.json" >/dev/null
FLOOR=$(first_line "$W/floor.txt")
ops() { # ops TARGET DEPTH CONNS [--ttl-ms N]
  local target=$1 depth=$2 conns=$3; shift 3
  taskset -c "$CLIENT_CPU" "$L" run --target "$target" --op set --depth "$depth" --conns "$conns" \
    --keys 100000 --warmup 0.5 --duration 2 "$@" | grep -o '[0-9.]*[kM] ops/s' |
    awk '{v=$1; m=1; if (v ~ /k$/) m=1e3; if (v ~ /M$/) m=1e6; sub(/[kM]$/, "", v); printf "%.0f\n", v*m}'
}
median() { sort -n | awk '{a[NR]=$1} END { print a[int((NR + 1) / 2)] }'; }
printf '%-16s %12s %12s %7s %12s %12s %7s %12s\n' cell "upcache SET" "+TTL" ratio "redis SET" "+PX" ratio floor
for cell in "1 1" "16 4" "64 4"; do
  read -r depth conns <<<"$cell"
  : >"$W/r"
  for _ in $(seq "$ROUNDS"); do
    echo "us $(ops "upcache=$W/up.json" "$depth" "$conns")" >>"$W/r"
    echo "ut $(ops "upcache=$W/up.json" "$depth" "$conns" --ttl-ms $TTL)" >>"$W/r"
    echo "rs $(ops "redis=tcp:127.0.0.1:$RPORT" "$depth" "$conns")" >>"$W/r"
    echo "rt $(ops "redis=tcp:127.0.0.1:$RPORT" "$depth" "$conns" --ttl-ms $TTL)" >>"$W/r"
    echo "fl $(ops "floor=$FLOOR" "$depth" "$conns")" >>"$W/r"
  done
  m() { awk -v k="$1" '$1 == k { print $2 }' "$W/r" | median; }
  us=$(m us) ut=$(m ut) rs=$(m rs) rt=$(m rt) fl=$(m fl)
  [[ $fl =~ ^[0-9]+$ && $fl -gt 0 ]] || { echo "no floor figure for depth $depth x $conns" >&2; exit 1; }
  # A figure of at least BOUND of the floor (the client's ceiling in this cell) is marked `*`:
  # the client may be what bounds it, and a ratio with it says only that both sides kept up.
  mk() { awk -v a="$1" -v f="$fl" -v b="$BOUND" 'BEGIN { printf "%s%s", a, (a >= b * f ? "*" : "") }'; }
  ratio() { awk -v a="$1" -v b="$2" -v f="$fl" -v k="$BOUND" \
    'BEGIN { printf "%.2f%s", a / b, (a >= k * f || b >= k * f ? "*" : "") }'; }
  printf '%-16s %12s %12s %7s %12s %12s %7s %12s\n' "depth $depth x $conns" "$(mk "$us")" \
    "$(mk "$ut")" "$(ratio "$ut" "$us")" "$(mk "$rs")" "$(mk "$rt")" "$(ratio "$rt" "$rs")" "$fl"
done
echo "# medians of $ROUNDS rounds; ratio = with TTL / without; floor = the client's ceiling in the cell"
echo "# (the floor server's figure: what this client, the kernel and loopback allow); * = client-bound:"
echo "# at least 80 % of the floor, not a measure of the server (a ratio with such a figure is marked too)"

echo
echo "# memory: $MEM_KEYS keys of 16 B with values of 64 B, bytes per key, on servers started empty for it"
for ttl in none $TTL; do
  args=(); [[ $ttl == none ]] || args=(--ttl-ms "$ttl")
  "${PIN[@]}" "$L" foreground --file "$W/m-$ttl.json" >/dev/null 2>&1 & up_pid=$!; PIDS+=($up_pid)
  start_redis "mem-$ttl"; mport=$RPORT; mpid=$RPID
  first_line "$W/m-$ttl.json" >/dev/null
  echo "## TTL: $ttl"
  taskset -c "$CLIENT_CPU" "$L" memory --keys "$MEM_KEYS" "${args[@]}" \
    --target "upcache=$W/m-$ttl.json" --pid "upcache=$up_pid" \
    --target "redis=tcp:127.0.0.1:$mport" --pid "redis=$mpid"
  kill "$up_pid" "$mpid"
done
