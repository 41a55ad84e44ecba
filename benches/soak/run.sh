#!/usr/bin/env bash
# Soak: does precond stay flat (memory, file descriptors) and correct (no unexpected status) under
# a long mixed load through a guard route and an enforce route at once, badly behaved clients
# included? One precond (2 threads; routes /g guard and /e enforce, the store bounded by
# MAX_BYTES and TTL so that it fills up and evicts early in the run) in front of an nginx origin
# that keeps one current tag, "v1", for every item (and checks If-Match on PUT: "v1" or none
# succeeds with 204 once the whole body has arrived, any other 412) and answers PREFIX/new/...
# with 404 to GET and 201 to PUT.
#
#   bash benches/soak/run.sh              # DURATION=10m
#   DURATION=3m bash benches/soak/run.sh
#   SMOKE=1 bash benches/soak/run.sh      # CI smoke: 20s, the flatness check loosened (see below)
#
# Load, all at once for DURATION:
#   - wrk on the guard route and wrk on the enforce route (benches/soak/mix.lua; CONNECTIONS
#     connections each, one per wrk thread): reads, matching writes (GET, then PUT If-Match: "v1"),
#     stale writes (If-Match: "v0"), new resources (PUT If-None-Match: * to a new path),
#     unconditional writes; ITEMS shared resources per route;
#   - benches/soak/slow.py: TRICKLERS connections that trickle a PUT body (enforce and guard) or a
#     request head, and ABORTERS connections that hang up in the middle of a request (half a body,
#     half a head, or before reading the answer).
# What each kind of request may get (anything else is unexpected: FAIL):
#   guard:   reads 200; matching writes 200/204; stale writes 412; new resources 201; unconditional
#            writes 200/204
#   enforce: reads 200; matching writes 200/204; stale writes 412; new resources 201; unconditional
#            writes 428; 503 write-busy on a write that waited write_wait (5s) for the resource's
#            lock: expected under contention (a trickled upload holds the lock up to
#            write_body_timeout, 3s), counted and reported apart ("busy")
#   trickled requests: 2xx, 408, or the connection closed by precond; aborted ones: nothing
#   (the client hangs up).
#
# Sampled every second (benches/flood/sample.py) into samples.csv: precond's VmRSS, open fds,
# threads, precond_store_bytes and _entries, evictions, forwarded requests, edge 412/428, upstream
# failures, and the clients' cumulative counts by class (ok, expected refusals, busy, closed,
# unexpected); drawn in soak.svg. Checks (FAIL and a non-zero exit):
#   - flat: the mean RSS and the mean fd count of the last minute of the load are within FLAT_PCT
#     (5) % of those of the second minute (the first minute is the store filling up). SMOKE=1
#     (20s): the second half against the first half, within SMOKE_FLAT_PCT (25) %: a loose check,
#     that only catches a gross leak;
#   - zero unexpected statuses, zero wrk socket errors;
#   - precond_store_bytes <= max_bytes on every sample; precond still running at the end.
#
# Knobs (environment): SMOKE (0 | 1), DURATION (10m; smoke 20s; at least 2m unless SMOKE=1),
# CONNECTIONS (4 per route), ITEMS (100 per route), TRICKLERS (4), ABORTERS (2), MAX_BYTES
# ("16MiB"; smoke "1MiB", the least precond accepts: full within a second or two), TTL ("1m"),
# CAPACITY (100000), GUARD_POLICY (mismatch | superseded; default mismatch: stale writes are
# refused at the edge once the guard knows "v1" current), FLAT_PCT (5), SMOKE_FLAT_PCT (25),
# PRECOND_LOG (warn), PRECOND_BIN (run this binary instead of building target/release/precond),
# RESULTS_DIR (where results.md, samples.csv, counts.csv and soak.svg go; default benches/soak,
# the published ones; smoke runs default to a directory under /tmp, kept), KEEP_TMP=1. Needs root
# only to install nginx and wrk when they are missing (apt-get). Takes DURATION plus about 15 s
# (start-up, sanity checks, the trickles in progress at the end).
set -euo pipefail

