#!/usr/bin/env bash
# End-to-end load benchmark: precond (`pass` and `guard`) beside nginx `proxy_pass` and a bare
# Pingora proxy (examples/bare_pingora.rs: what Pingora costs before precond adds anything), all
# in front of the same nginx static origin, driven by wrk over keep-alive connections.
#
#   bash benches/load/run.sh          # DURATION=10s CONNECTIONS=32 THREADS=1 WARMUP=1s
#
# Workloads, each run against every proxy:
#   get        GET /items/1 (forwarded by all)
#   put-match  PUT /items/1 with If-Match: "v1", the current tag (forwarded by all)
#   put-stale  PUT /items/1 with If-Match: "v0", a tag the guard saw replaced: precond guard
#              answers 412 at the edge and the origin must see 0 requests (checked: FAIL and a
#              non-zero exit otherwise); the other proxies forward it (the origin ignores
#              If-Match and answers 204: that is the lost update precond prevents).
#
# The guard learns "v0" replaced from two GETs before each guard run (the origin shows "v0" to a
# request carrying X-Bench-ETag: v0, then "v1"), so the stale PUT is refused under the default
# `superseded` policy (proof: a tag seen replaced); GUARD_POLICY=mismatch refuses it because "v0"
# is not the known current tag. The origin's PUT answer carries ETag "v1", so "v1" stays current
# and put-match keeps being forwarded.
#
# Caveats: everything (wrk, the proxy under test, the origin) runs on one machine, on loopback.
# On the 2-core reference machine the load generator competes for CPU with the proxy (2 threads)
# and the origin (1 worker), which is why wrk gets one thread (-t1): a second wrk thread would
# take CPU from the proxy it measures. Absolute req/s are low and machine-dependent: read the
# ratios between targets measured in the same run, and the proxy's CPU time per request (from
# /proc). Each run also reports the share of CPU used by unrelated processes, which should be
# near 0%: a concurrent build or benchmark skews that run. Per-request logging is off on both
# sides (nginx proxy: access_log off; precond: RUST_LOG=warn, as its info level logs every
# conditional write); the origin keeps an access log, to count the requests that reached it.
#
# Knobs (environment): DURATION (10s), CONNECTIONS (32), THREADS (1: wrk threads), WARMUP (1s of
# unmeasured load before each run; 0 to skip), GUARD_POLICY (superseded | mismatch; default
# superseded), PRECOND_LOG (RUST_LOG of both precond processes; default warn), PRECOND_BIN (run
# this precond binary instead of building target/release/precond; BARE_BIN: the bare Pingora one,
# skipped when unset), KEEP_TMP=1 (keep configs and logs; always kept after a failure).
# RESULTS_DIR (where results.md and results.svg go; default benches/load, the published ones).
# Writes results.md and results.svg. Needs root only to install nginx
# and wrk when they are missing (apt-get).
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-1s}
GUARD_POLICY=${GUARD_POLICY:-superseded}
PRECOND_LOG=${PRECOND_LOG:-warn}

case "$GUARD_POLICY" in
  superseded | mismatch) ;;
  *) echo "GUARD_POLICY must be superseded or mismatch, not '$GUARD_POLICY'" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ -n "${PRECOND_BIN:-}" ]; then
  PRECOND=$(cd "$(dirname "$PRECOND_BIN")" && pwd)/$(basename "$PRECOND_BIN")
  [ -x "$PRECOND" ] || die "PRECOND_BIN=$PRECOND_BIN is not an executable"
  log "using $PRECOND (PRECOND_BIN; not building)"
  BARE=${BARE_BIN:-}
else
  # examples/bare_pingora.rs: the smallest Pingora proxy, to tell what Pingora itself costs from
  # what precond adds (the target is skipped in trees that do not have it).
  build=(cargo build --release --locked)
  [ ! -f examples/bare_pingora.rs ] || build+=(--bins --example bare_pingora)
  log "building precond (${build[*]})"
  if [ -x scripts/setup ]; then scripts/setup; fi
  "${build[@]}"
  # Where cargo put them (CARGO_TARGET_DIR or the workspace's target/).
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  PRECOND="$target_dir/release/precond"
  BARE=""
  [ ! -f examples/bare_pingora.rs ] || BARE="$target_dir/release/examples/bare_pingora"
