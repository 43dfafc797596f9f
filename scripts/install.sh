#!/usr/bin/env bash
# Installs what hogstream needs for development, tests and the local pipeline, skipping whatever
# is already there: Debian build packages, the tansu Kafka broker, chDB (ClickHouse's engine) in a
# virtualenv, and the npm/PyPI PostHog SDKs used by the integration tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

apt_packages=(cmake libcurl4-openssl-dev libclang-dev clang pkg-config libssl-dev zlib1g-dev curl)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -x "$TANSU_BIN" ] && "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  :
else
  log "building the tansu $TANSU_VERSION broker into $HOGSTREAM_PREFIX (about 12 minutes, once)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features libsql \
    --root "$HOGSTREAM_PREFIX" --quiet
fi

if ! "$HOGSTREAM_VENV/bin/python" -c 'import chdb, lz4, zstandard, clickhouse_cityhash' 2>/dev/null; then
  log "creating the chDB virtualenv in $HOGSTREAM_VENV"
  python3 -m venv "$HOGSTREAM_VENV"
  "$HOGSTREAM_VENV/bin/pip" install --quiet --disable-pip-version-check \
    'chdb-core>=26.9' lz4 zstandard clickhouse-cityhash
fi
log "installed: tansu $("$TANSU_BIN" --version 2>/dev/null | awk '{print $NF}'), chDB $("$HOGSTREAM_VENV/bin/python" -c 'import chdb; print(chdb.engine_version)')"

# PostHog's SDKs (PyPI, npm) and Debian's Chromium for the capture integration tests.
"$HOGSTREAM_ROOT/scripts/install-sdks.sh"