SMOKE=${SMOKE:-0}
case "$SMOKE" in
  0 | 1) ;;
  *) echo "SMOKE must be 0 or 1, not '$SMOKE'" >&2; exit 2 ;;
esac
if [ "$SMOKE" = 1 ]; then
  DURATION=${DURATION:-20s}
  MAX_BYTES=${MAX_BYTES:-1MiB}
else
  DURATION=${DURATION:-10m}
  MAX_BYTES=${MAX_BYTES:-16MiB}
fi
CONNECTIONS=${CONNECTIONS:-4}
ITEMS=${ITEMS:-100}
TRICKLERS=${TRICKLERS:-4}
ABORTERS=${ABORTERS:-2}
TTL=${TTL:-1m}
CAPACITY=${CAPACITY:-100000}
GUARD_POLICY=${GUARD_POLICY:-mismatch}
FLAT_PCT=${FLAT_PCT:-5}
SMOKE_FLAT_PCT=${SMOKE_FLAT_PCT:-25}
PRECOND_LOG=${PRECOND_LOG:-warn}

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
flood=$root/benches/flood
cd "$root"
# shellcheck source=benches/lib.sh
source benches/lib.sh


for v in CONNECTIONS ITEMS TRICKLERS ABORTERS CAPACITY FLAT_PCT SMOKE_FLAT_PCT; do
  is_uint "${!v}" || { echo "$v must be a whole number, not '${!v}'" >&2; exit 2; }
done
[ "$CONNECTIONS" -ge 1 ] && [ "$ITEMS" -ge 1 ] || { echo "CONNECTIONS and ITEMS must be at least 1" >&2; exit 2; }
case "$GUARD_POLICY" in
  superseded | mismatch) ;;
  *) echo "GUARD_POLICY must be superseded or mismatch, not '$GUARD_POLICY'" >&2; exit 2 ;;
esac
[[ "$DURATION" =~ ^[0-9]+[smh]?$ ]] || { echo "DURATION must look like 20s, 10m or 1h, not '$DURATION'" >&2; exit 2; }
DURATION_S=$(secs "$DURATION")
if [ "$SMOKE" = 0 ] && [ "$DURATION_S" -lt 120 ]; then
  echo "DURATION must be at least 2m (the flatness check compares the second minute with the last; SMOKE=1 for short runs)" >&2
  exit 2
fi
[ "$DURATION_S" -ge 6 ] || { echo "DURATION must be at least 6s" >&2; exit 2; }
MAX_BYTES_N=$(size_bytes "$MAX_BYTES") || { echo "MAX_BYTES is not a size: '$MAX_BYTES'" >&2; exit 2; }
if is_uint "$MAX_BYTES"; then MAX_BYTES_TOML=$MAX_BYTES; else MAX_BYTES_TOML="\"$MAX_BYTES\""; fi

# --- tools -------------------------------------------------------------------------------------
install_missing
precond_binary

# --- processes and cleanup ---------------------------------------------------------------------
scratch soak

# --- ports -------------------------------------------------------------------------------------
read -r P_ORIGIN P_SINK P_PRECOND P_METRICS <<<"$(free_ports 4)"
check_free "$P_ORIGIN" "$P_SINK" "$P_PRECOND" "$P_METRICS"

