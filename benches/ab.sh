#!/usr/bin/env bash
# A/B of upcache builds in one cell: each build's `loadgen` runs its own upcache server, and
# the floor server runs from the first; every round measures each build, then the floor, one
# after another (0.5 s warm-up, 3 s measured), so drift of the machine hits all of them alike.
# Servers pinned to CPU 1, client to CPU 0; 100,000 keys of 16 B (KEYS=N for another count),
# values of 64 B. The first build's loadgen is the client and runs the floor server.
#
#   git worktree add /tmp/old <rev> && (cd /tmp/old && cargo build --release -p upcache-loadgen)
#   cargo build --release -p upcache-loadgen
#   bash benches/ab.sh 8 get 64 4 unix /tmp/old/target/release/loadgen target/release/loadgen
#
# Arguments: ROUNDS OP DEPTH CONNS NET(tcp|unix) LOADGEN... Prints ops/s per round and build,
# then each build's mean and its range of ratios to the floor, over the rounds in which no run
# was client-bound (`loadgen run` says `client-bound: yes`: the client ran or waited for its
# CPU at least 80 % of the time).
set -euo pipefail
[[ $# -ge 6 ]] || { sed -n '2,12p' "$0"; exit 2; }
ROUNDS=$1 OP=$2 DEPTH=$3 CONNS=$4 NET=$5
KEYS=${KEYS:-100000}
shift 5
BINS=("$@")
W=$(mktemp -d /tmp/upcache-ab.XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$W"' EXIT
if [[ $(nproc) -ge 2 ]]; then SERVER_CPU=1; CLIENT_CPU=0; else SERVER_CPU=0; CLIENT_CPU=0; fi
TRANSPORT=()
FLOOR_ARGS=()
if [[ $NET == unix ]]; then TRANSPORT=(--transport unix); FLOOR_ARGS=(--unix-dir "$W"); fi
for i in "${!BINS[@]}"; do
  taskset -c "$SERVER_CPU" "${BINS[$i]}" foreground --file "$W/b$i.json" "${TRANSPORT[@]}" >/dev/null 2>&1 & PIDS+=($!)
done
taskset -c "$SERVER_CPU" "${BINS[0]}" floor "${FLOOR_ARGS[@]}" >"$W/floor.txt" 2>/dev/null & PIDS+=($!)
for _ in $(seq 200); do
  ready=1
  for i in "${!BINS[@]}"; do [[ -s $W/b$i.json ]] || ready=0; done
  [[ $ready == 1 && -s $W/floor.txt ]] && break
  sleep 0.05
done
# ops TARGET: "OPS BOUND", ops/s as a plain number and 1 where the run was client-bound (the
# client ran or waited for its CPU at least 80 % of the time), else 0
ops() {
  taskset -c "$CLIENT_CPU" "${BINS[0]}" run --target "$1" --op "$OP" --depth "$DEPTH" --conns "$CONNS" \
    --keys "$KEYS" --warmup 0.5 --duration 3 | awk '
    function num(v,  m) { m = 1; if (v ~ /k$/) m = 1e3; if (v ~ /M$/) m = 1e6; sub(/[kM]$/, "", v); return v * m }
    { for (i = 1; i < NF; i++) if ($(i + 1) == "ops/s,") ops = num($i)
      printf "%.0f %d\n", ops, (/client-bound: yes/ ? 1 : 0) }'
}
mark() { [[ $1 == 1 ]] && echo "*" || true; }
echo "# $NET $OP depth $DEPTH conns $CONNS keys $KEYS, $ROUNDS rounds; builds: ${BINS[*]}"
echo "# '*': client-bound run; a round with one is left out of the means and ratios"
for r in $(seq "$ROUNDS"); do
  line="round $r:"
  for i in "${!BINS[@]}"; do
    read -r v b < <(ops "upcache=$W/b$i.json"); echo "$i $r $v $b" >>"$W/results"
    line+=" build$i $(awk -v v="$v" 'BEGIN { printf "%.0fk", v / 1e3 }')$(mark "$b")"
  done
  read -r f b < <(ops "floor=$(head -1 "$W/floor.txt")"); echo "floor $r $f $b" >>"$W/results"
  line+=" floor $(awk -v v="$f" 'BEGIN { printf "%.0fk", v / 1e3 }')$(mark "$b")"
  echo "$line"
done
awk '$4 == 1 { bound[$2] = 1 }
     $1 == "floor" { floor[$2] = $3 }
     $1 != "floor" { v[$1, $2] = $3; builds[$1] = 1 }
     END {
       n = 0; for (r in floor) if (!(r in bound)) n++
       printf "rounds counted: %d of %d (the others had a client-bound run)\n", n, length(floor)
       if (n == 0) exit
       for (b in builds) {
         sum = 0; lo = 1e9; hi = 0
         for (r in floor) {
           if (r in bound) continue
           sum += v[b, r]; q = v[b, r] / floor[r]; if (q < lo) lo = q; if (q > hi) hi = q
         }
         printf "build%s: mean %.0fk ops/s, ratio to floor %.2f-%.2f\n", b, sum / n / 1e3, lo, hi
       }
     }' "$W/results" | sort