fi
[ -z "$BARE" ] || [ -x "$BARE" ] || die "$BARE is not an executable"

# --- processes and cleanup ---------------------------------------------------------------------
tmp=$(mktemp -d /tmp/precond-load.XXXXXX)
chmod 755 "$tmp" # nginx workers run as an unprivileged user when started by root
declare -A pids # pid -> the signal that stops it quickly

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
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- ports -------------------------------------------------------------------------------------
read -r P_ORIGIN P_NGINX P_BARE P_PASS P_GUARD M_PASS M_GUARD < <(python3 -c '
import socket
socks = []
for _ in range(7):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
')
for p in "$P_ORIGIN" "$P_NGINX" "$P_BARE" "$P_PASS" "$P_GUARD" "$M_PASS" "$M_GUARD"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is already in use"; fi
done

# --- origin: nginx static, ETag "v1" on GET and PUT, PUT answered 204 -------------------------
mkdir -p "$tmp/origin/www/items" "$tmp/proxy"
printf '{"id":1,"name":"widget","description":"a widget used by the precond load benchmark","price":{"amount":1999,"currency":"EUR"},"stock":10,"tags":["bench","static"],"updated":"2026-11-21T00:00:00Z"}\n' \
  >"$tmp/origin/www/items/1"
chmod -R a+rX "$tmp/origin/www"

temp_paths() { # nginx temp directories inside the prefix
  local d
  for d in client_body proxy fastcgi uwsgi scgi; do printf '    %s_temp_path %s/%s;\n' "$d" "$1" "$d"; done
}

cat >"$tmp/origin/origin.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $tmp/origin/nginx.pid;
error_log $tmp/origin/error.log warn;
events { worker_connections 1024; }
http {
$(temp_paths "$tmp/origin")
    log_format bench '\$request_method \$status';
    access_log $tmp/origin/access.log bench;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    default_type application/json;
    # GET /items/1 with "X-Bench-ETag: v0" shows the previous version's tag: the guard warm-up
    # uses it so that precond sees "v0" replaced by "v1".
    map \$http_x_bench_etag \$bench_etag {
        default '"v1"';
        v0      '"v0"';
    }
    server {
        listen 127.0.0.1:$P_ORIGIN;
        root $tmp/origin/www;
        etag off;
        location /items/ {
            add_header ETag \$bench_etag always;
            # An API that never checks If-Match: every PUT succeeds.
            if (\$request_method = PUT) { return 204; }
        }
    }
}
EOF

# --- nginx proxy -------------------------------------------------------------------------------
cat >"$tmp/proxy/proxy.conf" <<EOF
daemon off;
master_process on;
worker_processes 2;
pid $tmp/proxy/nginx.pid;
error_log $tmp/proxy/error.log warn;
events { worker_connections 4096; }
http {
$(temp_paths "$tmp/proxy")
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream origin {
        server 127.0.0.1:$P_ORIGIN;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$P_NGINX;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF

# --- precond pass and guard --------------------------------------------------------------------
precond_conf() { # NAME PORT METRICS_PORT MODE_LINES
  mkdir -p "$tmp/$1"
  cat >"$tmp/$1/$1.toml" <<EOF
[server]
listen = ["127.0.0.1:$2"]
threads = 2
grace_period = "0s"
graceful_shutdown_timeout = "1s"
metrics_listen = "127.0.0.1:$3"

# store: defaults (capacity 100000, ttl 10m); this benchmark uses one resource.

[[upstream]]
name = "origin"
servers = ["127.0.0.1:$P_ORIGIN"]

[[route]]
path_prefix = "/"
upstream = "origin"
$4
EOF
  "$PRECOND" check --config "$tmp/$1/$1.toml" >/dev/null
}
precond_conf pass "$P_PASS" "$M_PASS" 'mode = "pass"'
precond_conf guard "$P_GUARD" "$M_GUARD" "mode = \"guard\"
policy = \"$GUARD_POLICY\""

declare -A PID
start() { # NAME STOP-SIGNAL LOGFILE CMD...: starts in the background, records the pid
  local name=$1 signal=$2 logfile=$3
  shift 3
  "$@" >"$logfile" 2>&1 &
  pids[$!]=$signal
  PID[$name]=$!
}

"$NGINX" -t -q -p "$tmp/origin" -e "$tmp/origin/error.log" -c "$tmp/origin/origin.conf"
"$NGINX" -t -q -p "$tmp/proxy" -e "$tmp/proxy/error.log" -c "$tmp/proxy/proxy.conf"
start origin TERM "$tmp/origin/stderr.log" "$NGINX" -p "$tmp/origin" -e "$tmp/origin/error.log" -c "$tmp/origin/origin.conf"
start nginx TERM "$tmp/proxy/stderr.log" "$NGINX" -p "$tmp/proxy" -e "$tmp/proxy/error.log" -c "$tmp/proxy/proxy.conf"
start pass INT "$tmp/pass/precond.log" env NO_COLOR=1 RUST_LOG="$PRECOND_LOG" "$PRECOND" run --config "$tmp/pass/pass.toml"
start guard INT "$tmp/guard/precond.log" env NO_COLOR=1 RUST_LOG="$PRECOND_LOG" "$PRECOND" run --config "$tmp/guard/guard.toml"
if [ -n "$BARE" ]; then
  mkdir -p "$tmp/bare"
  start bare INT "$tmp/bare/bare.log" "$BARE" "127.0.0.1:$P_BARE" "127.0.0.1:$P_ORIGIN" 2
fi

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
wait_ready origin "${PID[origin]}" "http://127.0.0.1:$P_ORIGIN/items/1" "$tmp/origin/error.log"
wait_ready "nginx proxy" "${PID[nginx]}" "http://127.0.0.1:$P_NGINX/items/1" "$tmp/proxy/error.log"
wait_ready "precond pass" "${PID[pass]}" "http://127.0.0.1:$P_PASS/items/1" "$tmp/pass/precond.log"
wait_ready "precond guard" "${PID[guard]}" "http://127.0.0.1:$P_GUARD/items/1" "$tmp/guard/precond.log"
if [ -n "$BARE" ]; then
  wait_ready "bare Pingora" "${PID[bare]}" "http://127.0.0.1:$P_BARE/items/1" "$tmp/bare/bare.log"
fi

# --- CPU accounting ----------------------------------------------------------------------------
# Per run: CPU time of the proxy under test (per request: independent of how busy the machine
# was), and CPU time used on the machine by anything but the benchmark's own processes (another
# build or benchmark skews every number; the report shows it).
CLK_TCK=$(getconf CLK_TCK)
declare -A CPU_PIDS=([origin]="${PID[origin]} $(pgrep -P "${PID[origin]}" | tr '\n' ' ')"
  [nginx]="${PID[nginx]} $(pgrep -P "${PID[nginx]}" | tr '\n' ' ')"
  [bare]="${PID[bare]:-}" [pass]="${PID[pass]}" [guard]="${PID[guard]}")

jiffies() { # PID...: user+system clock ticks used so far
  local p sum=0 t
  for p in "$@"; do
    # fields after "pid (comm) ": state is 1, utime 12, stime 13
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || t=0
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}

# cpu_snapshot: sets SNAP to "busy all origin nginx bare pass guard children" (clock ticks; busy
# excludes idle and iowait, all includes them; children: this shell's finished children, i.e. wrk,
# from `times`: call it in this shell, not in $(...))
cpu_snapshot() {
  local name out=()
  out+=("$(awk '/^cpu / { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat)")
  # shellcheck disable=SC2086 # word splitting of the pid lists is intended
  for name in origin nginx bare pass guard; do out+=("$(jiffies ${CPU_PIDS[$name]})"); done
  times >"$tmp/times"
  out+=("$(awk -v hz="$CLK_TCK" 'NR == 2 {
      s = 0
      for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] }
      printf "%d", s * hz }' "$tmp/times")")
  SNAP="${out[*]}"
}

# Another busy process (a build, a benchmark) skews every number: say so before starting.
cpu_snapshot
read -r b0 a0 _ <<<"$SNAP"
sleep 1
cpu_snapshot
read -r b1 a1 _ <<<"$SNAP"
idle_busy=$(awk -v b=$((b1 - b0)) -v a=$((a1 - a0)) 'BEGIN { printf "%.0f", a ? 100 * b / a : 0 }')
if [ "$idle_busy" -gt 10 ]; then
  log "warning: the machine is ${idle_busy}% busy before the load starts; other processes compete for CPU"
fi

# --- requests ----------------------------------------------------------------------------------
BODY='{"id":1,"name":"widget","stock":9}'
declare -A URL=([nginx]="http://127.0.0.1:$P_NGINX" [bare]="http://127.0.0.1:$P_BARE"
  [pass]="http://127.0.0.1:$P_PASS" [guard]="http://127.0.0.1:$P_GUARD")
declare -A LABEL=([nginx]="nginx proxy_pass" [bare]="bare Pingora" [pass]="precond pass" [guard]="precond guard ($GUARD_POLICY)")
TARGETS=(nginx pass guard)
[ -z "$BARE" ] || TARGETS=(nginx bare pass guard)
WORKLOADS=(get put-match put-stale)

# request BASE WORKLOAD [curl args...]: one request as the workload sends it; prints
# "STATUS ETAG PRECOND-DECISION" (- for an absent header)
request() {
  local base=$1 w=$2 out
  shift 2
  local args=(-s -o /dev/null -D - --max-time 5 "$@")
  case "$w" in
    get) ;;
    put-match) args+=(-X PUT -H 'If-Match: "v1"' -H 'Content-Type: application/json' --data-binary "$BODY") ;;
    put-stale) args+=(-X PUT -H 'If-Match: "v0"' -H 'Content-Type: application/json' --data-binary "$BODY") ;;
  esac
  out=$(curl "${args[@]}" "$base/items/1" | tr -d '\r')
  awk 'NR == 1 { s = $2 }
       tolower($1) == "etag:" { e = $2 }
       tolower($1) == "precond-decision:" { $1 = ""; d = substr($0, 2); gsub(/ /, "", d) }
       END { printf "%s %s %s\n", s, (e == "" ? "-" : e), (d == "" ? "-" : d) }' <<<"$out"
}

