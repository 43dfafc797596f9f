#!/usr/bin/env bash
# Runs every test of the project on a fresh or a warm machine: installs what is missing,
# starts the real broker and ClickHouse, checks formatting and lints, then runs the whole suite.
# Tests need the services; they fail (never skip) when one is missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$HOGSTREAM_ROOT"

"$HOGSTREAM_ROOT/scripts/install.sh"
# A running quickstart pipeline would keep an idempotent producer connected across the tests'
# broker restarts, which tansu cannot survive (see tests/broker_restart.rs).
"$HOGSTREAM_ROOT/scripts/services.sh" stop pipeline
"$HOGSTREAM_ROOT/scripts/services.sh" start all
# A fresh broker process: one left over from earlier work may be a zombie (see README, tansu).
"$HOGSTREAM_ROOT/scripts/services.sh" restart kafka

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "cargo test"
cargo test --workspace --no-fail-fast "$@"
