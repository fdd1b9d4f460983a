#!/usr/bin/env bash
# Depth 1, one connection, measured again: each cell 4 times, upcache and the floor server
# alternating (0.5 s warm-up, 3 s measured), servers pinned to CPU 1, client to CPU 0. At depth
# 1 a 2-second cell of the matrix is noisy; this gives the ratio with its spread.
# Dimensions: 10,000 keys of 16 B, values of 64 B; GET and SET; TCP and Unix sockets.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p upcache-loadgen
L=$PWD/target/release/loadgen
W=$(mktemp -d /tmp/upcache-d1.XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$W"' EXIT
taskset -c 1 "$L" foreground --file "$W/up.json" >/dev/null 2>&1 & PIDS+=($!)
taskset -c 1 "$L" floor >"$W/floor.txt" 2>/dev/null & PIDS+=($!)
taskset -c 1 "$L" foreground --file "$W/upu.json" --transport unix >/dev/null 2>&1 & PIDS+=($!)
taskset -c 1 "$L" floor --unix-dir "$W" >"$W/flooru.txt" 2>/dev/null & PIDS+=($!)
for _ in $(seq 200); do
  [[ -s $W/up.json && -s $W/floor.txt && -s $W/upu.json && -s $W/flooru.txt ]] && break
  sleep 0.05
done
run() { taskset -c 0 "$L" run --target "$1" --op "$2" --depth 1 --conns 1 --keys 10000 --warmup 0.5 --duration 3 | grep -o '[0-9.]*[kM] ops/s'; }
for op in get set; do
  for net in tcp unix; do
    if [[ $net == tcp ]]; then U=upcache=$W/up.json; F=floor=$(head -1 "$W/floor.txt")
    else U=upcache=$W/upu.json; F=floor=$(head -1 "$W/flooru.txt"); fi
    for rep in 1 2 3 4; do
      echo "$net $op depth 1 conns 1 run $rep: upcache $(run "$U" "$op") | floor $(run "$F" "$op")"
    done
  done
done