expect() { # DESCRIPTION EXPECTED-PREFIX ACTUAL
  if [[ "$3" == "$2"* ]]; then
    printf '   ok   %-48s %s\n' "$1" "$3" >&2
  else
    die "$1: expected '$2...', got '$3'"
  fi
}

# Teach the guard that "v0" was replaced by "v1": a GET that shows "v0" current, then one that
# shows "v1" (under `mismatch`, the second alone would do: "v1" known current). Repeated before
# every guard run, because concurrent forwarded writes make the current tag unknown.
teach_guard() {
  request "${URL[guard]}" get -H 'X-Bench-ETag: v0' >/dev/null
  request "${URL[guard]}" get >/dev/null
}

log "sanity checks (status etag precond-decision)"
O="http://127.0.0.1:$P_ORIGIN"
expect "origin GET" '200 "v1"' "$(request "$O" get)"
expect "origin GET, X-Bench-ETag: v0" '200 "v0"' "$(request "$O" get -H 'X-Bench-ETag: v0')"
expect "origin PUT If-Match \"v1\" (no 412 from nginx)" '204 "v1"' "$(request "$O" put-match)"
expect "origin PUT If-Match \"v0\" (never checks If-Match)" '204 "v1"' "$(request "$O" put-stale)"
for t in "${TARGETS[@]}"; do
  expect "${LABEL[$t]} GET" '200 "v1"' "$(request "${URL[$t]}" get)"
