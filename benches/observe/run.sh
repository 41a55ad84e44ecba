#!/usr/bin/env bash
# Observe-mode benchmark: what `mode = "observe"` costs against `pass`, in the same run. Two
# precond instances (pass, observe; 2 threads each) in front of the bundled demo origin with
# strong tags (`precond origin --tags strong`), wrk on loopback, the targets measured in turn.
#
#   bash benches/observe/run.sh              # DURATION=10s
#   DURATION=2s bash benches/observe/run.sh  # a smoke run
#
# Rows, per target (32 connections, one resource each):
#   get        GET /items/1: forwarded and (observe) learned, the census taught.
#   put-blind  PUT /items/2 without a precondition, 32 callers (Authorization: one per
#              connection) that never read it: forwarded, classified by the census.
#   put-stale  PUT /items/1 with If-Match of a replaced tag: forwarded; observe records a
#              would-be refusal and the origin's 2xx for every one.
# Checks (FAIL, non-zero exit): every answer 2xx, no socket errors; observe counted every
# put-stale request as a would-be refusal answered 2xx.
#
# Knobs: DURATION (10s), PRECOND_BIN, RESULTS_DIR (default benches/observe), KEEP_TMP=1.
set -euo pipefail

DURATION=${DURATION:-10s}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$here}
cd "$root"
# shellcheck source=benches/lib.sh
source benches/lib.sh

install_missing
precond_binary
scratch observe

read -r P_ORIGIN P_PASS P_OBS M_OBS <<<"$(free_ports 4)"
check_free "$P_ORIGIN" "$P_PASS" "$P_OBS" "$M_OBS"
start origin INT "$tmp/origin.log" "$PRECOND" origin --listen "127.0.0.1:$P_ORIGIN" --tags strong
for target in pass observe; do
  port=$P_PASS
  extra=""
  if [ "$target" = observe ]; then
    port=$P_OBS
    extra="[admin]
listen = \"127.0.0.1:$M_OBS\""
  fi
  cat >"$tmp/$target.toml" <<CONF
[server]
listen = ["127.0.0.1:$port"]
threads = 2
grace_period = "0s"
graceful_shutdown_timeout = "1s"

$extra

[log]
format = "json"
level = "warn"

[[upstream]]
name = "origin"
servers = ["127.0.0.1:$P_ORIGIN"]

[[route]]
upstream = "origin"
mode = "$target"
CONF
  "$PRECOND" check --config "$tmp/$target.toml" >/dev/null
  PRECOND_TAG_SECRET=precond-observe-benchmark-secret \
    start "$target" INT "$tmp/precond-$target.log" "$PRECOND" run --config "$tmp/$target.toml"
done
wait_ready origin "${PID[origin]}" "http://127.0.0.1:$P_ORIGIN/items/1" "$tmp/origin.log"
wait_ready "precond pass" "${PID[pass]}" "http://127.0.0.1:$P_PASS/items/1" "$tmp/precond-pass.log"
wait_ready "precond observe" "${PID[observe]}" "http://127.0.0.1:$P_OBS/items/1" "$tmp/precond-observe.log"

BODY='{"id":1,"name":"widget","stock":7}'
tag_of() { curl -s -D - -o /dev/null "$1" | tr -d '\r' | awk 'tolower($1) == "etag:" { print $2 }'; }
# A tag observe saw replaced: read, then written over through observe.
old=$(tag_of "http://127.0.0.1:$P_OBS/items/1")
[ -n "$old" ] || die "no ETag from the origin"
curl -s -o /dev/null -X PUT -H "If-Match: $old" --data-binary "$BODY" "http://127.0.0.1:$P_OBS/items/1"
cat >"$tmp/get.lua" <<'LUA'
wrk.method = "GET"
LUA
cat >"$tmp/put-blind.lua" <<LUA
wrk.method = "PUT"
wrk.body = '$BODY'
local n = 0
request = function()
  n = n + 1
  return wrk.format("PUT", "/items/2", { ["Authorization"] = "Bearer caller-" .. (n % 32) }, wrk.body)
end
LUA
cat >"$tmp/put-stale.lua" <<LUA
wrk.method = "PUT"
wrk.headers["If-Match"] = '$old'
wrk.body = '$BODY'
LUA

metric() { curl -s "http://127.0.0.1:$M_OBS/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
failures=()
rows=()
declare -A RPS
for w in get put-blind put-stale; do
  for target in pass observe; do
    port=$P_PASS
    [ "$target" = pass ] || port=$P_OBS
    path=/items/1
    [ "$w" != put-blind ] || path=/items/2
    before=$(metric 'precond_would_refuse_answered_total{answer="2xx"}')
    out="$tmp/wrk-$w-$target.txt"
    wrk -t1 -c32 -d"$DURATION" --latency -s "$tmp/$w.lua" "http://127.0.0.1:$port$path" >"$out" 2>&1
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(awk '$1 == "50%" { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    requests=$(awk '/requests in/ { print $1 }' "$out")
    errs=$(awk '/Socket errors:/ { print $0 }' "$out")
    [ -z "$errs" ] || failures+=("$w $target: $errs")
    [ -z "$bad" ] || failures+=("$w $target: $bad answers not 2xx")
    if [ "$w" = put-stale ] && [ "$target" = observe ]; then
      after=$(metric 'precond_would_refuse_answered_total{answer="2xx"}')
      counted=$((after - before))
      # wrk stops with requests in flight: those it never counted may still have been answered.
      [ "$counted" -ge "$requests" ] && [ "$counted" -le $((requests + 32)) ] ||
        failures+=("put-stale observe: $requests requests, $counted counted as would-be refusals answered 2xx")
    fi
    RPS[$w-$target]=$rps
    rows+=("| $w | $target | $rps | $p50 | $p99 |")
    log "$w $target: $rps req/s, p50 $p50, p99 $p99"
  done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
blind=$(metric precond_blind_overwrites_total)
errors=$(cat "$tmp"/precond-*.log | grep -c -E '"level":"(WARN|ERROR)"' || true)

mkdir -p "$RESULTS_DIR"
{
  echo "# precond observe-mode benchmark (observe vs pass, same run)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC') (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "- precond: $PRECOND (HEAD $(git rev-parse --short HEAD 2>/dev/null || echo unknown)), 2 threads per instance; origin: \`precond origin --tags strong\`"
  echo "- load: wrk -t1 -c32, $DURATION per row"
  echo
  echo "| workload | target | req/s | p50 | p99 |"
  echo "|---|---|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "observe / pass: get $(ratio "${RPS[get-observe]}" "${RPS[get-pass]}")×, put-blind $(ratio "${RPS[put-blind-observe]}" "${RPS[put-blind-pass]}")×, put-stale $(ratio "${RPS[put-stale-observe]}" "${RPS[put-stale-pass]}")×. Blind overwrites counted: $blind."
  echo
  echo "precond logged $errors WARN/ERROR lines. Reproduce: \`bash benches/observe/run.sh\` (knobs in its header)."
} >"$RESULTS_DIR/results.md"
cat "$RESULTS_DIR/results.md"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAIL: %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "OK: everything forwarded, every stale write counted as a would-be refusal"
