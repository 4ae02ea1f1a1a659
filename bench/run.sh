#!/usr/bin/env bash
# Benchmark harness (see bench/run.py and BENCHMARKS.md):
#   bench/run.sh --short     a few minutes, one repetition (CI runs this)
#   bench/run.sh             200k events, 3 repetitions
#   bench/run.sh --full      2M events over 1M customers, 3 repetitions
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
"$JOURNEY_ROOT/scripts/setup.sh"
QUIX="$JOURNEY_CACHE/venv-quix"
if [ ! -x "$QUIX/bin/python" ] || ! "$QUIX/bin/python" -c "import quixstreams, fastavro" 2>/dev/null; then
  log "installing the Quix Streams peer into $QUIX"
  python3 -m venv "$QUIX"
  "$QUIX/bin/pip" install -q --disable-pip-version-check quixstreams==3.28.1 fastavro
fi
log "release build"
(cd "$JOURNEY_ROOT" && cargo build -q --release -p journey-worker)
exec "$JOURNEY_CACHE/venv/bin/python" "$JOURNEY_ROOT/bench/run.py" "$@"
