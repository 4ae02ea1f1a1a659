#!/usr/bin/env bash
# The main job end to end on a local broker: start the broker, create the
# topics, run a worker, produce a synthetic multichannel workload, and print
# stage transitions as they are committed. Ctrl-C stops everything it started.
#   DEMO_RATE (records/s, default 2000), DEMO_CUSTOMERS (default 5000),
#   DEMO_COUNT (0 = endless, default 0), JOURNEY_BOOTSTRAP (use another broker)
set -euo pipefail
source "$(dirname "$0")/env.sh"
"$JOURNEY_ROOT/scripts/setup.sh"
log "building the worker"
cargo build -q -p journey-worker --manifest-path "$JOURNEY_ROOT/Cargo.toml"

STATE="$(mktemp -d "${TMPDIR:-/tmp}/journey-demo.XXXXXX")"
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -z "${JOURNEY_BOOTSTRAP:-}" ] && "$JOURNEY_ROOT/scripts/broker.sh" stop "$STATE"
  log "stopped; logs in $STATE"
}
trap cleanup EXIT INT TERM

if [ -n "${JOURNEY_BOOTSTRAP:-}" ]; then
  BOOTSTRAP="$JOURNEY_BOOTSTRAP"
else
  BOOTSTRAP="$("$JOURNEY_ROOT/scripts/broker.sh" start "$STATE")"
fi
log "broker at $BOOTSTRAP"
export JOURNEY__KAFKA__BROKERS="\"$BOOTSTRAP\""
export JOURNEY__HTTP__LISTEN="\"127.0.0.1:0\""
export JOURNEY__STATE__DIR="\"$STATE/state\""
"$JOURNEY_BIN" topics
"$JOURNEY_BIN" run 2>"$STATE/worker.log" &
PIDS+=($!)
log "worker running (log: $STATE/worker.log)"
"$JOURNEY_BIN" produce --rate "${DEMO_RATE:-2000}" --count "${DEMO_COUNT:-0}" --customers "${DEMO_CUSTOMERS:-5000}" 2>"$STATE/produce.log" &
PIDS+=($!)
log "producing synthetic events; transitions follow (Ctrl-C to stop)"
"$JOURNEY_BIN" tail &
PIDS+=($!)
wait "${PIDS[1]}" || true
if [ "${DEMO_COUNT:-0}" != 0 ]; then sleep 5; else wait; fi
