#!/usr/bin/env bash
# Key-flood benchmark: does precond's memory stay within store.max_bytes when clients name more
# distinct resources than it can remember, and does it refuse to learn keys longer than
# store.max_key_bytes? One precond guard route (capacity far above what max_bytes allows, so
# max_bytes is the bound that binds) in front of an nginx origin that answers any GET with 200 and
# ETag "v1" (so every answer is learned), flooded by wrk (benches/flood/flood.lua) with GETs to
# distinct paths, in two scenarios run one after the other against the same precond process:
#
#   short   KEYS distinct short keys (/k/<thread>/<counter>, the path KEY_LEN bytes long): the
#           store fills up to max_bytes, then evicts (precond_store_evictions_total{cause="size"})
#   long    LONG_KEYS distinct keys of LONG_KEY_LEN bytes (a query string, /q?i=<n>&pad=aaa...),
#           above store.max_key_bytes: forwarded, never learned (precond_key_too_long_total
#           counts them; precond_learned_total and precond_store_entries must not move)
#
#   bash benches/flood/run.sh             # full: KEYS=2000000, LONG_KEYS=50000
#   SMOKE=1 bash benches/flood/run.sh     # CI smoke: KEYS=60000, LONG_KEYS=2000, same checks (<1 min)
#   KEYS=10000000 bash benches/flood/run.sh   # the 10-million-key run (see results.md for the rate)
#
# Before the floods, the fixed overhead is measured: the RSS of the idle precond (IDLE seconds
# after start-up), then the RSS after WARMUP of the same wrk load on one single key (what the
# connections, their buffers and the allocator's per-thread arenas cost without any store
# growth). The bound for the final RSS of each scenario is
#     max_bytes + idle RSS + allowance,   allowance = max(2 x (warm-up RSS - idle RSS), 4 MiB)
# (RSS_ALLOWANCE overrides it; report.py explains the choice in results.md).
#
# Sampled every second (benches/flood/sample.py) into samples.csv: precond's VmRSS and open fds
# (/proc/PID), precond_store_bytes, precond_store_entries, evictions, forwarded, learned and
# key-too-long counters; drawn over time in flood.svg. Checks (FAIL and a non-zero exit):
#   - the final RSS of each scenario (the highest sample of the SETTLE seconds after its wrk
#     stopped) <= the bound above; the peak during the flood is reported too;
#   - precond_store_bytes <= max_bytes on every sample;
#   - wrk saw no non-2xx answer and no socket error; precond counted no upstream failure;
#   - long: precond_key_too_long_total grew by at least LONG_KEYS, precond_learned_total did not
#     grow, precond_store_entries did not grow;
#   - short: the store reached max_bytes (evictions counted), or the run did not exercise the
#     bound (a FAIL: raise KEYS or lower MAX_BYTES).
#
# Knobs (environment): SMOKE (0 | 1), KEYS (short-key scenario; 2000000, smoke 60000), KEY_LEN
# (path bytes of a short key; 32), LONG_KEYS (50000, smoke 2000), LONG_KEY_LEN (61440), DURATION
# (unset: each scenario sends its KEYS; set, e.g. 60s: each scenario runs that long instead, keys
# unbounded), MAX_TIME (seconds a scenario may take before it is a FAIL; default generous:
# 120 + keys/200), MAX_BYTES ("32MiB"; an integer or a size as precond reads it), MAX_KEY_BYTES
# (2048), CAPACITY (100000000), CONNECTIONS (16), THREADS (1: wrk threads; the Lua script builds
# every request, one thread is enough on 2 cores), IDLE (3: seconds), WARMUP (3: seconds),
# SETTLE (3: seconds after each scenario), RSS_ALLOWANCE (KiB; default: measured, see above),
# PRECOND_LOG (warn), PRECOND_BIN (run this binary instead of building target/release/precond),
# RESULTS_DIR (where results.md, samples.csv and flood.svg go; default benches/flood, the
# published ones; smoke runs default to a temporary directory), KEEP_TMP=1. Needs root only to
# install nginx and wrk when they are missing (apt-get).
set -euo pipefail

