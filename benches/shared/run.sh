#!/usr/bin/env bash
# Shared-store benchmark: what `[store] backend = "redis"` costs enforce and guard routes, against
# the memory backend in the same run. Two precond enforce instances (one per backend, 2 threads each)
# in front of the bundled legacy origin (`precond origin --tags none`), a local redis-server
# (`--save "" --appendonly no`), wrk on loopback.
#
#   bash benches/shared/run.sh            # DURATION=10s
#   DURATION=2s bash benches/shared/run.sh   # a smoke run
#
# Rows, per backend:
#   put-match  one client (wrk -c1): PUT /items/1 with If-Match: its current (synthesised) tag and
#              the same body each time, so every write matches and is forwarded. Under the lease
#              (redis: acquire + publish, two round trips) or the local lock (memory), each write
#              probes the origin (a legacy origin's write answer carries no tag) and is forwarded:
#              its p50/p99 latency is the write's cost; redis minus memory is what the lease adds.
#   put-stale  32 clients (wrk -c32): PUT /items/1 with If-Match: "stale": refused at the edge.
#              memory: decided on the local store; redis: on the snapshot the previous holder
#              published, under the lease (two round trips per refusal, serialised per resource).
#   guard-forward  one client (wrk -c1): PUT /items/1 on a guard route (origin with strong tags)
#              with If-Unmodified-Since far in the future: judged (redis: one round trip for the
#              judgement, one to publish the answer), never refused, always forwarded.
#   guard-get      32 clients: GET /items/1 on the guard route: forwarded, learned, and (redis)
#              the answer's lesson published before it goes on (one round trip).
#   guard-stale    32 clients: PUT /items/1 on a guard route with If-Match: a tag replaced through
#              the instance (learned from its answer): refused at the edge. memory: the local
#              store's fast path; redis: confirmed against the shared facts (one round trip).
#   tier       forwarded GETs (wrk -c32) through HAProxy (`balance roundrobin`, the tier a balancer
#              without affinity makes) to one redis-backed instance, then to two (a second redis
#              instance is started for it): what a second instance adds on this machine.
# Checks (FAIL, non-zero exit): put-match, guard-forward and guard-get all 2xx, put-stale and guard-stale all 412 (the origin never answers
# 412: every one is precond's), no socket errors.
#
# Knobs: DURATION (10s), PRECOND_BIN, RESULTS_DIR (default benches/shared), KEEP_TMP=1. Needs
# redis-server and haproxy (scripts/setup installs them), wrk, curl, python3.
set -euo pipefail

DURATION=${DURATION:-10s}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$here}
cd "$root"
# shellcheck source=benches/lib.sh
source benches/lib.sh

install_missing
command -v redis-server >/dev/null 2>&1 || die "redis-server is missing: run scripts/setup"
precond_binary

scratch shared

read -r P_REDIS P_ORIGIN P_MEM P_RED P_RED2 P_LB1 P_LB2 P_ORIGIN_S P_GMEM P_GRED <<<"$(free_ports 10)"
check_free "$P_REDIS" "$P_ORIGIN" "$P_MEM" "$P_RED" "$P_RED2" "$P_LB1" "$P_LB2" "$P_ORIGIN_S" "$P_GMEM" "$P_GRED"
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$HAPROXY" ] || die "haproxy is missing: run scripts/setup"

start redis-server TERM "$tmp/redis-server.log" redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no
start origin INT "$tmp/origin.log" "$PRECOND" origin --listen "127.0.0.1:$P_ORIGIN" --tags none
start origin-strong INT "$tmp/origin-strong.log" "$PRECOND" origin --listen "127.0.0.1:$P_ORIGIN_S" --tags strong
for backend in memory redis redis2 guard-memory guard-redis; do
  port=$P_MEM
  mode=enforce
  origin=$P_ORIGIN
  store='backend = "memory"'
  case $backend in
    redis) port=$P_RED ;;
    redis2) port=$P_RED2 ;;
    guard-memory) port=$P_GMEM mode=guard origin=$P_ORIGIN_S ;;
    guard-redis) port=$P_GRED mode=guard origin=$P_ORIGIN_S ;;
  esac
  if [ "${backend%2}" = redis ] || [ "$backend" = guard-redis ]; then
    store="backend = \"redis\"
url = \"redis://127.0.0.1:$P_REDIS/0\""
  fi
  cat >"$tmp/$backend.toml" <<CONF
