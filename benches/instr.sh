#!/usr/bin/env bash
# The server's user-space instructions per request (callgrind), for pipelined GET and SET:
# counted, not timed, so the figure is the same on a busy machine. For each cell the server
# (`loadgen foreground`, under callgrind) serves two client runs of different lengths, each in a
# fresh server; the difference of their instruction totals over the difference of their request
# counts (the server's own `requests` counter) is the cost of one more request, with start-up,
# preload and shutdown cancelled out.
#
#   bash benches/instr.sh                       # GET and SET, depth 64 x 4 connections, TCP
#   DEPTHS="16 64" OPS="get" NETS="tcp unix" bash benches/instr.sh
#   MAX_MEMORY=33554432 KEYS=1000000 OPS=set bash benches/instr.sh   # SET while evicting (issue 13)
#   TTL_MS=3600000 OPS=set bash benches/instr.sh   # SET with a TTL (SET_TTL, issue 12)
# (With MAX_MEMORY the server evicts from early in both runs, so the difference is the cost of a
# request while it evicts.)
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${OPS:-get set}
DEPTHS=${DEPTHS:-64}
NETS=${NETS:-tcp}
CONNS=${CONNS:-4}
KEYS=${KEYS:-100000}
MAX_MEMORY=${MAX_MEMORY:-0}
TTL=()
[[ -n ${TTL_MS:-} ]] && TTL=(--ttl-ms "$TTL_MS")
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
cargo build --release -q -p upcache-loadgen --bin loadgen
L=$PWD/target/release/loadgen
W=$(mktemp -d /tmp/upcache-instr.XXXXXX)
SERVER=""
trap '[[ -n $SERVER ]] && kill "$SERVER" 2>/dev/null; rm -rf "$W"' EXIT

# measure OP DEPTH NET SECONDS: prints "INSTRUCTIONS REQUESTS"
measure() {
  local op=$1 depth=$2 net=$3 secs=$4
  rm -f "$W"/upcache-instr.json "$W"/cg.out
  valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" \
    "$L" foreground --file "$W/upcache-instr.json" --transport "$net" --max-memory "$MAX_MEMORY" \
    >/dev/null 2>"$W/vg.log" &
  SERVER=$!
  for _ in $(seq 600); do [[ -s $W/upcache-instr.json ]] && break; sleep 0.1; done
  "$L" run --target "upcache=$W/upcache-instr.json" --op "$op" --depth "$depth" --conns "$CONNS" \
    --keys "$KEYS" --warmup 0 --duration "$secs" "${TTL[@]}" >/dev/null
  local requests
  requests=$(python3 benches/tools/stats.py "$W/upcache-instr.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
  local ir
  ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$W/cg.out")
  echo "$ir $requests"
}

echo "# user-space instructions per request (callgrind), $KEYS keys of 16 B, values of 64 B, $CONNS connections$([[ $MAX_MEMORY != 0 ]] && echo ", budget $MAX_MEMORY B")$([[ -n ${TTL_MS:-} ]] && echo ", TTL $TTL_MS ms")"
for net in $NETS; do
  for depth in $DEPTHS; do
    for op in $OPS; do
      read -r i1 r1 < <(measure "$op" "$depth" "$net" 2)
      read -r i2 r2 < <(measure "$op" "$depth" "$net" 6)
      awk -v i1="$i1" -v r1="$r1" -v i2="$i2" -v r2="$r2" -v op="$op" -v d="$depth" -v n="$net" \
        'BEGIN { printf "%-4s %-3s depth %2d: %.0f instructions/request (%d more requests)\n", n, op, d, (i2 - i1) / (r2 - r1), r2 - r1 }'
    done
  done
done
