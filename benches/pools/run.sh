#!/usr/bin/env bash
# Upstream pool benchmark: forwarded GET throughput through precond (`pass`) with one upstream
# server versus two (round_robin, and consistent: Ketama on the canonical resource), all in one
# precond process (three routes, three upstreams), in front of two identical nginx origins (one
# worker each, 200 `{}` for any path). wrk cycles over 1000 distinct paths (benches/pools/paths.lua)
# so that consistent selection spreads them as resources spread in real traffic.
#
#   bash benches/pools/run.sh              # DURATION=10s ROUNDS=3 CONNECTIONS=32
#   DURATION=2s ROUNDS=1 bash benches/pools/run.sh   # a smoke run
#
# Rounds are interleaved (one, two, hash, one, two, hash, ...) and each row reports the median
# requests/s of its rounds and its ratio to the one-server row measured in the same run. On the
# 2-core reference machine wrk, precond and the origins share two cores: a second origin server
# adds no CPU, so the figure is what pool selection costs, not what a second server gains.
# Checks (FAIL, non-zero exit): every answer 2xx, no socket error; under two servers both
# origins served requests.
#
# Knobs: DURATION (10s), ROUNDS (3), CONNECTIONS (32), PRECOND_BIN, RESULTS_DIR (default
# benches/pools), KEEP_TMP=1.
set -euo pipefail

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$here}
cd "$root"
# shellcheck source=benches/lib.sh
source benches/lib.sh
is_uint "$ROUNDS" && [ "$ROUNDS" -ge 1 ] || { echo "ROUNDS must be a whole number >= 1" >&2; exit 2; }
is_uint "$CONNECTIONS" || { echo "CONNECTIONS must be a whole number" >&2; exit 2; }

install_missing
precond_binary

scratch pools

read -r P_A P_B P_PRECOND <<<"$(free_ports 3)"
check_free "$P_A" "$P_B" "$P_PRECOND"

for o in a b; do
  port=P_${o^^}
  mkdir -p "$tmp/$o"
  cat >"$tmp/$o/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes 1;
pid $tmp/$o/nginx.pid;
error_log $tmp/$o/error.log warn;
events { worker_connections 1024; }
http {
$(temp_paths "$tmp/$o")
    access_log $tmp/$o/access.log;
    server {
        listen 127.0.0.1:${!port};
        keepalive_requests 1000000;
        location / { default_type application/json; return 200 '{}'; }
    }
}
CONF
  start "origin-$o" QUIT "$tmp/$o/nginx.out" "$NGINX" -p "$tmp/$o" -e "$tmp/$o/error.log" -c "$tmp/$o/nginx.conf"
  wait_ready "origin $o" "${PID[origin-$o]}" "http://127.0.0.1:${!port}/" "$tmp/$o/error.log"
done

cat >"$tmp/precond.toml" <<CONF
[server]
listen = ["127.0.0.1:$P_PRECOND"]
threads = 2
grace_period = "0s"
graceful_shutdown_timeout = "1s"

[[upstream]]
name = "one"
servers = ["127.0.0.1:$P_A"]

[[upstream]]
name = "two"
servers = ["127.0.0.1:$P_A", "127.0.0.1:$P_B"]

[[upstream]]
name = "hash"
servers = ["127.0.0.1:$P_A", "127.0.0.1:$P_B"]
selection = "consistent"

[[route]]
path_prefix = "/one"
upstream = "one"
mode = "pass"

[[route]]
path_prefix = "/two"
upstream = "two"
mode = "pass"

[[route]]
path_prefix = "/hash"
upstream = "hash"
mode = "pass"
CONF
"$PRECOND" check --config "$tmp/precond.toml" >/dev/null
RUST_LOG=warn start precond INT "$tmp/precond.log" "$PRECOND" run --config "$tmp/precond.toml"
wait_ready precond "${PID[precond]}" "http://127.0.0.1:$P_PRECOND/one/x" "$tmp/precond.log"

declare -A RPS
failures=()
for ((r = 1; r <= ROUNDS; r++)); do
  for row in one two hash; do
    out="$tmp/wrk-$row-$r.txt"
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "$here/paths.lua" "http://127.0.0.1:$P_PRECOND/$row" >"$out" 2>&1
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$out")
    errs=$(awk '/Socket errors:/ { print $0 }' "$out")
    [ -z "$bad" ] || failures+=("$row round $r: $bad non-2xx answers")
    [ -z "$errs" ] || failures+=("$row round $r: $errs")
    RPS[$row]="${RPS[$row]:-} $rps"
    log "$row round $r: $rps req/s"
  done
done
served_b=$(wc -l <"$tmp/b/access.log")
[ "$served_b" -gt 0 ] || failures+=("origin b served nothing: two-server rows did not use it")

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
base=$(echo "${RPS[one]}" | median)
mkdir -p "$RESULTS_DIR"
{
  echo "# precond upstream pool benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC') (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "- precond: $PRECOND (HEAD $(git rev-parse --short HEAD 2>/dev/null || echo unknown)), pass routes, 2 threads; origins: 2 × nginx (1 worker each)"
  echo "- load: wrk -t1 -c$CONNECTIONS -d$DURATION over 1000 paths, $ROUNDS interleaved round(s) per row"
  echo
  echo "| upstream | servers | selection | req/s (median) | vs one server | rounds |"
  echo "|---|---:|---|---:|---:|---|"
  for row in one two hash; do
    m=$(echo "${RPS[$row]}" | median)
    case $row in one) n=1 sel=round_robin ;; two) n=2 sel=round_robin ;; hash) n=2 sel=consistent ;; esac
    printf '| %s | %s | %s | %.0f | %.2f× | %s |\n' "$row" "$n" "$sel" "$m" "$(echo "$m $base" | awk '{ print $1 / $2 }')" "$(echo "${RPS[$row]}" | sed 's/^ //; s/ /, /g')"
  done
  echo
  echo "Reproduce: \`bash benches/pools/run.sh\` (knobs in its header)."
} >"$RESULTS_DIR/results.md"
cat "$RESULTS_DIR/results.md"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAIL: %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "OK: every answer 2xx; both origins served the two-server rows"
