#!/usr/bin/env bash
# End-to-end load benchmark: precond (`pass`, `guard`, and `guard` with its in-flight write fence
# off) beside nginx `proxy_pass` and a bare Pingora proxy (examples/bare_pingora.rs: what Pingora
# costs before precond adds anything), all in front of the same nginx static origin, driven by wrk
# over keep-alive connections; then the lost-update probe (benches/load/probe.py) through precond
# in front of the bundled demo origin (`precond origin`).
#
#   bash benches/load/run.sh          # DURATION=10s CONNECTIONS=32 THREADS=1 WARMUP=1s
#
# Targets: nginx (proxy_pass), bare (bare Pingora, when built), pass (precond pass), guard
# (precond guard, GUARD_POLICY, fence on: the default fence_wait), nofence (precond guard, same
# policy, fence_wait = "0s": the fence off, to measure what the fence costs in the same run).
#
# Workloads, each run against every proxy:
#   get        GET /items/1 (forwarded by all)
#   put-match  PUT /items/1 with If-Match: "v1", the current tag (forwarded by all; under guard
#              every write names one tag of one resource: the fence lets them through once the
#              first answer shows "v1" current again)
#   put-stale  PUT /items/1 with If-Match: "v0", a tag the guard saw replaced: precond guard (fence
#              on or off) answers 412 at the edge and the origin must see 0 requests (checked: FAIL
#              and a non-zero exit otherwise); the other proxies forward it (the origin ignores
#              If-Match and answers 204: that is the lost update precond prevents).
#   put-many   PUT /items/<i> with If-Match: "v1", i cycling over 1000 distinct resources
#              (forwarded by all): the fence's cost on writes that never share a resource, read
#              as guard vs nofence.
#
# The guard (and nofence) learns "v0" replaced from two GETs before each of its runs (the origin
# shows "v0" to a request carrying X-Bench-ETag: v0, then "v1"), so the stale PUT is refused under
# the default `superseded` policy (proof: a tag seen replaced); GUARD_POLICY=mismatch refuses it
# because "v0" is not the known current tag. The origin's PUT answer carries ETag "v1", so "v1"
# stays current and put-match keeps being forwarded.
#
# Lost-update probe (PROBE=1, the default; independent of DURATION, about 10-30 s in all): 8
# clients x 30 read-modify-write updates of one resource (GET {"n": k} and its ETag, PUT
# {"n": k+1} with If-Match: that ETag; a 412 is retried from a fresh GET), lost = 240 - final n.
# Rows: guard superseded and guard mismatch in front of strong tags, guard superseded in front of
# weak tags, the same with the fence off (fence_wait = "0s": the "before" figures), guard mismatch
# in front of weak tags (bounded: every weak If-Match is refused weak_only, each client stops at
# its first such 412), enforce in front of an origin without tags, and the strong origin directly.
# Each proxy row runs a fresh precond in front of `precond origin --tags strong|weak|none`.
# FAIL (non-zero exit) when guard superseded with the fence on loses more than 2 of 240 (strong or
# weak tags), when enforce loses any, or when a probe run breaks.
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
# superseded; the guard and nofence targets of the load runs, not the probe), PRECOND_LOG
# (RUST_LOG of the precond processes; default warn), PRECOND_BIN (run this precond binary instead
# of building target/release/precond; BARE_BIN: the bare Pingora one, skipped when unset;
# BARE_PINGORA=0: do not build or run the bare Pingora target), PROBE
# (1; 0 skips the lost-update probe), KEEP_TMP=1 (keep configs and logs; always kept after a
# failure). RESULTS_DIR (where results.md and results.svg go; default benches/load, the published
# ones). Writes results.md and results.svg. Needs root only to install nginx and wrk when they are
# missing (apt-get).
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-1s}
GUARD_POLICY=${GUARD_POLICY:-superseded}
PRECOND_LOG=${PRECOND_LOG:-warn}
PROBE=${PROBE:-1}

case "$GUARD_POLICY" in
  superseded | mismatch) ;;
  *) echo "GUARD_POLICY must be superseded or mismatch, not '$GUARD_POLICY'" >&2; exit 2 ;;
