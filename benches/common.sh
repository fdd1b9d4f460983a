# Shared by the benchmark scripts, sourced after `cd` to the repository root:
#   source benches/common.sh; setup NAME redis-server [memcached]
# installs the peers missing (Debian packages), builds the load generator ($L), makes a work
# dir ($W) whose servers ($PIDS) are stopped and which is removed on exit, and pins: servers to
# CPU $SERVER_CPU (started as `"${PIN[@]}" server ... &`: taskset execs the server, so `$!` is
# its pid), the load generator to CPU $CLIENT_CPU.

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

setup() { # setup NAME PEER...: PEER is redis-server or memcached
  local name=$1 missing=() pkgs=()
  shift
  for peer in "$@"; do command -v "$peer" >/dev/null || missing+=("$peer"); done
  for peer in "${missing[@]}"; do
    case "$peer" in
      redis-server) pkgs+=(redis-server redis-tools) ;;
      *) pkgs+=("$peer") ;;
    esac
  done
  if [[ ${#pkgs[@]} -gt 0 ]]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
  cargo build --release -q -p upcache-loadgen
  L=$PWD/target/release/loadgen
  W=$(mktemp -d "/tmp/upcache-$name.XXXXXX")
  PIDS=()
  trap cleanup EXIT
  if [[ $(nproc) -ge 2 ]]; then SERVER_CPU=1; CLIENT_CPU=0; else SERVER_CPU=0; CLIENT_CPU=0; fi
  PIN=(taskset -c "$SERVER_CPU")
}

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() { # wait_for FILE-OR-PORT: until a socket file exists or a port accepts, 10 s at most
  for _ in $(seq 200); do
    if [[ "$1" == /* ]]; then [[ -S "$1" ]] && return 0
    else (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; fi
    sleep 0.05
  done
  echo "server on $1 did not start" >&2; exit 1
}

first_line() { for _ in $(seq 200); do [[ -s "$1" ]] && { head -1 "$1"; return 0; }; sleep 0.05; done; exit 1; }