# --- origin: nginx; items keep the tag "v1" (If-Match checked), new paths 404 to GET, 201 to PUT --
# A PUT that succeeds is proxied to a second nginx server (the sink) that answers 204: nginx's
# proxy reads the whole request body first, so a trickled upload is answered only once it has all
# arrived (a bare `return` would answer at once and drop the body).
mkdir -p "$tmp/origin" "$tmp/precond" "$tmp/counts"
cat >"$tmp/origin/origin.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $tmp/origin/nginx.pid;
error_log $tmp/origin/error.log warn;
events { worker_connections 4096; }
http {
$(temp_paths "$tmp/origin")
    log_format soak '\$server_port \$request_method \$uri \$status';
    access_log $tmp/origin/access.log soak buffer=64k flush=1s;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    default_type application/json;
    # PUT to an item: "v1" (current) or no If-Match succeeds (204, from the sink), any other tag
    # fails (412): an origin that checks If-Match itself, so a stale write is refused whoever
    # decides it.
    map "\$request_method:\$http_if_match" \$item_put {
        default      0;
        "PUT:"       204;
        'PUT:"v1"'   204;
        ~^PUT:       412;
    }
    map \$request_method \$new_etag {
        PUT     '"v1"';
        default '';
    }
    upstream sink {
        server 127.0.0.1:$P_SINK;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$P_ORIGIN;
        location ~ ^/[ge]/items/ {
            add_header ETag '"v1"' always;
            if (\$item_put = 412) { return 412; }
            if (\$request_method != PUT) { return 200 '{"name":"widget","stock":10}'; }
            proxy_pass http://sink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location ~ ^/[ge]/new/ {
            add_header ETag \$new_etag always;
            if (\$request_method = PUT) { return 201; }
            return 404;
        }
        location = /ready { return 200; }
    }
    server {
        listen 127.0.0.1:$P_SINK;
        access_log off;
        location / { return 204; }
    }
}
EOF
"$NGINX" -t -q -p "$tmp/origin" -e "$tmp/origin/error.log" -c "$tmp/origin/origin.conf"

# --- precond: /g guard, /e enforce ----------------------------------------------------------------
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
ttl = "$TTL"

[[upstream]]
name = "origin"
servers = ["127.0.0.1:$P_ORIGIN"]

[[route]]
path_prefix = "/g"
upstream = "origin"
mode = "guard"
policy = "$GUARD_POLICY"

[[route]]
path_prefix = "/e"
upstream = "origin"
mode = "enforce"
require = ["PUT", "PATCH", "DELETE"]
# write_wait (5s) and write_body_timeout (3s): the defaults
EOF
"$PRECOND" check --config "$tmp/precond/precond.toml" >/dev/null ||
  die "precond check refused $tmp/precond/precond.toml"

start origin TERM "$tmp/origin/stderr.log" "$NGINX" -p "$tmp/origin" -e "$tmp/origin/error.log" -c "$tmp/origin/origin.conf"
start precond INT "$tmp/precond/precond.log" env NO_COLOR=1 RUST_LOG="$PRECOND_LOG" \
  PRECOND_TAG_SECRET=precond-soak-benchmark-secret "$PRECOND" run --config "$tmp/precond/precond.toml"
URL="http://127.0.0.1:$P_PRECOND"
METRICS="http://127.0.0.1:$P_METRICS/metrics"
wait_ready origin "${PID[origin]}" "http://127.0.0.1:$P_ORIGIN/ready" "$tmp/origin/error.log"
wait_ready precond "${PID[precond]}" "$METRICS" "$tmp/precond/precond.log"
PRECOND_PID=${PID[precond]}

# --- sanity: one request of each kind on each route --------------------------------------------
BODY='{"name":"widget","stock":9}'
code() { # curl args...: the status
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"
}
expect() { # DESCRIPTION EXPECTED ACTUAL
  if [ "$3" = "$2" ]; then
    printf '   ok   %-56s %s\n' "$1" "$3" >&2
  else
    die "$1: expected $2, got $3"
  fi
}
PUT=(-X PUT -H 'Content-Type: application/json' --data-binary "$BODY")
log "sanity checks (status)"
for r in g e; do
  expect "/$r read" 200 "$(code "$URL/$r/items/1")"
  expect "/$r matching write (If-Match: \"v1\")" 204 "$(code "${PUT[@]}" -H 'If-Match: "v1"' "$URL/$r/items/1")"
  expect "/$r stale write (If-Match: \"v0\")" 412 "$(code "${PUT[@]}" -H 'If-Match: "v0"' "$URL/$r/items/1")"
  expect "/$r new resource (If-None-Match: *)" 201 "$(code "${PUT[@]}" -H 'If-None-Match: *' "$URL/$r/new/sanity")"