esac
case "$PROBE" in
  0 | 1) ;;
  *) echo "PROBE must be 0 or 1, not '$PROBE'" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
# shellcheck source=benches/lib.sh
source benches/lib.sh


# --- tools -------------------------------------------------------------------------------------
install_missing

if [ -n "${PRECOND_BIN:-}" ]; then
  PRECOND=$(cd "$(dirname "$PRECOND_BIN")" && pwd)/$(basename "$PRECOND_BIN")
  [ -x "$PRECOND" ] || die "PRECOND_BIN=$PRECOND_BIN is not an executable"
  log "using $PRECOND (PRECOND_BIN; not building)"
  BARE=${BARE_BIN:-}
else
  # examples/bare_pingora.rs: the smallest Pingora proxy, to tell what Pingora itself costs from
  # what precond adds (the target is skipped in trees that do not have it).
  build=(cargo build --release --locked)
  # BARE_PINGORA=0 skips it (the CI smoke: building an example also builds the dev-dependencies
  # in release).
  want_bare=${BARE_PINGORA:-1}
  [ ! -f examples/bare_pingora.rs ] || [ "$want_bare" = 0 ] || build+=(--bins --example bare_pingora)
  log "building precond (${build[*]})"
  if [ -x scripts/setup ]; then scripts/setup; fi
  "${build[@]}"
  # Where cargo put them (CARGO_TARGET_DIR or the workspace's target/).
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  PRECOND="$target_dir/release/precond"
  BARE=""
  [ ! -f examples/bare_pingora.rs ] || [ "$want_bare" = 0 ] || BARE="$target_dir/release/examples/bare_pingora"
fi
[ -z "$BARE" ] || [ -x "$BARE" ] || die "$BARE is not an executable"

# --- processes and cleanup ---------------------------------------------------------------------
scratch load

# --- ports -------------------------------------------------------------------------------------
read -r P_ORIGIN P_NGINX P_BARE P_PASS P_GUARD P_NOFENCE M_PASS M_GUARD M_NOFENCE <<<"$(free_ports 9)"
check_free "$P_ORIGIN" "$P_NGINX" "$P_BARE" "$P_PASS" "$P_GUARD" "$P_NOFENCE" "$M_PASS" "$M_GUARD" "$M_NOFENCE"

# --- origin: nginx static, ETag "v1" on GET and PUT, PUT answered 204 -------------------------
mkdir -p "$tmp/origin/www/items" "$tmp/proxy"
printf '{"id":1,"name":"widget","description":"a widget used by the precond load benchmark","price":{"amount":1999,"currency":"EUR"},"stock":10,"tags":["bench","static"],"updated":"2026-11-21T00:00:00Z"}\n' \
  >"$tmp/origin/www/items/1"
chmod -R a+rX "$tmp/origin/www"


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
        # The burst row's resource: every PUT is answered with a new tag (as an origin whose
        # tags change with each version), GET shows "v1"; "X-Bench-Fail: 1" gets a 503.
        location /burst/ {
            if (\$http_x_bench_fail) { return 503; }
            if (\$request_method = PUT) {
                add_header ETag '"\$request_id"' always;
                return 204;
            }
            add_header ETag '"v1"' always;
            return 200 '{}';
        }
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