SMOKE=${SMOKE:-0}
case "$SMOKE" in
  0 | 1) ;;
  *) echo "SMOKE must be 0 or 1, not '$SMOKE'" >&2; exit 2 ;;
esac
if [ "$SMOKE" = 1 ]; then
  KEYS=${KEYS:-60000}
  LONG_KEYS=${LONG_KEYS:-2000}
else
  KEYS=${KEYS:-2000000}
  LONG_KEYS=${LONG_KEYS:-50000}
fi
KEY_LEN=${KEY_LEN:-32}
LONG_KEY_LEN=${LONG_KEY_LEN:-61440}
DURATION=${DURATION:-}
MAX_BYTES=${MAX_BYTES:-32MiB}
MAX_KEY_BYTES=${MAX_KEY_BYTES:-2048}
CAPACITY=${CAPACITY:-100000000}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-1}
IDLE=${IDLE:-3}
WARMUP=${WARMUP:-3}
SETTLE=${SETTLE:-3}
RSS_ALLOWANCE=${RSS_ALLOWANCE:-}
PRECOND_LOG=${PRECOND_LOG:-warn}

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
# shellcheck source=benches/lib.sh
source benches/lib.sh


for v in KEYS KEY_LEN LONG_KEYS LONG_KEY_LEN MAX_KEY_BYTES CAPACITY CONNECTIONS THREADS IDLE WARMUP SETTLE; do
  is_uint "${!v}" || { echo "$v must be a whole number, not '${!v}'" >&2; exit 2; }
done
[ -z "$RSS_ALLOWANCE" ] || is_uint "$RSS_ALLOWANCE" || { echo "RSS_ALLOWANCE must be KiB, not '$RSS_ALLOWANCE'" >&2; exit 2; }
[ -z "${MAX_TIME:-}" ] || is_uint "$MAX_TIME" || { echo "MAX_TIME must be seconds, not '$MAX_TIME'" >&2; exit 2; }
[ "$THREADS" -ge 1 ] && [ "$CONNECTIONS" -ge "$THREADS" ] || { echo "need 1 <= THREADS <= CONNECTIONS" >&2; exit 2; }
if [ -z "$DURATION" ]; then
  [ "$KEYS" -ge "$THREADS" ] && [ "$LONG_KEYS" -ge "$THREADS" ] || { echo "KEYS and LONG_KEYS must be at least THREADS" >&2; exit 2; }
else
  [[ "$DURATION" =~ ^[0-9]+[smh]?$ ]] || { echo "DURATION must look like 60s, 5m or 1h, not '$DURATION'" >&2; exit 2; }
fi
[ "$LONG_KEY_LEN" -gt "$MAX_KEY_BYTES" ] || { echo "LONG_KEY_LEN ($LONG_KEY_LEN) must exceed MAX_KEY_BYTES ($MAX_KEY_BYTES)" >&2; exit 2; }
MAX_BYTES_N=$(size_bytes "$MAX_BYTES") || { echo "MAX_BYTES is not a size: '$MAX_BYTES'" >&2; exit 2; }
if is_uint "$MAX_BYTES"; then MAX_BYTES_TOML=$MAX_BYTES; else MAX_BYTES_TOML="\"$MAX_BYTES\""; fi

# --- tools -------------------------------------------------------------------------------------
install_missing
precond_binary

# --- processes and cleanup ---------------------------------------------------------------------
scratch flood

# --- ports -------------------------------------------------------------------------------------
read -r P_ORIGIN P_PRECOND P_METRICS <<<"$(free_ports 3)"
check_free "$P_ORIGIN" "$P_PRECOND" "$P_METRICS"