done
teach_guard
expect "guard PUT If-Match \"v1\" (forwarded)" '204 "v1"' "$(request "${URL[guard]}" put-match)"
expect "guard PUT If-Match \"v0\" (refused at the edge)" '412 "v1" rejected;precondition=If-Match' \
  "$(request "${URL[guard]}" put-stale)"
expect "pass PUT If-Match \"v0\" (forwarded)" '204 "v1"' "$(request "${URL[pass]}" put-stale)"

# --- load --------------------------------------------------------------------------------------
cat >"$tmp/put-match.lua" <<EOF
wrk.method = "PUT"
wrk.headers["If-Match"] = '"v1"'
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$BODY'
EOF
sed 's/"v1"/"v0"/' "$tmp/put-match.lua" >"$tmp/put-stale.lua"

origin_count() { wc -l <"$tmp/origin/access.log"; }

to_ms() { # wrk duration (850.00us, 1.23ms, 2.00s, 1.00m) -> milliseconds
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
    if (f < 0) print "nan"; else printf "%.3f", n * f }'
}

csv="$tmp/results.csv"
echo "target,label,workload,rps,p50_ms,p99_ms,requests,non2xx,socket_errors,origin_requests,status,expected,proxy_cpu_us_per_req,other_cpu_pct" >"$csv"
failures=()