# --- precond pass, guard and nofence (guard, fence off) ------------------------------------------
precond_conf() { # NAME PORT METRICS_PORT MODE_LINES [UPSTREAM: host:port, default the nginx origin]
  mkdir -p "$tmp/$1"
  cat >"$tmp/$1/$1.toml" <<EOF
[server]
listen = ["127.0.0.1:$2"]
threads = 2
grace_period = "0s"
graceful_shutdown_timeout = "1s"

[admin]
listen = "127.0.0.1:$3"

# store: defaults (capacity 100000, ttl 10m); the load runs use one resource, 1000 for put-many.

[[upstream]]
name = "origin"
servers = ["${5:-127.0.0.1:$P_ORIGIN}"]

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
precond_conf nofence "$P_NOFENCE" "$M_NOFENCE" "mode = \"guard\"
policy = \"$GUARD_POLICY\"
fence_wait = \"0s\""


"$NGINX" -t -q -p "$tmp/origin" -e "$tmp/origin/error.log" -c "$tmp/origin/origin.conf"
"$NGINX" -t -q -p "$tmp/proxy" -e "$tmp/proxy/error.log" -c "$tmp/proxy/proxy.conf"
start origin TERM "$tmp/origin/stderr.log" "$NGINX" -p "$tmp/origin" -e "$tmp/origin/error.log" -c "$tmp/origin/origin.conf"
start nginx TERM "$tmp/proxy/stderr.log" "$NGINX" -p "$tmp/proxy" -e "$tmp/proxy/error.log" -c "$tmp/proxy/proxy.conf"
# Every precond process gets one fixed deployment secret (keys synthesised tags and principal
# hashes): without one each generates its own and logs a warning, which the log check below would
# report as something other than client disconnects.
PRECOND_ENV=(env NO_COLOR=1 RUST_LOG="$PRECOND_LOG" PRECOND_TAG_SECRET=precond-load-benchmark-secret)
start pass INT "$tmp/pass/precond.log" "${PRECOND_ENV[@]}" "$PRECOND" run --config "$tmp/pass/pass.toml"
start guard INT "$tmp/guard/precond.log" "${PRECOND_ENV[@]}" "$PRECOND" run --config "$tmp/guard/guard.toml"
start nofence INT "$tmp/nofence/precond.log" "${PRECOND_ENV[@]}" "$PRECOND" run --config "$tmp/nofence/nofence.toml"
if [ -n "$BARE" ]; then
  mkdir -p "$tmp/bare"
  start bare INT "$tmp/bare/bare.log" "$BARE" "127.0.0.1:$P_BARE" "127.0.0.1:$P_ORIGIN" 2
fi

wait_ready origin "${PID[origin]}" "http://127.0.0.1:$P_ORIGIN/items/1" "$tmp/origin/error.log"
wait_ready "nginx proxy" "${PID[nginx]}" "http://127.0.0.1:$P_NGINX/items/1" "$tmp/proxy/error.log"
wait_ready "precond pass" "${PID[pass]}" "http://127.0.0.1:$P_PASS/items/1" "$tmp/pass/precond.log"
wait_ready "precond guard" "${PID[guard]}" "http://127.0.0.1:$P_GUARD/items/1" "$tmp/guard/precond.log"
wait_ready "precond guard (fence off)" "${PID[nofence]}" "http://127.0.0.1:$P_NOFENCE/items/1" "$tmp/nofence/precond.log"
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
  [bare]="${PID[bare]:-}" [pass]="${PID[pass]}" [guard]="${PID[guard]}" [nofence]="${PID[nofence]}")
# The processes of a snapshot, in its column order (after "busy all"; "children" follows them):
# the columns are positional, the awk in the load loop finds a target's column from this list.
CPU_NAMES=(origin nginx bare pass guard nofence)

jiffies() { # PID...: user+system clock ticks used so far
  local p sum=0 t
  for p in "$@"; do
    # fields after "pid (comm) ": state is 1, utime 12, stime 13
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || t=0
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}

# cpu_snapshot: sets SNAP to "busy all origin nginx bare pass guard nofence children" (one field
# per CPU_NAMES entry between "all" and "children"; clock ticks; busy excludes idle and iowait, all
# includes them; children: this shell's finished children, i.e. wrk, from `times`: call it in this
# shell, not in $(...))
cpu_snapshot() {
  local name out=()
  out+=("$(awk '/^cpu / { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat)")
  # shellcheck disable=SC2086 # word splitting of the pid lists is intended
  for name in "${CPU_NAMES[@]}"; do out+=("$(jiffies ${CPU_PIDS[$name]})"); done
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
  [pass]="http://127.0.0.1:$P_PASS" [guard]="http://127.0.0.1:$P_GUARD"
  [nofence]="http://127.0.0.1:$P_NOFENCE")
declare -A LABEL=([nginx]="nginx proxy_pass" [bare]="bare Pingora" [pass]="precond pass"
  [guard]="precond guard ($GUARD_POLICY)" [nofence]="precond guard ($GUARD_POLICY, fence off)")
