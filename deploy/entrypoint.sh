#!/bin/sh
# The container's entrypoint: validate the configuration first (the same checks as a start:
# the file, its secret and token files, TLS certificates, upstream names), so that a bad
# ConfigMap fails the container at once with FILE:LINE:COL in its log instead of a crash loop
# later; then run precond as PID 1's replacement (signals reach it directly: SIGTERM drains,
# SIGHUP reloads). Extra arguments go to `precond run`. (No graceful upgrade in a container: the
# orchestrator's rolling restart replaces it.)
set -eu
CONFIG="${PRECOND_CONFIG:-/etc/precond/precond.toml}"
BIN="${PRECOND_BIN:-/usr/local/bin/precond}"
"$BIN" check --config "$CONFIG"
exec "$BIN" run --config "$CONFIG" "$@"
