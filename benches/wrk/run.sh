#!/usr/bin/env bash
# Durable ingest of the real binary measured with wrk (an independent load generator), with the
# shipped config and with an empty one, one after the other in the same run:
#   cargo build --release --bin incidentd && benches/wrk/run.sh [seconds]
# Each run starts a fresh store, waits for /readyz, loads it for the given time (default 20 s)
# and prints wrk's result and the process's peak RSS (VmHWM).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/incidentd}
SECS=${1:-20}
PORT=${PORT:-18090}
EMPTY=$(mktemp)
trap 'rm -f "$EMPTY"' EXIT

one() { # config label alerts-per-request connections [groups]
  local cfg=$1 label=$2 per=$3 conns=$4 groups=${5:-0}
  local dir; dir=$(mktemp -d)
  INCIDENTD_STORE_PATH=$dir/store INCIDENTD_LISTEN=127.0.0.1:$PORT "$BIN" run --config "$cfg" >"$dir/log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local out
  out=$(WRK_ALERTS=$per WRK_GROUPS=$groups wrk -t2 -c"$conns" -d"${SECS}s" --timeout 10s \
    -s benches/wrk/alertmanager.lua "http://127.0.0.1:$PORT" | grep '^alerts/s')
  local hwm; hwm=$(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" || true
  echo "$label | $per/request x $conns conns${groups:+ groups $groups} | $out | peak RSS $hwm"
  rm -rf "$dir"
}

for round in 1 2; do
  one config/incidentd.toml "shipped" 100 8
  one "$EMPTY" "empty  " 100 8
  one config/incidentd.toml "shipped" 1 64
  one "$EMPTY" "empty  " 1 64
done
one config/incidentd.toml "shipped" 100 8 500
