#!/usr/bin/env bash
# The local Kafka-protocol broker (nisshi 0.7.0, built once with the nightly toolchain).
#   broker.sh install            build it into the cache (skipped when present)
#   broker.sh start STATE_DIR    start on a free loopback port; prints HOST:PORT,
#                                writes STATE_DIR/broker.pid and STATE_DIR/bootstrap
#   broker.sh stop STATE_DIR     stop it by its PID
# To use another broker (Apache Kafka, Redpanda...), skip this script and set
# JOURNEY_BOOTSTRAP=HOST:PORT for the demo and the tests.
set -euo pipefail
source "$(dirname "$0")/env.sh"

install() {
  if [ -x "$NISSHI_BIN" ] && "$NISSHI_BIN" --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then
    return 0
  fi
  if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "error: building nisshi $NISSHI_VERSION needs the nightly Rust toolchain (rustc 1.96+), which is missing." >&2
    echo "       Install it (rustup toolchain install nightly), or point the project at any Kafka broker:" >&2
    echo "       JOURNEY_BOOTSTRAP=host:port $0 ..." >&2
    exit 1
  fi
  log "building nisshi $NISSHI_VERSION (about 18 minutes the first time)"
  CARGO_TARGET_DIR="$JOURNEY_CACHE/nisshi-build" cargo +nightly install "nisshi@$NISSHI_VERSION" --locked \
    --no-default-features --features dynostore,libsql --root "$JOURNEY_CACHE/nisshi-$NISSHI_VERSION" >&2
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir="$1"; mkdir -p "$dir"
  install
  local port; port="$(free_port)"
  ( cd "$dir" && exec "$NISSHI_BIN" broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine "memory://nisshi/" \
      >"$dir/broker.log" 2>&1 ) &
  local pid=$!
  echo "$pid" >"$dir/broker.pid"
  for _ in $(seq 1 200); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
      echo "127.0.0.1:$port" >"$dir/bootstrap"
      echo "127.0.0.1:$port"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: the broker exited at start; its log:" >&2; tail -20 "$dir/broker.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "error: the broker did not answer on 127.0.0.1:$port within 20s" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
}

stop() {
  local dir="$1"
  [ -f "$dir/broker.pid" ] || return 0
  local pid; pid="$(cat "$dir/broker.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/broker.pid"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?state dir}" ;;
  stop) stop "${2:?state dir}" ;;
  *) echo "usage: $0 install | start STATE_DIR | stop STATE_DIR" >&2; exit 2 ;;
esac
