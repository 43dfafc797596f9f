#!/usr/bin/env bash
# Runs hogstream's benchmarks (release build) against the local broker and ClickHouse and prints
# their figures beside same-run baselines. Arguments choose benchmarks: capture, engine, latency.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$HOGSTREAM_ROOT"
"$HOGSTREAM_ROOT/scripts/install.sh"
"$HOGSTREAM_ROOT/scripts/services.sh" start all
cargo bench --bench pipeline -- "$@"
