#!/usr/bin/env bash
# Installs what building and testing need, idempotently: Debian packages,
# Python test clients, and the local Kafka-protocol broker (nisshi).
set -euo pipefail
source "$(dirname "$0")/env.sh"

need_pkgs=()
for p in libclang-dev cmake pkg-config libssl-dev libsasl2-dev protobuf-compiler prometheus python3-venv; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

VENV="$JOURNEY_CACHE/venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import confluent_kafka, fastavro, pytest, yaml" 2>/dev/null; then
  log "installing Python test clients into $VENV"
  mkdir -p "$JOURNEY_CACHE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check confluent-kafka fastavro pytest pyyaml
fi

if [ -n "${JOURNEY_BOOTSTRAP:-}" ]; then
  log "JOURNEY_BOOTSTRAP=$JOURNEY_BOOTSTRAP: using that broker, not installing nisshi"
else
  "$JOURNEY_ROOT/scripts/broker.sh" install
fi