run_wrk() { # TARGET WORKLOAD DURATION OUTFILE
  local script=()
  [ "$2" = get ] || script=(-s "$tmp/$2.lua")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3" --latency "${script[@]}" "${URL[$1]}/items/1" >"$4" 2>&1
}

warm_text="after $WARMUP warm-up"
[ "$WARMUP" != 0 ] || warm_text="no warm-up"
log "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency ($warm_text), guard policy $GUARD_POLICY"
for w in "${WORKLOADS[@]}"; do
  for t in "${TARGETS[@]}"; do
    out="$tmp/wrk-$t-$w.txt"
    if [ "$WARMUP" != 0 ]; then run_wrk "$t" "$w" "$WARMUP" /dev/null; fi
    [ "$t" != guard ] || teach_guard
    probe=$(request "${URL[$t]}" "$w")
    expected=${probe%% *}
    if [ "$t" = guard ] && [ "$w" = put-stale ] && [ "$expected" != 412 ]; then
      failures+=("guard put-stale: the probe request got '$probe', not an edge 412")
    fi
    before=$(origin_count)
    cpu_snapshot
    cpu0=$SNAP
    run_wrk "$t" "$w" "$DURATION" "$out"
    cpu_snapshot
    cpu1=$SNAP
    sleep 0.3 # let the origin log requests that were in flight when wrk stopped
    origin=$(($(origin_count) - before))

    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    requests=$(awk '/requests in/ { print $1 }' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    non2xx=${non2xx:-0}
    sockerr=$(awk -F'[ ,]+' '/Socket errors:/ { print $5 + $7 + $9 + $11 }' "$out")
    sockerr=${sockerr:-0}
    if [ -z "$rps" ] || [ -z "$requests" ]; then
      cat "$out" >&2
      die "cannot parse wrk output for $t $w"
    fi

    col=$(( $(printf '%s\n' nginx bare pass guard | grep -n -x "$t" | cut -d: -f1) + 3 ))
    read -r proxy_us other_pct < <(awk -v c="$col" -v hz="$CLK_TCK" -v n="$requests" \
      -v x="$cpu0" -v y="$cpu1" 'BEGIN {
        split(x, a, " "); split(y, b, " ")
        for (i = 1; i <= 8; i++) d[i] = b[i] - a[i]
        ours = d[3] + d[4] + d[5] + d[6] + d[7] + d[8]
        other = d[1] - ours; if (other < 0) other = 0
        printf "%.1f %.0f\n", n ? d[c] / hz * 1e6 / n : 0, d[2] ? 100 * other / d[2] : 0 }')

    # What the responses were: wrk counts only non-2xx/3xx, the probe gives the status.
    if [ "$non2xx" = 0 ] && [[ "$expected" == [23]?? ]]; then
      status="all $expected"
    elif [ "$non2xx" = "$requests" ] && [[ "$expected" != [23]?? ]]; then
      status="all $expected"
    else
      status="$expected; $non2xx of $requests non-2xx/3xx"
      failures+=("$t $w: mixed responses ($status)")
    fi
    [ "$sockerr" = 0 ] || status="$status; $sockerr socket errors"
    if [ "$t" = guard ] && [ "$w" = put-stale ] && [ "$origin" != 0 ]; then
      failures+=("guard put-stale: the origin received $origin requests (must be 0: stale writes must be refused at the edge)")
    fi
    if [ "$t" != guard ] || [ "$w" != put-stale ]; then
      [[ "$expected" == 2?? ]] || failures+=("$t $w: forwarded request answered $expected")
    fi
    printf '   %-28s %-9s %9s req/s  p50 %6s ms  p99 %6s ms  %5s us CPU/req  origin %7s  %s  (other CPU %s%%)\n' \
      "${LABEL[$t]}" "$w" "$rps" "$p50" "$p99" "$proxy_us" "$origin" "$status" "$other_pct" >&2
    echo "$t,${LABEL[$t]},$w,$rps,$p50,$p99,$requests,$non2xx,$sockerr,$origin,$status,$expected,$proxy_us,$other_pct" >>"$csv"
  done
done

# --- report ------------------------------------------------------------------------------------
for t in pass guard; do
  curl -s --max-time 2 "http://127.0.0.1:$([ $t = pass ] && echo "$M_PASS" || echo "$M_GUARD")/metrics" \
    >"$tmp/$t/metrics.txt" || true
done
upstream_failures=$(awk '/^precond_upstream_failures_total/ { s += $2 } END { print s + 0 }' \
  "$tmp/pass/metrics.txt" "$tmp/guard/metrics.txt")
[ "$upstream_failures" = 0 ] || failures+=("precond counted $upstream_failures upstream failures (see precond_upstream_failures_total)")
# wrk closes its connections when its time is up, with requests in flight: precond logs each as
# an error (and, for a write, forgets the resource's current tag). Anything else is reported.
precond_warnings=$(cat "$tmp/pass/precond.log" "$tmp/guard/precond.log" | grep -c -E 'WARN|ERROR' || true)
precond_closed=$(cat "$tmp/pass/precond.log" "$tmp/guard/precond.log" | grep -E 'WARN|ERROR' \
  | grep -c 'Downstream ConnectionClosed' || true)
if [ "$precond_warnings" != "$precond_closed" ]; then
  echo "precond logged warnings or errors other than client disconnects:" >&2
  cat "$tmp/pass/precond.log" "$tmp/guard/precond.log" | grep -E 'WARN|ERROR' \
    | grep -v 'Downstream ConnectionClosed' | head -n 20 >&2
fi

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "${PRECOND_BIN:-}" ] || commit="binary $PRECOND_BIN, tree at $commit"
if [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then commit="$commit + uncommitted changes in src/"; fi
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine=$(nproc) cores, ${cpu:-unknown CPU}, $(free -g | awk '/^Mem:/ { print $2 " GiB" }'), Linux $(uname -r)"
  echo "nginx=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
  echo "wrk=$(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }')"
  echo "precond=$commit"
  echo "load=wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, keep-alive, $warm_text"
  echo "setup=origin: nginx static, 1 worker; nginx proxy: 2 workers, upstream keepalive 64, access_log off;$([ -z "$BARE" ] || echo " bare Pingora: 2 threads;") precond: 2 threads, RUST_LOG=$PRECOND_LOG, store defaults; guard policy: $GUARD_POLICY"
  echo "precond_log_warnings=$precond_warnings"
  echo "precond_log_closed=$precond_closed"
  echo "busy_before=$idle_busy"
} >"$tmp/machine.txt"

out=${RESULTS_DIR:-$here}
mkdir -p "$out"
python3 "$here/report.py" "$csv" "$tmp/machine.txt" "$out/results.md" "$out/results.svg"
python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$out/results.svg"
echo "Wrote $out/results.md and $out/results.svg"

if [ ${#failures[@]} -gt 0 ]; then
  for f in "${failures[@]}"; do echo "FAIL: $f"; done
  exit 1
fi
echo "OK: every forwarded request was answered 2xx; guard put-stale was refused at the edge (0 origin requests)"
