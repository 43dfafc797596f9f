#!/usr/bin/env bash
# Starts, stops and reports the local services: the tansu Kafka broker and the ClickHouse front
# over chDB. Both bind to 127.0.0.1. Only processes recorded in this project's pid files are ever
# signalled, and a pid is only trusted while its command line still names the service.
#
#   scripts/services.sh start|stop|restart|status [kafka|clickhouse|pipeline|all]
#
# `all` means the two backing services; `pipeline` is hogstream itself (`hogstream run` with
# HOGSTREAM_CONFIG, default hogstream.example.toml), built beforehand. `stop all` stops it too.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

cmd="${1:-status}"
which="${2:-all}"
mkdir -p "$RUN_DIR" "$LOG_DIR"

pid_of() { # service -> pid if alive and ours
  local f="$RUN_DIR/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$2" || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() { # description, timeout seconds, command...
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

start_kafka() {
  if pid=$(pid_of kafka "tansu broker"); then log "kafka already running (pid $pid)"; return; fi
  [ -x "$TANSU_BIN" ] || die "tansu is not installed: run scripts/install.sh"
  port_open "$HOGSTREAM_KAFKA_PORT" && die "port $HOGSTREAM_KAFKA_PORT is taken by a process these scripts did not start"
  mkdir -p "$HOGSTREAM_DATA/kafka"
  # tansu resolves the SQLite path against its working directory.
  # Backtraces make a broker panic diagnosable from the log.
  (cd "$HOGSTREAM_DATA/kafka" && RUST_BACKTRACE=1 exec setsid "$TANSU_BIN" broker \
      --listener-url "tcp://127.0.0.1:$HOGSTREAM_KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$HOGSTREAM_KAFKA_PORT" \
      --storage-engine "sqlite://tansu.db" \
      >>"$LOG_DIR/kafka.log" 2>&1 </dev/null) &
  echo $! >"$RUN_DIR/kafka.pid"
  wait_until kafka 30 port_open "$HOGSTREAM_KAFKA_PORT" || die "kafka did not open port $HOGSTREAM_KAFKA_PORT; see $LOG_DIR/kafka.log"
  log "kafka (tansu) listening on 127.0.0.1:$HOGSTREAM_KAFKA_PORT, data in $HOGSTREAM_DATA/kafka"
}

ch_ping() { curl -fsS "http://127.0.0.1:$HOGSTREAM_CLICKHOUSE_PORT/ping" >/dev/null 2>&1; }

start_clickhouse() {
  if pid=$(pid_of clickhouse "clickhouse_front.py"); then log "clickhouse already running (pid $pid)"; return; fi
  [ -x "$HOGSTREAM_VENV/bin/python" ] || die "chDB is not installed: run scripts/install.sh"
  port_open "$HOGSTREAM_CLICKHOUSE_PORT" && die "port $HOGSTREAM_CLICKHOUSE_PORT is taken by a process these scripts did not start"
  mkdir -p "$HOGSTREAM_DATA/clickhouse"
  setsid "$HOGSTREAM_VENV/bin/python" "$HOGSTREAM_ROOT/scripts/clickhouse_front.py" \
    --host 127.0.0.1 --port "$HOGSTREAM_CLICKHOUSE_PORT" --data "$HOGSTREAM_DATA/clickhouse" \
    >>"$LOG_DIR/clickhouse.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/clickhouse.pid"
  wait_until clickhouse 60 ch_ping || die "clickhouse front did not answer /ping; see $LOG_DIR/clickhouse.log"
  log "clickhouse (chDB front) on http://127.0.0.1:$HOGSTREAM_CLICKHOUSE_PORT, data in $HOGSTREAM_DATA/clickhouse"
}

capture_ready() { curl -fsS "http://127.0.0.1:$HOGSTREAM_CAPTURE_PORT/_readiness" >/dev/null 2>&1; }

start_pipeline() {
  if pid=$(pid_of pipeline "hogstream"); then log "hogstream already running (pid $pid)"; return; fi
  local bin="${HOGSTREAM_BIN:-$HOGSTREAM_ROOT/target/debug/hogstream}"
  [ -x "$bin" ] || die "no hogstream binary at $bin: run 'cargo build' first"
  (cd "$HOGSTREAM_ROOT" && exec setsid "$bin" --config "${HOGSTREAM_CONFIG:-hogstream.example.toml}" run \
      >>"$LOG_DIR/hogstream.log" 2>&1 </dev/null) &
  echo $! >"$RUN_DIR/pipeline.pid"
  wait_until pipeline 60 capture_ready || die "hogstream capture did not become ready; see $LOG_DIR/hogstream.log"
  log "hogstream running: capture on http://127.0.0.1:$HOGSTREAM_CAPTURE_PORT, log in $LOG_DIR/hogstream.log"
}

stop_one() { # service, pattern
  local pid
  if pid=$(pid_of "$1" "$2"); then
    kill -TERM "$pid" 2>/dev/null || true
    wait_until "$1" 40 bash -c "! kill -0 $pid 2>/dev/null" || { log "$1 did not stop in 40 s; killing"; kill -KILL "$pid" 2>/dev/null || true; }
    log "$1 stopped"
  else
    log "$1 not running"
  fi
  rm -f "$RUN_DIR/$1.pid"
}

status_one() { # service, pattern, port
  local pid
  if pid=$(pid_of "$1" "$2"); then echo "$1: running (pid $pid, port $3)"; else echo "$1: stopped"; return 1; fi
}

targets=()
case "$which" in
  all) targets=(kafka clickhouse); [ "$cmd" = stop ] && targets=(pipeline kafka clickhouse) ;;
  kafka | clickhouse | pipeline) targets=("$which") ;;
  *) die "unknown service '$which' (kafka, clickhouse, pipeline or all)" ;;
esac

rc=0
for t in "${targets[@]}"; do
  case "$t" in
    kafka) pattern="tansu broker"; port=$HOGSTREAM_KAFKA_PORT ;;
    clickhouse) pattern="clickhouse_front.py"; port=$HOGSTREAM_CLICKHOUSE_PORT ;;
    pipeline) pattern="hogstream"; port=$HOGSTREAM_CAPTURE_PORT ;;
  esac
  case "$cmd" in
    start) "start_$t" ;;
    stop) stop_one "$t" "$pattern" ;;
    restart) stop_one "$t" "$pattern"; "start_$t" ;;
    status) status_one "$t" "$pattern" "$port" || { [ "$t" = pipeline ] || rc=1; } ;;
    *) die "unknown command '$cmd' (start, stop, restart or status)" ;;
  esac
done
exit $rc
