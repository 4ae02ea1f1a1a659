# Shared settings of the project's scripts (sourced, not run).
JOURNEY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JOURNEY_CACHE="${JOURNEY_CACHE:-$HOME/.cache/journey}"
NISSHI_VERSION="0.7.0"
NISSHI_BIN="$JOURNEY_CACHE/nisshi-$NISSHI_VERSION/bin/nisshi"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$JOURNEY_CACHE/target}"
JOURNEY_BIN="$CARGO_TARGET_DIR/debug/journey"
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
