#!/usr/bin/env bash
# Peak memory of the real binary during a storm of unique alerts, measured with wrk:
#   cargo build --release --bin incidentd && benches/wrk/storm-rss.sh [config] [seconds]
# Starts the binary on a fresh store with the given config (default: the shipped one), sends
# 100 unique alerts per request over 8 connections for the given time (default 34 s, about
# 400 000 alerts on 2 cores), samples RSS every 2 s, and prints wrk's result, the peak RSS
# (VmHWM) and the RSS series.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/incidentd}
CFG=${1:-config/incidentd.toml}
SECS=${2:-34}
PORT=${PORT:-18091}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
INCIDENTD_STORE_PATH=$dir/store INCIDENTD_LISTEN=127.0.0.1:$PORT "$BIN" run --config "$CFG" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
(while kill -0 "$pid" 2>/dev/null; do awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null; sleep 2; done) >"$dir/rss" &
WRK_ALERTS=100 wrk -t2 -c8 -d"${SECS}s" --timeout 10s -s benches/wrk/alertmanager.lua \
  "http://127.0.0.1:$PORT" | grep '^alerts/s'
echo "peak RSS $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' "/proc/$pid/status")"
echo "RSS every 2 s (MB): $(awk '{printf "%d ", $1/1024}' "$dir/rss")"
kill -TERM "$pid"
wait "$pid" || true