# --- origin: nginx, 200 {} with ETag "v1" for any path -----------------------------------------
mkdir -p "$tmp/origin" "$tmp/precond" "$tmp/done"
cat >"$tmp/origin/origin.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $tmp/origin/nginx.pid;
error_log $tmp/origin/error.log warn;
events { worker_connections 1024; }
http {
$(temp_paths "$tmp/origin")
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    # the long-key scenario's request lines are LONG_KEY_LEN bytes long
    large_client_header_buffers 4 $(((LONG_KEY_LEN + 4096) / 1024 + 1))k;
    default_type application/json;
    server {
        listen 127.0.0.1:$P_ORIGIN;
        location / {
            add_header ETag '"v1"' always;
            if (\$request_method = PUT) { return 204; }
            return 200 '{}';
        }
    }
}
EOF
"$NGINX" -t -q -p "$tmp/origin" -e "$tmp/origin/error.log" -c "$tmp/origin/origin.conf"

# --- precond: one guard route, the store bounded by max_bytes ----------------------------------
cat >"$tmp/precond/precond.toml" <<EOF
[server]
listen = ["127.0.0.1:$P_PRECOND"]
threads = 2
grace_period = "0s"
graceful_shutdown_timeout = "1s"

[admin]
listen = "127.0.0.1:$P_METRICS"

[store]
capacity = $CAPACITY
max_bytes = $MAX_BYTES_TOML
max_key_bytes = $MAX_KEY_BYTES
# ttl: the default (10m); each key is asked for once, so the size bound is what evicts.

[[upstream]]
name = "origin"
servers = ["127.0.0.1:$P_ORIGIN"]

[[route]]
path_prefix = "/"
upstream = "origin"
mode = "guard"
EOF
"$PRECOND" check --config "$tmp/precond/precond.toml" >/dev/null ||
  die "precond check refused $tmp/precond/precond.toml"

start origin TERM "$tmp/origin/stderr.log" "$NGINX" -p "$tmp/origin" -e "$tmp/origin/error.log" -c "$tmp/origin/origin.conf"
start precond INT "$tmp/precond/precond.log" env NO_COLOR=1 RUST_LOG="$PRECOND_LOG" \
  PRECOND_TAG_SECRET=precond-flood-benchmark-secret "$PRECOND" run --config "$tmp/precond/precond.toml"
URL="http://127.0.0.1:$P_PRECOND"
METRICS="http://127.0.0.1:$P_METRICS/metrics"
wait_ready origin "${PID[origin]}" "http://127.0.0.1:$P_ORIGIN/ready" "$tmp/origin/error.log"
wait_ready precond "${PID[precond]}" "$METRICS" "$tmp/precond/precond.log"
PRECOND_PID=${PID[precond]}

# sanity: precond forwards and learns a short key, forwards a long one without learning it
metric() { # NAME: its value now (0 when absent)
  curl -s --max-time 2 "$METRICS" | awk -v n="$1" '$1 == n { print $2; found = 1 } END { if (!found) print 0 }'
}
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/sanity/short")
[ "$status" = 200 ] || die "GET /sanity/short through precond answered $status, not 200"
long_target="/sanity?pad=$(head -c "$LONG_KEY_LEN" /dev/zero | tr '\0' a)"
tl0=$(metric precond_key_too_long_total)
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL$long_target")
[ "$status" = 200 ] || die "GET of a $LONG_KEY_LEN-byte target through precond answered $status, not 200"
[ "$(metric precond_key_too_long_total)" -gt "$tl0" ] || die "precond did not count a $LONG_KEY_LEN-byte key as too long"
log "sanity: short and long keys forwarded (200), the long one counted as too long"

# --- sampler -----------------------------------------------------------------------------------
csv="$tmp/samples.csv"
phase() { echo "$1" >"$tmp/phase"; }
phase idle
start sampler TERM "$tmp/sampler.log" python3 "$here/sample.py" --pid "$PRECOND_PID" \
  --metrics "$METRICS" --csv "$csv" --phase-file "$tmp/phase" \
  --metric precond_store_bytes --metric precond_store_entries \
  --metric 'precond_store_evictions_total{cause="size"}' \
  --metric 'precond_store_evictions_total{cause="expired"}' \
  --metric precond_forwarded_total --metric precond_learned_total \
  --metric precond_key_too_long_total --metric precond_upstream_failures_total

