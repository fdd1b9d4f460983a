#!/usr/bin/env bash
# The server's CPU time per request, upcache against the floor (issue 11), where the client is the
# ceiling. In the cells with several connections at depth, one client thread on one CPU cannot
# outrun the floor server on the other: the kernel's work per request (a loopback write runs the
# receiving side's network stack too) is about the same on both sides, so the floor is always
# within 80 % of the client's ceiling and its throughput says more about the client than about
# it. What a server costs per request does not depend on how fast the client asks: this measures
# it, as the CPU time the kernel charged to the server's thread (`/proc/PID/schedstat`, user and
# kernel together, `/proc/PID/stat` for the split) over a steady 2-second span in the middle of
# a run, divided by the requests answered in it (the client's ops/s times the span). The ratio
# floor / upcache is the share of the floor's throughput that upcache would reach were both
# CPU-bound, which is what the goal `upcache / floor >= 0.6` asks.
#
#   bash benches/cpu.sh              # 3 rounds per cell, about 5 minutes
#   ROUNDS=5 NETS=unix bash benches/cpu.sh
#   UPCACHE=/tmp/old/target/release/loadgen bash benches/cpu.sh   # another build's upcache
#     server (its `loadgen foreground`), against the same floor and client
#   OLD=/tmp/old/target/release/loadgen bash benches/cpu.sh   # and an older build's server in
#     each round too, beside the current one: its ratio to the floor, and old ns / new ns (above
#     1: the current build needs less CPU per request), the A/B of two builds in one sitting
#
# Servers pinned to CPU 1, client to CPU 0; 100,000 keys of 16 B (1,000,000 in the last cell),
# values of 64 B, 4 connections. Each round measures upcache, the old build (with OLD), then the
# floor.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
NETS=${NETS:-tcp unix}
cargo build --release -q -p upcache-loadgen
L=$PWD/target/release/loadgen
UPCACHE=${UPCACHE:-$L}
OLD=${OLD:-}
W=$(mktemp -d /tmp/upcache-cpu.XXXXXX)
PIDS=()
trap '(( ${#PIDS[@]} )) && kill "${PIDS[@]}" 2>/dev/null; rm -rf "$W"' EXIT
if [[ $(nproc) -ge 2 ]]; then SERVER_CPU=1; CLIENT_CPU=0; else SERVER_CPU=0; CLIENT_CPU=0; fi
TICK_NS=$((1000000000 / $(getconf CLK_TCK)))

# cpu PID: "RUN_NS USER_TICKS SYS_TICKS"
cpu() {
  local run user sys
  read -r run _ < "/proc/$1/schedstat"
  read -r user sys < <(awk '{ print $14, $15 }' "/proc/$1/stat")
  echo "$run $user $sys"
}

# measure PID TARGET OP DEPTH KEYS: "NS_PER_REQUEST USER_NS SYS_NS OPS"
measure() {
  local pid=$1 target=$2 op=$3 depth=$4 keys=$5
  taskset -c "$CLIENT_CPU" "$L" run --target "$target" --op "$op" --depth "$depth" --conns 4 \
    --keys "$keys" --warmup 1 --duration 3 >"$W/run.txt" &
  local client=$!
  # The warm-up (and the preload before it) is over after about 1.3 s for 100,000 keys; a
  # million keys take longer to load.
  sleep "$([[ $keys -gt 100000 ]] && echo 3.3 || echo 1.5)"
  read -r r0 u0 s0 < <(cpu "$pid")
  sleep 2
  read -r r1 u1 s1 < <(cpu "$pid")
  wait "$client"
  awk -v r="$((r1 - r0))" -v u="$(((u1 - u0) * TICK_NS))" -v s="$(((s1 - s0) * TICK_NS))" '
    function num(v,  m) { m = 1; if (v ~ /k$/) m = 1e3; if (v ~ /M$/) m = 1e6; sub(/[kM]$/, "", v); return v * m }
    { for (i = 1; i < NF; i++) if ($(i + 1) == "ops/s,") ops = num($i) }
    END { n = ops * 2; printf "%.1f %.1f %.1f %.0f\n", r / n, u / n, s / n, ops }' "$W/run.txt"
}

