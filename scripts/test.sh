#!/usr/bin/env bash
# Runs every test of the project on a fresh or a warm machine: installs what is missing,
# starts the real broker (Apache Kafka) and ClickHouse, checks formatting and lints, runs the
# whole suite, then validates the Docker files. Tests need the services; they fail (never skip)
# when one is missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$HOGSTREAM_ROOT"

"$HOGSTREAM_ROOT/scripts/install.sh"
"$HOGSTREAM_ROOT/scripts/services.sh" start all

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings
log "cargo test"
# `services`: the tests against the broker and ClickHouse; `example-plugins`: the example crate's
# plugins, which the end-to-end plugin tests use (Cargo.toml).
cargo test --workspace --features hogstream/services,hogstream/example-plugins --no-fail-fast "$@"
log "docker files"
"$HOGSTREAM_ROOT/scripts/check-docker.sh"
