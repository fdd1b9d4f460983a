#!/usr/bin/env bash
# Throughput while evicting (issue 13): GET and SET at depth 64 x 4 over KEYS keys of 16 + 64 B,
# against an `upcache serve` server with a budget of BUDGET bytes (it holds about a quarter of
# the keys and evicts throughout) and one without, rounds alternating, then each server's keys,
# evictions and RSS. Prints budget/none per round and the median ratio per op over the rounds
# in which neither side was client-bound (`loadgen run`'s mark; such rounds are marked `*`).
# Each op starts with FILL seconds of SETs into both servers: the budgeted one is then full and
# has been evicting for seconds. (Its first seconds of evicting are slower: with a 3 s fill,
# the first round came out at 0.77-0.78 of the server without a budget where the later rounds
# gave 0.89-0.98; the cell is about the cache while it evicts, not while it first fills.)
#   bash benches/evicting.sh            ROUNDS=3 KEYS=1000000 BUDGET=33554432 FILL=8 by default
#   OLD=/path/to/older/upcache bash benches/evicting.sh   # also an older build, budgeted the
#                                       # same, in each round: budget/old per round and median
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
setup evicting
cargo build --release -q --bin upcache
UP=$PWD/target/release/upcache
ROUNDS=${ROUNDS:-3}; KEYS=${KEYS:-1000000}; BUDGET=${BUDGET:-33554432}; FILL=${FILL:-8}

start() { # start NAME [ARGS...]: an upcache server pinned to the server CPU (its pid appended to PIDS)
  local name=$1; shift
  "${PIN[@]}" "$UP" serve "$name" --dir "$W" --start --no-auto-kill "$@" > "$W/$name.line" &
  PIDS+=($!)
  first_line "$W/$name.line" > /dev/null
}
start budget --max-memory "$BUDGET"; BUD_PID=${PIDS[-1]}
start none; NOB_PID=${PIDS[-1]}
BUD=$W/upcache-budget.json; NOB=$W/upcache-none.json
if [[ -n ${OLD:-} ]]; then
  "${PIN[@]}" "$OLD" serve old --dir "$W" --start --no-auto-kill --max-memory "$BUDGET" > "$W/old.line" &
  PIDS+=($!)
  first_line "$W/old.line" > /dev/null
fi
OLDF=$W/upcache-old.json

cell() { # cell FILE OP: one measurement; prints "OPS_M CLIENT_BOUND" (yes/no)
  taskset -c "$CLIENT_CPU" "$L" run --target "upcache=$1" --op "$2" --depth 64 --conns 4 \
    --keys "$KEYS" --warmup 1 --duration 3 | tee -a "$W/log" | head -1 \
    | sed -E 's/.*: ([0-9.]+)M ops\/s.*client-bound: ([a-z]+).*/\1 \2/'
}
for op in set get; do
  # Fill both first, so the budgeted one is full and has been evicting for a while.
  taskset -c "$CLIENT_CPU" "$L" run --target "upcache=$BUD" --op set --depth 64 --conns 4 \
    --keys "$KEYS" --warmup 0 --duration "$FILL" > /dev/null
  taskset -c "$CLIENT_CPU" "$L" run --target "upcache=$NOB" --op set --depth 64 --conns 4 \
    --keys "$KEYS" --warmup 0 --duration "$FILL" > /dev/null
  [[ -z ${OLD:-} ]] || taskset -c "$CLIENT_CPU" "$L" run --target "upcache=$OLDF" --op set \
    --depth 64 --conns 4 --keys "$KEYS" --warmup 0 --duration "$FILL" > /dev/null
  for r in $(seq "$ROUNDS"); do
    read -r b bb < <(cell "$BUD" "$op"); read -r n nb < <(cell "$NOB" "$op")
    [[ $b =~ ^[0-9.]+$ && $n =~ ^[0-9.]+$ ]] || { echo "could not read loadgen's output (see $W/log)" >&2; exit 1; }
    mark=""; [[ $bb == yes || $nb == yes ]] && mark=" *"
    echo "$op round $r: budget ${b}M ops/s (client-bound: $bb) | none ${n}M ops/s (client-bound: $nb)$mark"
    echo "$op $b $n ${mark:+x}" >> "$W/ratios"
    if [[ -n ${OLD:-} ]]; then
      read -r o ob < <(cell "$OLDF" "$op")
      [[ $o =~ ^[0-9.]+$ ]] || { echo "could not read loadgen's output (see $W/log)" >&2; exit 1; }
      omark=""; [[ $bb == yes || $ob == yes ]] && omark=" *"
      echo "$op round $r: old budgeted ${o}M ops/s (client-bound: $ob): budget/old $(python3 -c "print(f'{$b/$o:.2f}')")$omark"
      echo "$op $b $o ${omark:+x}" >> "$W/olds"
    fi
  done
done
summary() { # summary FILE LABEL GOAL: per op, the ratios per round and their median over the
  # rounds not client-bound (FILE: lines "OP A B [x]", ratio A/B, x marking a client-bound one)
  python3 - "$@" <<'EOF'
import sys, statistics
path, label, goal = sys.argv[1:4]
rows = {}
for line in open(path):
    op, a, b, *bound = line.split()
    rows.setdefault(op, []).append((float(a) / float(b), bool(bound)))
for op, rs in rows.items():
    counted = [r for r, bound in rs if not bound]
    runs = ' '.join(f"{r:.2f}{'*' if bound else ''}" for r, bound in rs)
    median = f"{statistics.median(counted):.2f}" if counted else "none counted"
    print(f"{op}: {label} per round {runs}; median of the {len(counted)} rounds not client-bound {median}{goal}")
EOF
}
summary "$W/ratios" budget/none " (goal >= 0.85)"
[[ -z ${OLD:-} ]] || summary "$W/olds" budget/old ""
for f in "$BUD" "$NOB"; do
  "$UP" stats "$(basename "$f" .json | sed 's/^upcache-//')" --dir "$W" --json | python3 -c \
    'import json,sys; s=json.load(sys.stdin); print({k: s.get(k) for k in ("keys","evicted","max_memory","memory_bytes")})'
done
grep VmRSS "/proc/$BUD_PID/status" "/proc/$NOB_PID/status"