# cpu_snapshot: "busy all precond" clock ticks (machine busy excludes idle and iowait)
cpu_snapshot() {
  local p
  p=$(sed 's/^.*) //' "/proc/$PRECOND_PID/stat" 2>/dev/null | awk '{ print $12 + $13 }') || p=0
  awk -v p="${p:-0}" '/^cpu / { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6, p }' /proc/stat
}

alive() { kill -0 "$PRECOND_PID" 2>/dev/null || { tail -n 20 "$tmp/precond/precond.log" >&2; die "precond exited"; }; }

log "idle: ${IDLE}s after start-up"
sleep "$IDLE"
alive

phase warmup
log "warm-up: wrk -t$THREADS -c$CONNECTIONS -d${WARMUP}s on one key"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$URL/warm" >"$tmp/wrk-warmup.txt" 2>&1 ||
  { cat "$tmp/wrk-warmup.txt" >&2; die "wrk warm-up failed"; }
phase warm-settle
sleep 2
alive

# --- the floods --------------------------------------------------------------------------------
summary="$tmp/summary.txt"
: >"$summary"
failures=()

# scenario NAME KEYS LEN: one flood; appends its figures to the summary
scenario() {
  local name=$1 keys=$2 len=$3 cap wrk_d out t0 t1 elapsed ndone wrk_pid requests non2xx sockerr c0 c1
  out="$tmp/wrk-$name.txt"
  rm -f "$tmp/done/"*
  if [ -n "$DURATION" ]; then
    # wrk's -d ends the run
    wrk_d=$(secs "$DURATION")
    cap=${MAX_TIME:-$((wrk_d + 30))}
    keys=0
  else
    # wrk's -d is only a safety cap: the run ends when every thread has had its share answered
    cap=${MAX_TIME:-$((120 + keys / 200))}
    wrk_d=$((cap + 5))
  fi
  phase "$name"
  log "$name: $( [ "$keys" = 0 ] && echo "distinct keys for $DURATION" || echo "$keys distinct keys"), $len bytes each, wrk -t$THREADS -c$CONNECTIONS (at most ${cap}s)"
  c0=$(cpu_snapshot)
  t0=$(date +%s.%N)
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${wrk_d}s" --timeout 10s -s "$here/flood.lua" "$URL" \
    -- "$name" "$keys" "$len" "$THREADS" "$tmp/done" >"$out" 2>&1 &
  wrk_pid=$!
  pids[$wrk_pid]=INT
  while kill -0 "$wrk_pid" 2>/dev/null; do
    if [ "$keys" != 0 ]; then
      ndone=$(find "$tmp/done" -name 'done.*' | wc -l)
      if [ "$ndone" -ge "$THREADS" ]; then break; fi
    fi
    if awk -v a="$t0" -v b="$(date +%s.%N)" -v c="$cap" 'BEGIN { exit !(b - a > c) }'; then
      failures+=("$name: not done within ${cap}s (MAX_TIME)")
      break
    fi
    kill -0 "$PRECOND_PID" 2>/dev/null || break
    sleep 0.2
  done
  t1=$(date +%s.%N)
  c1=$(cpu_snapshot)
  stop "$wrk_pid" INT
  unset "pids[$wrk_pid]"
  phase "$name-settle"
  alive
  elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  requests=$(awk '/requests in/ { print $1 }' "$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
  sockerr=$(awk -F'[ ,]+' '/Socket errors:/ { print $5 + $7 + $9 + $11 }' "$out")
  if [ -z "$requests" ]; then
    cat "$out" >&2
    die "cannot parse wrk output for $name"
  fi
  [ "$keys" != 0 ] || keys=$requests
  {
    echo "${name}_keys=$keys"
    echo "${name}_len=$len"
    echo "${name}_elapsed=$elapsed"
    echo "${name}_requests=$requests"
    echo "${name}_non2xx=${non2xx:-0}"
    echo "${name}_sockerr=${sockerr:-0}"
    # CPU during the flood: the machine's busy share, and precond's share of the machine's time
    awk -v x="$c0" -v y="$c1" -v n="$name" 'BEGIN {
      split(x, a, " "); split(y, b, " ")
      all = b[2] - a[2]
      printf "%s_machine_busy_pct=%.0f\n%s_precond_cpu_pct=%.0f\n", n, all ? 100 * (b[1] - a[1]) / all : 0,
        n, all ? 100 * (b[3] - a[3]) / all : 0 }'
  } >>"$summary"
  log "$name: $keys keys in ${elapsed}s ($(awk -v k="$keys" -v e="$elapsed" 'BEGIN { printf "%.0f", k / e }') keys/s), $requests requests, ${non2xx:-0} non-2xx, ${sockerr:-0} socket errors"
  sleep "$SETTLE"
  alive
}