# median VALUE...: the median of the values
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "# server CPU time per request (user + kernel), upcache ($UPCACHE)$([[ -n $OLD ]] && echo ", the old build ($OLD)") and the floor, $ROUNDS rounds per cell, 4 connections"
echo "# ratio = floor ns / upcache ns: the share of the floor's throughput upcache reaches when both are CPU-bound"
[[ -n $OLD ]] && echo "# new/old = old ns / new ns, median of the rounds (above 1: the current build needs less CPU per request)"
for net in $NETS; do
  up_args=() floor_args=()
  if [[ $net == unix ]]; then up_args=(--transport unix); floor_args=(--unix-dir "$W"); fi
  rm -f "$W/up.json" "$W/old.json" "$W/floor.txt"
  taskset -c "$SERVER_CPU" "$UPCACHE" foreground --file "$W/up.json" "${up_args[@]}" >/dev/null 2>&1 & UP=$!
  taskset -c "$SERVER_CPU" "$L" floor "${floor_args[@]}" >"$W/floor.txt" 2>/dev/null & FLOOR=$!
  PIDS+=("$UP" "$FLOOR")
  OLDSRV=""
  if [[ -n $OLD ]]; then
    taskset -c "$SERVER_CPU" "$OLD" foreground --file "$W/old.json" "${up_args[@]}" >/dev/null 2>&1 & OLDSRV=$!
    PIDS+=("$OLDSRV")
  fi
  for _ in $(seq 200); do
    [[ -s $W/up.json && -s $W/floor.txt && ( -z $OLD || -s $W/old.json ) ]] && break
    sleep 0.05
  done
  [[ -s $W/up.json && -s $W/floor.txt && ( -z $OLD || -s $W/old.json ) ]] ||
    { echo "a server did not start within 10 s" >&2; exit 1; }
  for cell in "get 16 100000" "set 16 100000" "get 64 100000" "set 64 100000" "get 64 1000000"; do
    read -r op depth keys <<<"$cell"
    ratios=() old_ratios=() gains=() lines=""
    for _ in $(seq "$ROUNDS"); do
      read -r un uu us uo < <(measure "$UP" "upcache=$W/up.json" "$op" "$depth" "$keys")
      if [[ -n $OLD ]]; then
        read -r on ou os oo < <(measure "$OLDSRV" "upcache=$W/old.json" "$op" "$depth" "$keys")
      fi
      read -r fn fu fs fo < <(measure "$FLOOR" "floor=$(cat "$W/floor.txt")" "$op" "$depth" "$keys")
      ratios+=("$(awk -v f="$fn" -v u="$un" 'BEGIN { printf "%.2f", f / u }')")
      if [[ -n $OLD ]]; then
        old_ratios+=("$(awk -v f="$fn" -v o="$on" 'BEGIN { printf "%.2f", f / o }')")
        gains+=("$(awk -v o="$on" -v u="$un" 'BEGIN { printf "%.2f", o / u }')")
        lines+=" ${un}(u${uu}+k${us})/${on}(u${ou}+k${os})/${fn}(u${fu}+k${fs})"
      else
        lines+=" ${un}(u${uu}+k${us})/${fn}(u${fu}+k${fs})"
      fi
    done
    old_part="" who="upcache/floor"
    if [[ -n $OLD ]]; then
      old_part="; old build $(median "${old_ratios[@]}"), new/old $(median "${gains[@]}")"
      who="upcache/old/floor"
    fi
    printf '%-4s %s depth %2d keys %7d: median floor/upcache %s (goal %s)%s; ns per request %s by round:%s\n' \
      "$net" "$op" "$depth" "$keys" "$(median "${ratios[@]}")" "$([[ $keys -gt 100000 ]] && echo 0.5 || echo 0.6)" \
      "$old_part" "$who" "$lines"
  done
  kill "$UP" "$FLOOR" $OLDSRV 2>/dev/null || true
  wait "$UP" "$FLOOR" $OLDSRV 2>/dev/null || true
  PIDS=()
done