[server]
listen = ["127.0.0.1:$port"]
threads = 2
grace_period = "0s"
graceful_shutdown_timeout = "1s"

[store]
$store

[[upstream]]
name = "origin"
servers = ["127.0.0.1:$origin"]

[[route]]
upstream = "origin"
mode = "$mode"
CONF
  PRECOND_TAG_SECRET=precond-shared-benchmark-secret "$PRECOND" check --config "$tmp/$backend.toml" >/dev/null
  PRECOND_TAG_SECRET=precond-shared-benchmark-secret RUST_LOG=warn \
    start "$backend" INT "$tmp/precond-$backend.log" "$PRECOND" run --config "$tmp/$backend.toml"
done
wait_ready origin "${PID[origin]}" "http://127.0.0.1:$P_ORIGIN/items/1" "$tmp/origin.log"
wait_ready "precond memory" "${PID[memory]}" "http://127.0.0.1:$P_MEM/items/1" "$tmp/precond-memory.log"
wait_ready "precond redis" "${PID[redis]}" "http://127.0.0.1:$P_RED/items/1" "$tmp/precond-redis.log"
wait_ready "precond redis (2)" "${PID[redis2]}" "http://127.0.0.1:$P_RED2/items/1" "$tmp/precond-redis2.log"
wait_ready "precond guard memory" "${PID[guard-memory]}" "http://127.0.0.1:$P_GMEM/items/1" "$tmp/precond-guard-memory.log"
wait_ready "precond guard redis" "${PID[guard-redis]}" "http://127.0.0.1:$P_GRED/items/1" "$tmp/precond-guard-redis.log"
# HAProxy round robin over one instance (P_LB1) and over two (P_LB2).
cat >"$tmp/haproxy.cfg" <<CONF
global
    log stdout format raw local0 warning
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse safe
frontend one
    bind 127.0.0.1:$P_LB1
    default_backend one
frontend two
    bind 127.0.0.1:$P_LB2
    default_backend two
backend one
    balance roundrobin
    server a 127.0.0.1:$P_RED
backend two
    balance roundrobin
    server a 127.0.0.1:$P_RED
    server b 127.0.0.1:$P_RED2
CONF
"$HAPROXY" -c -q -f "$tmp/haproxy.cfg"
start haproxy USR1 "$tmp/haproxy.log" "$HAPROXY" -db -f "$tmp/haproxy.cfg"
wait_ready haproxy "${PID[haproxy]}" "http://127.0.0.1:$P_LB2/items/1" "$tmp/haproxy.log"