done
expect "/g unconditional write" 204 "$(code "${PUT[@]}" "$URL/g/items/1")"
expect "/e unconditional write (PUT required conditional)" 428 "$(code "${PUT[@]}" "$URL/e/items/1")"

# --- load ----------------------------------------------------------------------------------------
csv="$tmp/samples.csv"
echo load >"$tmp/phase"
start sampler TERM "$tmp/sampler.log" python3 "$flood/sample.py" --pid "$PRECOND_PID" \
  --metrics "$METRICS" --csv "$csv" --phase-file "$tmp/phase" --counts-dir "$tmp/counts" \
  --metric precond_store_bytes --metric precond_store_entries \
  --metric 'precond_store_evictions_total{cause="size"}' \
  --metric 'precond_store_evictions_total{cause="expired"}' \
  --metric precond_forwarded_total --metric sum:precond_rejected_total \
  --metric precond_required_total --metric precond_upstream_failures_total

log "soak: ${DURATION} of wrk -t$CONNECTIONS -c$CONNECTIONS on /g ($GUARD_POLICY) and on /e (enforce), $TRICKLERS trickling and $ABORTERS aborting clients; store max_bytes $MAX_BYTES, ttl $TTL"
for r in guard enforce; do
  start "wrk-$r" INT "$tmp/wrk-$r.txt" wrk -t"$CONNECTIONS" -c"$CONNECTIONS" -d"${DURATION_S}s" \
    --latency --timeout 15s -s "$here/mix.lua" "$URL" -- "$r" "/${r:0:1}" "$ITEMS" "$tmp/counts"
done
start slow TERM "$tmp/slow.log" python3 "$here/slow.py" --port "$P_PRECOND" --duration "$DURATION_S" \
  --counts "$tmp/counts/slow.counts" --tricklers "$TRICKLERS" --aborters "$ABORTERS" --items "$ITEMS"

t0=$(date +%s)
while :; do
  running=0
  for n in wrk-guard wrk-enforce slow; do
    if kill -0 "${PID[$n]}" 2>/dev/null; then running=1; fi
  done
  [ "$running" = 1 ] || break
  # once wrk is done, slow.py only finishes the trickles it started: not part of the load windows
  if ! kill -0 "${PID[wrk-guard]}" 2>/dev/null && ! kill -0 "${PID[wrk-enforce]}" 2>/dev/null; then
    echo drain >"$tmp/phase"
  fi
  kill -0 "$PRECOND_PID" 2>/dev/null || { tail -n 20 "$tmp/precond/precond.log" >&2; die "precond exited during the soak"; }
  if [ $(($(date +%s) - t0)) -gt $((DURATION_S + 60)) ]; then die "the load did not end within DURATION + 60 s"; fi
  sleep 1
done
for n in wrk-guard wrk-enforce slow; do
  wait "${PID[$n]}" || log "warning: $n exited with status $?"
  forget "$n"
done
echo after >"$tmp/phase"
sleep 3
kill -0 "$PRECOND_PID" 2>/dev/null || die "precond exited at the end of the soak"
curl -s --max-time 2 "$METRICS" >"$tmp/metrics.txt" || true
stop "${PID[sampler]}" TERM
forget sampler

# --- report --------------------------------------------------------------------------------------
# every client's final counts, one table (summed over wrk's threads)
{
  echo "kind,status,class,count"
  cat "$tmp/counts/"*.counts | awk '{ n[$1 "," $2 "," $3] += $4 } END { for (k in n) print k "," n[k] }' | sort
} >"$tmp/counts.csv"
# the first unexpected answers, if any
cat "$tmp/counts/"unexpected-*.txt 2>/dev/null | sort | head -n 40 >"$tmp/unexpected.txt" || true
if [ -s "$tmp/unexpected.txt" ]; then
  echo "unexpected answers (the first ones; time, request, status, body):" >&2
  head -n 10 "$tmp/unexpected.txt" >&2