TARGETS=(nginx pass guard nofence)
[ -z "$BARE" ] || TARGETS=(nginx bare pass guard nofence)
WORKLOADS=(get put-match put-stale put-many)
# The targets that are precond guard (the fence on or off): taught before each run, and their
# put-stale must be refused at the edge.
is_guard() { [ "$1" = guard ] || [ "$1" = nofence ]; }

# request BASE WORKLOAD [curl args...]: one request as the workload sends it; prints
# "STATUS ETAG PRECOND-DECISION" (- for an absent header)
request() {
  local base=$1 w=$2 out path=/items/1
  shift 2
  local args=(-s -o /dev/null -D - --max-time 5 "$@")
  case "$w" in
    get) ;;
    put-match) args+=(-X PUT -H 'If-Match: "v1"' -H 'Content-Type: application/json' --data-binary "$BODY") ;;
    put-stale) args+=(-X PUT -H 'If-Match: "v0"' -H 'Content-Type: application/json' --data-binary "$BODY") ;;
    # one of put-many's resources, as put-many writes it
    put-many)
      path=/items/2
      args+=(-X PUT -H 'If-Match: "v1"' -H 'Content-Type: application/json' --data-binary "$BODY")
      ;;
  esac
  out=$(curl "${args[@]}" "$base$path" | tr -d '\r')
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

# Teach a guard (TARGET: guard or nofence) that "v0" was replaced by "v1": a GET that shows "v0"
# current, then one that shows "v1" (under `mismatch`, the second alone would do: "v1" known
# current). Repeated before every guard run, because concurrent forwarded writes make the current
# tag unknown.
teach_guard() {
  request "${URL[$1]}" get -H 'X-Bench-ETag: v0' >/dev/null
  request "${URL[$1]}" get >/dev/null
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
for t in guard nofence; do
  teach_guard "$t"
  expect "$t PUT If-Match \"v1\" (forwarded)" '204 "v1"' "$(request "${URL[$t]}" put-match)"
  expect "$t PUT If-Match \"v0\" (refused at the edge)" '412 "v1" rejected;precondition=If-Match' \
    "$(request "${URL[$t]}" put-stale)"
  expect "$t PUT /items/2 If-Match \"v1\" (put-many: forwarded)" '204 "v1"' "$(request "${URL[$t]}" put-many)"
done
expect "pass PUT If-Match \"v0\" (forwarded)" '204 "v1"' "$(request "${URL[pass]}" put-stale)"
expect "pass PUT /items/2 If-Match \"v1\" (put-many: forwarded)" '204 "v1"' "$(request "${URL[pass]}" put-many)"

# --- load --------------------------------------------------------------------------------------
cat >"$tmp/put-match.lua" <<EOF
wrk.method = "PUT"
wrk.headers["If-Match"] = '"v1"'
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$BODY'
EOF
sed 's/"v1"/"v0"/' "$tmp/put-match.lua" >"$tmp/put-stale.lua"
# put-many: If-Match "v1" to /items/1 .. /items/1000 in turn (the requests are formatted once, in
# init; each wrk thread cycles through them on its own)
cat >"$tmp/put-many.lua" <<EOF
local reqs, i = {}, 0
function init(args)
  local headers = { ["If-Match"] = '"v1"', ["Content-Type"] = "application/json" }
  for k = 1, 1000 do
    reqs[k] = wrk.format("PUT", "/items/" .. k, headers, '$BODY')
  end
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
EOF

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
    if is_guard "$t"; then teach_guard "$t"; fi
    probe=$(request "${URL[$t]}" "$w")
    expected=${probe%% *}
    if is_guard "$t" && [ "$w" = put-stale ] && [ "$expected" != 412 ]; then
      failures+=("$t put-stale: the probe request got '$probe', not an edge 412")
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

    # Snapshot fields: 1 busy, 2 all, then one per CPU_NAMES entry (3..), then children (last).
    col=$(( $(printf '%s\n' "${CPU_NAMES[@]}" | grep -n -x "$t" | cut -d: -f1) + 2 ))
    read -r proxy_us other_pct < <(awk -v c="$col" -v hz="$CLK_TCK" -v n="$requests" \
      -v x="$cpu0" -v y="$cpu1" 'BEGIN {
        k = split(x, a, " "); split(y, b, " ")
        for (i = 1; i <= k; i++) d[i] = b[i] - a[i]
        ours = 0; for (i = 3; i <= k; i++) ours += d[i]
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
    if is_guard "$t" && [ "$w" = put-stale ] && [ "$origin" != 0 ]; then
      failures+=("$t put-stale: the origin received $origin requests (must be 0: stale writes must be refused at the edge)")
    fi
    if ! is_guard "$t" || [ "$w" != put-stale ]; then
      [[ "$expected" == 2?? ]] || failures+=("$t $w: forwarded request answered $expected")
    fi
    printf '   %-37s %-9s %9s req/s  p50 %6s ms  p99 %6s ms  %5s us CPU/req  origin %7s  %s  (other CPU %s%%)\n' \
      "${LABEL[$t]}" "$w" "$rps" "$p50" "$p99" "$proxy_us" "$origin" "$status" "$other_pct" >&2
    # (labels hold commas: quoted)
    echo "$t,\"${LABEL[$t]}\",$w,$rps,$p50,$p99,$requests,$non2xx,$sockerr,$origin,\"$status\",$expected,$proxy_us,$other_pct" >>"$csv"
  done
done

# --- convergence: a stale stream right after a write burst (guard, policy = "mismatch") ---------
# The resource /burst/1 of an origin that answers every PUT with a new tag (and never checks
# If-Match). A burst of writes from CONNECTIONS clients (put-match, cut off mid-flight: wrk killed
# after BURST seconds) and then a write the origin answers 503 leave the resource's current tag
# unknown to the guard. A stale stream (put-stale, If-Match: "v0") starts right after and runs
# DURATION. While the state is unknown, one conditional write at a time goes to the origin
# (single-flight, `uncertain_wait`); its answer re-teaches the current tag, and every later stale
# write is refused at the edge (the in-flight fence also holds writes naming the tag of a write in
# flight). With both off (BURST_GATES=off: uncertain_wait and fence_wait "0s", the "before") each
# forwarded write's answer overlaps others and the state stays unknown: the stream keeps reaching
# the origin. Counted: the requests that reached the origin during the stale stream.
# FAIL when they exceed CONNECTIONS (the most writes the burst can have left in flight, one per
# connection), unless BURST_GATES=off. A fresh precond guard (mismatch) runs it.
BURST=${BURST:-1}
read -r P_BURST M_BURST <<<"$(free_ports 2)"
check_free "$P_BURST" "$M_BURST"
BURST_GATES=${BURST_GATES:-on}
case "$BURST_GATES" in
  on) gates="" ;;
  off) gates=$'\nuncertain_wait = "0s"\nfence_wait = "0s"' ;;
  *) die "BURST_GATES must be on or off, not '$BURST_GATES'" ;;
