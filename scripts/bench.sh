#!/usr/bin/env bash
# Runs hogstream's benchmarks (release build) against the local broker and ClickHouse and prints
# their figures beside same-run baselines. Arguments choose benchmarks: capture, engine, views,
# latency, replay, idle, secure, checkpoints (the engine with state checkpoints beside without),
# `persons [N]`, `persons stage`, `checkpoint-state [N]` (checkpoints of N persons' state), or
# `view-state` (views' cost per event and memory, no services needed).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$HOGSTREAM_ROOT"
"$HOGSTREAM_ROOT/scripts/install.sh"
"$HOGSTREAM_ROOT/scripts/services.sh" start all
# `persons [N]` runs the person-state benchmark (no services needed); anything else goes to
# `benches/pipeline` (capture, engine, views, latency, replay, idle, secure).
if [[ "${1:-}" == view-state ]]; then
  exec cargo bench --bench views
fi
if [[ "${1:-}" == checkpoint-state ]]; then
  shift
  exec cargo bench --bench persons -- checkpoint "$@"
fi
if [[ "${1:-}" == persons ]]; then
  shift
  exec cargo bench --bench persons -- "$@"
fi
cargo bench --bench pipeline -- "$@"