scenario short "$KEYS" "$KEY_LEN"
scenario long "$LONG_KEYS" "$LONG_KEY_LEN"
phase end
sleep 1
stop "${PID[sampler]}" TERM
forget sampler

# --- report ------------------------------------------------------------------------------------
precond_warnings=$(grep -c -E 'WARN|ERROR' "$tmp/precond/precond.log" || true)
if [ "$precond_warnings" != 0 ]; then
  echo "precond logged $precond_warnings warnings or errors, e.g.:" >&2
  awk '/WARN|ERROR/ && n++ < 10' "$tmp/precond/precond.log" >&2
fi
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "${PRECOND_BIN:-}" ]; then
  commit="binary $PRECOND_BIN (PRECOND_BIN; HEAD is $commit)"
elif [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  commit="$commit + uncommitted changes in src/"
fi
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine=$(nproc) cores, ${cpu:-unknown CPU}, $(free -g | awk '/^Mem:/ { print $2 " GiB" }'), Linux $(uname -r)"
  echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nginx=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
  echo "wrk=$(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }')"
  echo "precond=$commit"
  echo "smoke=$SMOKE"
  echo "max_bytes=$MAX_BYTES_N"
  echo "max_bytes_text=$MAX_BYTES"
  echo "max_key_bytes=$MAX_KEY_BYTES"
  echo "capacity=$CAPACITY"
  echo "connections=$CONNECTIONS"
  echo "threads=$THREADS"
  echo "duration=$DURATION"
  echo "rss_allowance_kib=$RSS_ALLOWANCE"
  echo "precond_log_warnings=$precond_warnings"
} >>"$summary"

out=${RESULTS_DIR:-}
if [ -z "$out" ]; then
  if [ "$SMOKE" = 1 ]; then out="$tmp/results"; else out=$here; fi
fi
mkdir -p "$out"
cp "$csv" "$out/samples.csv"
report_rc=0
python3 "$here/report.py" "$out/samples.csv" "$summary" "$out/results.md" "$out/flood.svg" \
  "$tmp/report-failures.txt" || report_rc=$?
[ "$report_rc" = 0 ] || die "report.py failed (exit $report_rc)"
python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$out/flood.svg"
echo "Wrote $out/results.md, $out/samples.csv and $out/flood.svg"
while IFS= read -r f; do failures+=("$f"); done <"$tmp/report-failures.txt"

if [ ${#failures[@]} -gt 0 ]; then
  for f in "${failures[@]}"; do echo "FAIL: $f"; done
  if [ "$SMOKE" = 1 ] && [ -z "${RESULTS_DIR:-}" ]; then KEEP_TMP=1; fi
  exit 1
fi
if [ "$SMOKE" = 1 ] && [ -z "${RESULTS_DIR:-}" ]; then KEEP_TMP=1; fi
echo "OK: final RSS within max_bytes + the measured overhead in both scenarios; store bytes within max_bytes; every request answered 2xx; keys above max_key_bytes never learned"