BODY='{"id":1,"name":"widget","stock":7}'
curl -s -o /dev/null -X PUT --data-binary "$BODY" "http://127.0.0.1:$P_MEM/items/1"
TAG=$(curl -s -D - -o /dev/null "http://127.0.0.1:$P_MEM/items/1" | tr -d '\r' | awk 'tolower($1) == "etag:" { print $2 }')
[ -n "$TAG" ] || die "no ETag from the enforce route"
[ "$TAG" = "$(curl -s -D - -o /dev/null "http://127.0.0.1:$P_RED/items/1" | tr -d '\r' | awk 'tolower($1) == "etag:" { print $2 }')" ] ||
  die "the two instances synthesise different tags (one secret: one tag)"
cat >"$tmp/put-match.lua" <<LUA
wrk.method = "PUT"
wrk.headers["If-Match"] = '$TAG'
wrk.body = '$BODY'
LUA
cat >"$tmp/put-stale.lua" <<LUA
wrk.method = "PUT"
wrk.headers["If-Match"] = '"stale"'
wrk.body = '$BODY'
-- Count the answers by status (every one must be 412).
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do io.write(string.format("status %d %d\n", k, v)) end
  end
end
LUA

# guard: a tag replaced through each guard instance (learned from its own answer).
tag_of() { curl -s -D - -o /dev/null "$1" | tr -d '\r' | awk 'tolower($1) == "etag:" { print $2 }'; }
for port in $P_GMEM $P_GRED; do
  old=$(tag_of "http://127.0.0.1:$port/items/1")
  [ -n "$old" ] || die "no ETag from the strong-tag origin"
  status=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "If-Match: $old" --data-binary "$BODY" "http://127.0.0.1:$port/items/1")
  [ "$status" = 200 ] || die "guard write through port $port: $status"
  [ "$(tag_of "http://127.0.0.1:$port/items/1")" != "$old" ] || die "the write did not replace the tag"
  echo "$old" >"$tmp/replaced-$port"
done
cat >"$tmp/guard-forward.lua" <<LUA
wrk.method = "PUT"
wrk.headers["If-Unmodified-Since"] = 'Fri, 31 Dec 2100 23:59:59 GMT'
wrk.body = '$BODY'
LUA
for port in $P_GMEM $P_GRED; do
  sed -e "s|'\"stale\"'|'$(cat "$tmp/replaced-$port")'|" "$tmp/put-stale.lua" >"$tmp/guard-stale-$port.lua"
done

failures=()
rows=()
cat >"$tmp/guard-get.lua" <<'LUA'
wrk.method = "GET"
LUA

for w in put-match put-stale guard-stale guard-forward guard-get; do
  for backend in memory redis; do
    port=$P_MEM
    [ "$backend" = memory ] || port=$P_RED
    script="$tmp/$w.lua"
    case $w in
      guard-*)
        port=$P_GMEM
        [ "$backend" = memory ] || port=$P_GRED
        [ "$w" != guard-stale ] || script="$tmp/guard-stale-$port.lua"
        ;;
    esac
    c=1
    case $w in put-stale | guard-stale | guard-get) c=32 ;; esac
    out="$tmp/wrk-$w-$backend.txt"
    wrk -t1 -c"$c" -d"$DURATION" --latency -s "$script" "http://127.0.0.1:$port/items/1" >"$out" 2>&1
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(awk '$1 == "50%" { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    requests=$(awk '/requests in/ { print $1 }' "$out")
    errs=$(awk '/Socket errors:/ { print $0 }' "$out")
    [ -z "$errs" ] || failures+=("$w $backend: $errs")
    case $w in put-match | guard-forward | guard-get) [ -z "$bad" ] || failures+=("$w $backend: $bad answers not 2xx") ;; esac
    if [ "$w" = put-stale ] || [ "$w" = guard-stale ]; then
      refused=$(awk '$1 == "status" && $2 == 412 { print $3 }' "$out")
      others=$(awk '$1 == "status" && $2 != 412 { printf "%s %s; ", $3, $2 }' "$out")
      [ -z "$others" ] || failures+=("$w $backend: answers other than 412: $others")
      [ -n "$refused" ] || failures+=("$w $backend: no 412 at all")
    fi
    rows+=("| $w | $backend | $c | $rps | $p50 | $p99 |")
    log "$w $backend: $rps req/s, p50 $p50, p99 $p99"
  done
done
for n in 1 2; do
  port=P_LB$n
  out="$tmp/wrk-tier-$n.txt"
  wrk -t1 -c32 -d"$DURATION" --latency "http://127.0.0.1:${!port}/items/1" >"$out" 2>&1
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  p50=$(awk '$1 == "50%" { print $2 }' "$out")
  p99=$(awk '$1 == "99%" { print $2 }' "$out")
  bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
  [ -z "$bad" ] || failures+=("tier $n: $bad answers not 2xx")
  rows+=("| GET through HAProxy | redis, $n instance(s) | 32 | $rps | $p50 | $p99 |")
  log "GET through HAProxy to $n instance(s): $rps req/s"
done
errors=$(cat "$tmp"/precond-*.log | grep -c -E 'WARN|ERROR' || true)

mkdir -p "$RESULTS_DIR"
{
  echo "# precond shared-store benchmark (enforce and guard: memory vs redis backend)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC') (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); redis: $(redis-server --version | awk '{ print $3 }')"
  echo "- precond: $PRECOND (HEAD $(git rev-parse --short HEAD 2>/dev/null || echo unknown)), 2 threads, one instance per backend and mode; origins: \`precond origin --tags none\` (enforce), \`--tags strong\` (guard)"
  echo "- load: wrk -t1, $DURATION per row, one resource"
  echo
  echo "| workload | backend | connections | req/s | p50 | p99 |"
  echo "|---|---|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "precond logged $errors WARN/ERROR lines. Reproduce: \`bash benches/shared/run.sh\` (knobs in its header)."
} >"$RESULTS_DIR/results.md"
cat "$RESULTS_DIR/results.md"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAIL: %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "OK: matching writes forwarded, stale writes refused at the edge, on both backends and modes"
