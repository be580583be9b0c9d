#!/usr/bin/env bash
# Peak memory of the real binary during a storm of unique alerts, measured with wrk:
#   cargo build --release --bin incidentd && benches/wrk/storm-rss.sh [config] [alerts]
# Starts the binary on a fresh store with the given config (default: the shipped one), sends
# the given number of unique alerts (default 400 000; 100 per request over 8 connections, two
# wrk threads, at most 120 s), samples RSS every 2 s, and prints wrk's result, the peak RSS
# (VmHWM) at the storm's end and the RSS series. SETTLE=N waits N more seconds (the writer
# folds the storm's records once idle) and prints the peak again.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/incidentd}
CFG=${1:-config/incidentd.toml}
ALERTS=${2:-400000}
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
mkdir "$dir/done"
WRK_ALERTS=100 WRK_STOP_AFTER=$((ALERTS / 200)) WRK_DONE_DIR=$dir/done wrk -t2 -c8 -d120s --timeout 10s \
  -s benches/wrk/alertmanager.lua "http://127.0.0.1:$PORT" >"$dir/wrk" &
wrk_pid=$!
# Both threads done: stop wrk (SIGINT makes it report at once).
while kill -0 "$wrk_pid" 2>/dev/null && [ "$(ls "$dir/done" | wc -l)" -lt 2 ]; do sleep 0.05; done
kill -INT "$wrk_pid" 2>/dev/null || true
wait "$wrk_pid" || true
grep '^alerts/s' "$dir/wrk"
echo "RSS at the end of the storm: $(awk '/VmRSS/ {printf "%.0f MB", $2/1024}' "/proc/$pid/status")"
echo "peak RSS $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' "/proc/$pid/status")"
if [ "${SETTLE:-0}" -gt 0 ]; then
  # The writer folds the storm's per-commit records into per-key ones once it is idle.
  sleep "$SETTLE"
  echo "peak RSS including ${SETTLE} s after the storm $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' "/proc/$pid/status")"
fi
echo "RSS every 2 s (MB): $(awk '{printf "%d ", $1/1024}' "$dir/rss")"
kill -TERM "$pid"
wait "$pid" || true