esac
precond_conf burst "$P_BURST" "$M_BURST" "mode = \"guard\"
policy = \"mismatch\"$gates"
start burst INT "$tmp/burst/precond.log" "${PRECOND_ENV[@]}" "$PRECOND" run --config "$tmp/burst/burst.toml"
wait_ready "precond guard (burst)" "${PID[burst]}" "http://127.0.0.1:$P_BURST/burst/1" "$tmp/burst/precond.log"
URL[burst]="http://127.0.0.1:$P_BURST"
curl -s -o /dev/null --max-time 5 "${URL[burst]}/burst/1"
timeout -s KILL "$BURST" wrk -t"$THREADS" -c"$CONNECTIONS" -d60s -s "$tmp/put-match.lua" \
  "${URL[burst]}/burst/1" >/dev/null 2>&1 || true
curl -s -o /dev/null --max-time 5 -X PUT -H 'X-Bench-Fail: 1' "${URL[burst]}/burst/1"
burst_before=$(origin_count)
out="$tmp/wrk-burst-put-stale.txt"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$tmp/put-stale.lua" "${URL[burst]}/burst/1" >"$out" 2>&1
sleep 0.3
burst_origin=$(($(origin_count) - burst_before))
burst_requests=$(awk '/requests in/ { print $1 }' "$out")
burst_refused=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
burst_refused=${burst_refused:-0}
burst_rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
[ -n "$burst_requests" ] || { cat "$out" >&2; die "cannot parse wrk output for the burst row"; }
log "after a ${BURST}s burst: $burst_requests stale writes, $burst_refused refused at the edge, $burst_origin reached the origin (single-flight and fence: $BURST_GATES)"
if [ "$BURST_GATES" = on ] && [ "$burst_origin" -gt "$CONNECTIONS" ]; then
  failures+=("put-stale after a burst (mismatch): $burst_origin requests reached the origin (at most $CONNECTIONS, the writes the burst can leave in flight)")
