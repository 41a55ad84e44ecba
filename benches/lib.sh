#!/usr/bin/env bash
# Shell helpers shared by the benchmark scripts (benches/*/run.sh), sourced after `cd "$root"`.
# They use the calling script's globals: `tmp` (its scratch directory), `pids` (an associative
# array pid -> the signal that stops it quickly) and `PID` (name -> pid), and KEEP_TMP.

log() { printf '== %s\n' "$*" >&2; }

die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

secs() { # 90, 90s, 5m, 1h -> seconds
  local v=$1
  case "$v" in
    *h) echo $((${v%h} * 3600)) ;;
    *m) echo $((${v%m} * 60)) ;;
    *s) echo "${v%s}" ;;
    *) echo "$v" ;;
  esac
}

stop() { # stop PID SIGNAL: send SIGNAL, wait up to 5 s, then SIGKILL it and any children left
  local pid=$1 children i
  kill -0 "$pid" 2>/dev/null || return 0
  children=$(pgrep -P "$pid" || true)
  kill -"$2" "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "warning: pid $pid did not stop on SIG$2; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  for i in $children; do kill -KILL "$i" 2>/dev/null || true; done
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${!pids[@]}"; do stop "$pid" "${pids[$pid]}"; done
  if [ "${KEEP_TMP:-0}" = 1 ] || [ "$rc" != 0 ]; then
    echo "logs and configs kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}

start() { # NAME STOP-SIGNAL LOGFILE CMD...: starts in the background, records the pid
  local name=$1 signal=$2 logfile=$3
  shift 3
  "$@" >"$logfile" 2>&1 &
  pids[$!]=$signal
  PID[$name]=$!
}

forget() { # NAME: a process that has been stopped or has exited
  unset "pids[${PID[$1]}]"
}

wait_ready() { # NAME PID URL LOG
  local i
  for ((i = 0; i < 150; i++)); do
    kill -0 "$2" 2>/dev/null || { tail -n 20 "$4" >&2; die "$1 exited during start-up"; }
    if curl -s -o /dev/null --max-time 1 "$3"; then return 0; fi
    sleep 0.1
  done
  tail -n 20 "$4" >&2
  die "$1 did not answer $3 within 15 s"
}

# free_ports N: prints N distinct free loopback ports, outside the kernel's ephemeral range when it
# can (as in benches/load/run.sh). Read its output with $(...).
free_ports() {
  python3 -c '
import random, socket, sys
n = int(sys.argv[1])
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        lo, hi = map(int, f.read().split())
    candidates = [p for p in range(20000, 65536) if not lo <= p <= hi]
except (OSError, ValueError):
    candidates = []
random.shuffle(candidates)
socks = []
for p in candidates + [0] * n:
    if len(socks) == n:
        break
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        continue
    socks.append(s)
ports = [s.getsockname()[1] for s in socks]
for s in socks:
    s.close()
print(*ports)
' "$1"
}

check_free() { # PORT...: dies when one is taken already
  local p
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is already in use"; fi
  done
}

temp_paths() { # nginx temp directories inside the prefix
  local d
  for d in client_body proxy fastcgi uwsgi scgi; do printf '    %s_temp_path %s/%s;\n' "$d" "$1" "$d"; done
}
install_missing() { # install the Debian packages for nginx, wrk, curl and python3 when missing
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    local SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

precond_binary() { # sets PRECOND: PRECOND_BIN, or target/release/precond built now
  if [ -n "${PRECOND_BIN:-}" ]; then
    PRECOND=$(cd "$(dirname "$PRECOND_BIN")" && pwd)/$(basename "$PRECOND_BIN")
    [ -x "$PRECOND" ] || die "PRECOND_BIN=$PRECOND_BIN is not an executable"
    log "using $PRECOND (PRECOND_BIN; not building)"
  else
    log "building precond (cargo build --release --locked)"
    if [ -x scripts/setup ]; then scripts/setup; fi
    cargo build --release --locked
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    PRECOND="$target_dir/release/precond"
  fi
}

size_bytes() { # SIZE: its bytes, read as precond reads store.max_bytes (src/config/validate.rs,
  # parse_size); fails on anything else
  python3 -c '
import re, sys
m = re.fullmatch(r"(\d+)\s*(B|KB|kB|KiB|MB|MiB|GB|GiB)?", sys.argv[1].strip())
if not m:
    sys.exit(1)
f = {None: 1, "B": 1, "KB": 10**3, "kB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}
print(int(m.group(1)) * f[m.group(2)])' "$1"
}

scratch() { # NAME: the scratch directory `tmp`, the process tables `pids` (pid -> the signal that
  # stops it quickly) and `PID` (name -> pid), and the traps that stop every process on exit
  tmp=$(mktemp -d "/tmp/precond-$1.XXXXXX")
  chmod 755 "$tmp" # nginx workers run as an unprivileged user when started by root
  declare -gA pids PID
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
