#!/usr/bin/env bash
# From a fresh machine to events in ClickHouse: installs what is missing, starts the broker and
# ClickHouse, builds hogstream, migrates the schema, starts the pipeline, sends a sample event
# through capture and shows it arriving in ClickHouse. The pipeline keeps running afterwards;
# `scripts/services.sh stop` stops everything.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$HOGSTREAM_ROOT"
export HOGSTREAM_CONFIG="${HOGSTREAM_CONFIG:-hogstream.example.toml}"

"$HOGSTREAM_ROOT/scripts/install.sh"
"$HOGSTREAM_ROOT/scripts/services.sh" start all
log "building hogstream"
cargo build --quiet --bin hogstream
./target/debug/hogstream migrate
"$HOGSTREAM_ROOT/scripts/services.sh" start pipeline

uuid="$(python3 -c 'import uuid; print(uuid.uuid4())')"
log "sending a sample event $uuid to http://127.0.0.1:$HOGSTREAM_CAPTURE_PORT/i/v0/e"
curl -fsS -X POST "http://127.0.0.1:$HOGSTREAM_CAPTURE_PORT/i/v0/e" \
  -H 'Content-Type: application/json' \
  -d "{\"api_key\":\"phc_hogstream_local\",\"event\":\"quickstart\",\"distinct_id\":\"quickstart-user\",\"uuid\":\"$uuid\",\"properties\":{\"\$current_url\":\"https://example.com/hello\"}}"
echo

query="SELECT uuid, event, distinct_id, timestamp, person_id, properties FROM hogstream.events WHERE uuid = '$uuid' FORMAT Vertical"
for _ in $(seq 1 100); do
  out="$(curl -fsS --data-binary "$query" "$HOGSTREAM_CLICKHOUSE_URL/" || true)"
  if [ -n "$out" ]; then
    log "the event is in ClickHouse:"
    echo "$out"
    log "pipeline running; capture at http://127.0.0.1:$HOGSTREAM_CAPTURE_PORT — stop everything with scripts/services.sh stop"
    exit 0
  fi
  sleep 0.2
done
die "the event did not reach ClickHouse within 20 s; see $LOG_DIR/hogstream.log"