fi
stop "${PID[burst]}" INT
forget burst

# --- lost-update probe ------------------------------------------------------------------------
# 8 clients x 30 read-modify-write updates of one resource (benches/load/probe.py) per row: a
# fresh precond in front of the bundled demo origin (`precond origin`, one per kind of tags, each
# row on its own resource), or the strong origin directly. Independent of DURATION.
probe_csv="$tmp/probe.csv"
if [ "$PROBE" = 1 ]; then
  log "lost-update probe: 8 clients x 30 read-modify-write updates of one resource (lost = 240 - final n)"
  read -r PO_STRONG PO_WEAK PO_NONE <<<"$(free_ports 3)"
  check_free "$PO_STRONG" "$PO_WEAK" "$PO_NONE"
  declare -A PROBE_ORIGIN=([strong]=$PO_STRONG [weak]=$PO_WEAK [none]=$PO_NONE)
  for tags in strong weak none; do
    mkdir -p "$tmp/probe-origin-$tags"
    start "probe-origin-$tags" TERM "$tmp/probe-origin-$tags/origin.log" \
      "$PRECOND" origin --listen "127.0.0.1:${PROBE_ORIGIN[$tags]}" --tags "$tags"
  done
  for tags in strong weak none; do
    wait_ready "demo origin ($tags tags)" "${PID[probe-origin-$tags]}" \
      "http://127.0.0.1:${PROBE_ORIGIN[$tags]}/items/1" "$tmp/probe-origin-$tags/origin.log"
  done

  # probe_row ID LABEL TAGS MODE_LINES [probe.py args...]: one row (MODE_LINES empty: no proxy,
  # the origin directly); sets PROBE_JSON to probe.py's result, "" when it printed none.
  probe_row() {
    local id=$1 label=$2 tags=$3 mode=$4 url port mport rc=0 m=() pid="" kind=none
    shift 4
    case "$mode" in
      *'"guard"'*) kind=guard ;;
      *'"enforce"'*) kind=enforce ;;
    esac
    if [ -n "$mode" ]; then
      read -r port mport <<<"$(free_ports 2)"
      check_free "$port" "$mport"
      precond_conf "probe-$id" "$port" "$mport" "$mode" "127.0.0.1:${PROBE_ORIGIN[$tags]}"
      start "probe-$id" INT "$tmp/probe-$id/precond.log" \
        "${PRECOND_ENV[@]}" "$PRECOND" run --config "$tmp/probe-$id/probe-$id.toml"
      pid=${PID[probe-$id]}
      wait_ready "precond ($label)" "$pid" "http://127.0.0.1:$port/items/1" "$tmp/probe-$id/precond.log"
      url="http://127.0.0.1:$port"
      m=(--metrics "http://127.0.0.1:$mport/metrics")
    else
      url="http://127.0.0.1:${PROBE_ORIGIN[$tags]}"
    fi
    python3 "$here/probe.py" --url "$url" --path "/probe/$id" --deadline 30 "${m[@]}" "$@" \
      --csv "$probe_csv" --set "row=$id" --set "label=$label" --set "tags=$tags" --set "mode=$kind" \
      >"$tmp/probe-$id.json" 2>"$tmp/probe-$id.err" || rc=$?
    if [ -n "$pid" ]; then
      stop "$pid" INT
      unset "pids[$pid]"
    fi
    PROBE_JSON=$(cat "$tmp/probe-$id.json")
    if [ "$rc" != 0 ] || [ -z "$PROBE_JSON" ]; then
      cat "$tmp/probe-$id.err" >&2
      failures+=("probe $id ($label, $tags tags): the run broke: ${PROBE_JSON:-no result} (see $tmp/probe-$id.err)")
    fi
    # One line: what the clients saw, and precond's own counters when it ran.
    python3 -c '
