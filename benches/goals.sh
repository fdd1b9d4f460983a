#!/usr/bin/env bash
# The issue's throughput goals, measured again: each goal cell (GET and SET; depth 1 with one
# connection, depth 16 and depth 64 with four; TCP and Unix) several times, upcache and the
# floor server alternating (0.5 s warm-up, 3 s measured), servers pinned to CPU 1, client to
# CPU 0. A 2-second cell of the matrix is noisy on a shared VM (a floor cell alone can come out
# 30 % high); this prints each run and the median of the per-run ratios.
# Dimensions: 100,000 keys of 16 B, values of 64 B, as in the matrix.
#
#   bash benches/goals.sh          # 3 runs per cell, about 5 minutes
#   RUNS=5 bash benches/goals.sh
#   RUNS=9 NETS=tcp DEPTHS=1 bash benches/goals.sh   # only some cells
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
NETS=${NETS:-tcp unix}
DEPTHS=${DEPTHS:-1 16 64}
cargo build --release -q -p upcache-loadgen
L=$PWD/target/release/loadgen
W=$(mktemp -d /tmp/upcache-goals.XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$W"' EXIT
if [[ $(nproc) -ge 2 ]]; then SERVER_CPU=1; CLIENT_CPU=0; else SERVER_CPU=0; CLIENT_CPU=0; fi
taskset -c "$SERVER_CPU" "$L" foreground --file "$W/up.json" >/dev/null 2>&1 & PIDS+=($!)
taskset -c "$SERVER_CPU" "$L" floor >"$W/floor.txt" 2>/dev/null & PIDS+=($!)
taskset -c "$SERVER_CPU" "$L" foreground --file "$W/upu.json" --transport unix >/dev/null 2>&1 & PIDS+=($!)
taskset -c "$SERVER_CPU" "$L" floor --unix-dir "$W" >"$W/flooru.txt" 2>/dev/null & PIDS+=($!)
for _ in $(seq 200); do
  [[ -s $W/up.json && -s $W/floor.txt && -s $W/upu.json && -s $W/flooru.txt ]] && break
  sleep 0.05
done
ops() { # ops TARGET OP DEPTH CONNS: ops/s as a plain number
  taskset -c "$CLIENT_CPU" "$L" run --target "$1" --op "$2" --depth "$3" --conns "$4" --keys 100000 \
    --warmup 0.5 --duration 3 | grep -o '[0-9.]*[kM] ops/s' | awk '{v=$1; m=1; if (v ~ /k$/) m=1e3; if (v ~ /M$/) m=1e6; sub(/[kM]$/, "", v); print v*m}'
}
echo "# goal cells, $RUNS runs each, upcache and floor alternating; ratio = upcache / floor"
for net in $NETS; do
  if [[ $net == tcp ]]; then U=upcache=$W/up.json; F=floor=$(head -1 "$W/floor.txt")
  else U=upcache=$W/upu.json; F=floor=$(head -1 "$W/flooru.txt"); fi
  for cell in "1 1 0.95" "16 4 0.6" "64 4 0.5"; do
    read -r depth conns goal <<<"$cell"
    [[ " $DEPTHS " == *" $depth "* ]] || continue
    for op in get set; do
      ratios=(); line=""
      for _ in $(seq "$RUNS"); do
        u=$(ops "$U" "$op" "$depth" "$conns"); f=$(ops "$F" "$op" "$depth" "$conns")
        ratios+=("$(awk -v u="$u" -v f="$f" 'BEGIN { printf "%.2f", u / f }')")
        line+=" $(awk -v u="$u" -v f="$f" 'BEGIN { printf "%.0fk/%.0fk", u / 1e3, f / 1e3 }')"
      done
      median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END { print a[int((NR + 1) / 2)] }')
      printf '%-4s %-3s depth %2s conns %s: median ratio %s (goal %s); runs up/floor:%s\n' \
        "$net" "$op" "$depth" "$conns" "$median" "$goal" "$line"
    done
  done
done
