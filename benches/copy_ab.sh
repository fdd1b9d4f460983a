#!/usr/bin/env bash
# Copy or send in place, per value size: the same server build twice, one copying every value
# into its reply buffer (`--copy-max` huge), one sending every value from where it is stored by
# vectored write (`--copy-max 0`), alternating round by round; GET at
# depth 64 with 4 connections, over a Unix socket and TCP. Key counts are chosen so that each
# size stores about 64 MiB of values (at most 100,000 keys). Prints each round and the median
# ratio copy / in-place per size: the server's own default (`COPY_MAX`) is chosen from this.
#
#   bash benches/copy_ab.sh                  # 64 B .. 64 KiB, 3 rounds, about 6 minutes
#   ROUNDS=5 SIZES="64 1024" NETS=unix bash benches/copy_ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-64 256 1024 4096 16384 65536}
NETS=${NETS:-unix tcp}
source benches/common.sh
setup copy-ab
for net in $NETS; do
  "${PIN[@]}" "$L" foreground --file "$W/copy-$net.json" --transport "$net" --copy-max 4294967295 >/dev/null 2>&1 & PIDS+=($!)
  "${PIN[@]}" "$L" foreground --file "$W/place-$net.json" --transport "$net" --copy-max 0 >/dev/null 2>&1 & PIDS+=($!)
done
for net in $NETS; do first_line "$W/copy-$net.json" >/dev/null; first_line "$W/place-$net.json" >/dev/null; done

ops() { # ops TARGET VALUE_SIZE KEYS: GET ops/s at depth 64 x 4
  taskset -c "$CLIENT_CPU" "$L" run --target "$1" --op get --depth 64 --conns 4 --keys "$3" \
    --value-size "$2" --warmup 0.5 --duration 2 \
    | grep -o '[0-9.]*[kM] ops/s' | awk '{v=$1; m=1; if (v ~ /k$/) m=1e3; if (v ~ /M$/) m=1e6; sub(/[kM]$/, "", v); print v*m}'
}
echo "# GET depth 64 x 4: values copied into the reply buffer vs sent in place (vectored write), $ROUNDS rounds"
printf '| transport | value | keys | copy ops/s (rounds) | in place ops/s (rounds) | copy / in place (median) |\n|---|---:|---:|---|---|---:|\n'
for net in $NETS; do
  for size in $SIZES; do
    keys=$(( 64 * 1024 * 1024 / size )); (( keys > 100000 )) && keys=100000
    copies=(); places=(); ratios=()
    for _ in $(seq "$ROUNDS"); do
      c=$(ops "upcache=$W/copy-$net.json" "$size" "$keys")
      p=$(ops "upcache=$W/place-$net.json" "$size" "$keys")
      copies+=("$(awk -v x="$c" 'BEGIN { printf "%.0fk", x / 1e3 }')")
      places+=("$(awk -v x="$p" 'BEGIN { printf "%.0fk", x / 1e3 }')")
      ratios+=("$(awk -v c="$c" -v p="$p" 'BEGIN { printf "%.2f", c / p }')")
    done
    median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END { print a[int((NR + 1) / 2)] }')
    printf '| %s | %s B | %s | %s | %s | %s |\n' "$net" "$size" "$keys" "${copies[*]}" "${places[*]}" "$median"
  done
done