import json, sys
r = json.loads(sys.argv[3] or "{}")
label, tags, guard = sys.argv[1], sys.argv[2], sys.argv[4] == "guard"
total = r.get("clients", 8) * r.get("updates", 30)
reasons = r.get("reasons", {})
if r.get("stopped"):
    if r.get("applied") == 0 and set(reasons) == set(["weak_only"]):
        what = "%d applied, every write refused weak_only (%d clients stopped at it)" % (r["applied"], r["stopped"])
    else:
        what = "%s applied, %s clients stopped on %s" % (r.get("applied"), r["stopped"], reasons)
else:
    what = "lost %3s / %d" % (r.get("lost", "?"), total)
fence = ""
if guard and "fence_waits" in r:
    fence = "  fence %s waited, %s refused after waiting, %s bypassed" % (
        r["fence_waits"], r["fence_refused"], r["fence_bypassed"])
print("   %-37s %-6s %-30s  412s %5s  origin writes %4s  %6.2f s%s" % (
    label, tags, what, r.get("refused_412", "?"), r.get("origin_writes", "?"),
    r.get("wall_s", float("nan")), fence), file=sys.stderr)
# precond counts what the clients saw: its edge 412s and forwarded conditional writes
if guard and "edge_412" in r and (r["edge_412"] != r.get("refused_412") or
                        r["forwarded_writes"] != r.get("origin_writes")):
    print("   note: precond counted %s edge 412s and %s forwarded conditional writes; the clients saw %s 412s and %s origin answers"
          % (r["edge_412"], r["forwarded_writes"], r.get("refused_412"), r.get("origin_writes")), file=sys.stderr)
' "$label" "$tags" "$PROBE_JSON" "$kind"
  }

  probe_lost() { # the lost count in PROBE_JSON ("" when unknown)
    python3 -c 'import json, sys; r = json.loads(sys.argv[1] or "{}"); print(r.get("lost", ""))' "$PROBE_JSON"
  }
  probe_gate() { # ID DESCRIPTION MAX-LOST: a failure when the row lost more than MAX-LOST
    local lost
    lost=$(probe_lost)
    if [ -n "$lost" ] && [ "$lost" -gt "$3" ]; then
      failures+=("probe $1: $2 lost $lost of 240 updates (at most $3 allowed)")
    fi
  }

  G='mode = "guard"'
  OFF='fence_wait = "0s"'
  probe_t0=$(date +%s.%N)
  probe_row guard-superseded-strong "precond guard (superseded)" strong "$G
policy = \"superseded\""
  probe_gate guard-superseded-strong "guard superseded (fence on), strong tags," 2
  probe_row guard-mismatch-strong "precond guard (mismatch)" strong "$G
policy = \"mismatch\""
  probe_row guard-superseded-weak "precond guard (superseded)" weak "$G
policy = \"superseded\""
  probe_gate guard-superseded-weak "guard superseded (fence on), weak tags," 2
  # Every weak If-Match is refused (weak_only): no write can succeed, so each client stops at its
  # first such 412 instead of retrying forever.
  probe_row guard-mismatch-weak "precond guard (mismatch)" weak "$G
policy = \"mismatch\"" --stop-on-reason weak_only
  probe_row nofence-superseded-strong "precond guard (superseded, fence off)" strong "$G
policy = \"superseded\"
$OFF"
  probe_row nofence-superseded-weak "precond guard (superseded, fence off)" weak "$G
policy = \"superseded\"
$OFF"
  probe_row enforce-none "precond enforce" none 'mode = "enforce"'
  probe_gate enforce-none "enforce, no tags," 0
  # Two callers (principals): the clients alternate two Authorization values, so each reads and
  # writes in its own partition of the resource; a write by one must still refuse the other's
  # stale write.
  probe_row guard-superseded-strong-2 "precond guard (superseded, 2 callers)" strong "$G
policy = \"superseded\"" --callers 2
  probe_row guard-mismatch-strong-2 "precond guard (mismatch, 2 callers)" strong "$G