fi

summary="$tmp/summary.txt"
: >"$summary"
for r in guard enforce; do
  out="$tmp/wrk-$r.txt"
  requests=$(awk '/requests in/ { print $1 }' "$out")
  [ -n "$requests" ] || { cat "$out" >&2; die "cannot parse wrk output for $r"; }
  {
    echo "wrk_${r}_requests=$requests"
    echo "wrk_${r}_rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    echo "wrk_${r}_sockerr=$(awk -F'[ ,]+' '/Socket errors:/ { print $5 + $7 + $9 + $11 }' "$out")"
    echo "wrk_${r}_sockerr_text=$(grep 'Socket errors:' "$out" | sed 's/^ *//')"
    echo "wrk_${r}_p99=$(awk '$1 == "99%" { print $2 }' "$out")"
    echo "wrk_${r}_max=$(awk '$1 == "Latency" { print $4 }' "$out")"
  } >>"$summary"
done
# precond's warnings and errors, grouped by message (client hang-ups and trickles produce some)
log_lines=$(grep -c -E 'WARN|ERROR' "$tmp/precond/precond.log" || true)
grep -E 'WARN|ERROR' "$tmp/precond/precond.log" |
  sed -E 's/^[^ ]+ +//; s/[0-9]+(\.[0-9]+)?(ms|s|µs)?/N/g' | cut -c1-160 | sort | uniq -c | sort -rn |
  head -n 12 >"$tmp/log-summary.txt" || true
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
  echo "duration=$DURATION"
  echo "duration_s=$DURATION_S"
  echo "connections=$CONNECTIONS"
  echo "items=$ITEMS"
  echo "tricklers=$TRICKLERS"
  echo "aborters=$ABORTERS"
  echo "max_bytes=$MAX_BYTES_N"
  echo "max_bytes_text=$MAX_BYTES"
  echo "ttl=$TTL"
  echo "capacity=$CAPACITY"
  echo "guard_policy=$GUARD_POLICY"
  echo "flat_pct=$FLAT_PCT"
  echo "smoke_flat_pct=$SMOKE_FLAT_PCT"
  echo "precond_log_lines=$log_lines"
  echo "origin_requests=$(wc -l <"$tmp/origin/access.log")"
  echo "origin_statuses=$(awk '{ n[$4]++ } END { for (s in n) printf "%s:%d ", s, n[s] }' "$tmp/origin/access.log")"
} >>"$summary"

out=${RESULTS_DIR:-}
if [ -z "$out" ]; then
  if [ "$SMOKE" = 1 ]; then out="$tmp/results"; else out=$here; fi
fi
mkdir -p "$out"
cp "$csv" "$out/samples.csv"
cp "$tmp/counts.csv" "$out/counts.csv"
failures=()
report_rc=0
python3 "$here/report.py" "$out/samples.csv" "$out/counts.csv" "$summary" "$tmp/log-summary.txt" "$tmp/unexpected.txt" \
  "$out/results.md" "$out/soak.svg" "$tmp/report-failures.txt" || report_rc=$?
[ "$report_rc" = 0 ] || die "report.py failed (exit $report_rc)"
python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$out/soak.svg"
echo "Wrote $out/results.md, $out/samples.csv, $out/counts.csv and $out/soak.svg"
while IFS= read -r f; do failures+=("$f"); done <"$tmp/report-failures.txt"
if [ "$SMOKE" = 1 ] && [ -z "${RESULTS_DIR:-}" ]; then KEEP_TMP=1; fi

if [ ${#failures[@]} -gt 0 ]; then
  for f in "${failures[@]}"; do echo "FAIL: $f"; done
  exit 1
fi
echo "OK: RSS and fds flat, no unexpected status, no socket error, store bytes within max_bytes"