policy = \"mismatch\"" --callers 2
  probe_row guard-superseded-weak-2 "precond guard (superseded, 2 callers)" weak "$G
policy = \"superseded\"" --callers 2
  probe_row enforce-none-2 "precond enforce (2 callers)" none 'mode = "enforce"' --callers 2
  probe_gate enforce-none-2 "enforce, no tags, 2 callers," 0
  probe_row direct-strong "no proxy (the origin directly)" strong ""
  probe_wall=$(awk -v a="$probe_t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  log "lost-update probe done in $probe_wall s"
  for tags in strong weak none; do
    stop "${PID[probe-origin-$tags]}" TERM
    unset "pids[${PID[probe-origin-$tags]}]"
  done
fi

# --- report ------------------------------------------------------------------------------------
declare -A METRICS_PORT=([pass]=$M_PASS [guard]=$M_GUARD [nofence]=$M_NOFENCE)
for t in pass guard nofence; do
  curl -s --max-time 2 "http://127.0.0.1:${METRICS_PORT[$t]}/metrics" >"$tmp/$t/metrics.txt" || true
done
upstream_failures=$(awk '/^precond_upstream_failures_total/ { s += $2 } END { print s + 0 }' \
  "$tmp/pass/metrics.txt" "$tmp/guard/metrics.txt" "$tmp/nofence/metrics.txt")
[ "$upstream_failures" = 0 ] || failures+=("precond counted $upstream_failures upstream failures (see precond_upstream_failures_total)")
# wrk closes its connections when its time is up, with requests in flight: precond logs each as
# an error (and, for a write, forgets the resource's current tag). Anything else is reported.
precond_logs=("$tmp/pass/precond.log" "$tmp/guard/precond.log" "$tmp/nofence/precond.log")
precond_warnings=$(cat "${precond_logs[@]}" | grep -c -E 'WARN|ERROR' || true)
precond_closed=$(cat "${precond_logs[@]}" | grep -E 'WARN|ERROR' \
  | grep -c 'Downstream ConnectionClosed' || true)
if [ "$precond_warnings" != "$precond_closed" ]; then
  echo "precond logged warnings or errors other than client disconnects:" >&2
  cat "${precond_logs[@]}" | grep -E 'WARN|ERROR' \
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
  echo "setup=origin: nginx static, 1 worker; nginx proxy: 2 workers, upstream keepalive 64, access_log off;$([ -z "$BARE" ] || echo " bare Pingora: 2 threads;") precond: 2 threads, RUST_LOG=$PRECOND_LOG, store defaults; guard policy: $GUARD_POLICY (fence: defaults; fence off: fence_wait = \"0s\")"
  [ "$PROBE" != 1 ] || echo "probe_wall=$probe_wall"
  echo "precond_log_warnings=$precond_warnings"
  echo "precond_log_closed=$precond_closed"
  echo "busy_before=$idle_busy"
  echo "burst=$BURST s of writes (wrk -c$CONNECTIONS, killed mid-flight) and one answered 503, then put-stale for $DURATION (single-flight and fence: $BURST_GATES): $burst_requests stale writes ($burst_rps req/s), $burst_refused refused at the edge, $burst_origin reached the origin (at most $CONNECTIONS allowed)"
} >"$tmp/machine.txt"

out=${RESULTS_DIR:-$here}
mkdir -p "$out"
report_args=("$csv" "$tmp/machine.txt" "$out/results.md" "$out/results.svg")
[ "$PROBE" != 1 ] || [ ! -s "$probe_csv" ] || report_args+=("$probe_csv")
python3 "$here/report.py" "${report_args[@]}"
python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$out/results.svg"
echo "Wrote $out/results.md and $out/results.svg"

if [ ${#failures[@]} -gt 0 ]; then
  for f in "${failures[@]}"; do echo "FAIL: $f"; done
  exit 1
fi
probe_ok=""
[ "$PROBE" != 1 ] || probe_ok="; lost-update probe: guard superseded (fence on) lost at most 2 of 240 with strong and weak tags, enforce none"
echo "OK: every forwarded request was answered 2xx; guard put-stale (fence on and off) was refused at the edge (0 origin requests)$probe_ok"
