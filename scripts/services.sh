#!/usr/bin/env bash
# Starts, stops and reports the local services: Apache Kafka (one KRaft broker), the ClickHouse
# front over chDB and the S3-compatible object store (SeaweedFS). All bind to 127.0.0.1. Only
# processes recorded in this project's pid files are ever signalled, and a pid is only trusted
# while its command line still names the service.
#
#   scripts/services.sh start|stop|restart|status|kill [kafka|clickhouse|s3|pipeline|all]
#
# `kill` sends SIGKILL (a crash drill: the broker fault tests use it); `stop` is graceful.
# `all` means the three backing services; `pipeline` is hogstream itself (`hogstream run` with
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

tail_log() { tail -n "${2:-25}" "$1" 2>/dev/null | sed 's/^/    /' >&2; }

# The broker log written since line $1, last 25 lines, indented; says so when there is none.
kafka_log_since() {
  local lines
  lines="$(tail -n +"$(($1 + 1))" "$LOG_DIR/kafka.log" 2>/dev/null | tail -n 25)"
  if [ -n "$lines" ]; then printf '%s\n' "$lines" | sed 's/^/    /' >&2; else echo "    (the broker has logged nothing yet)" >&2; fi
}

# The broker's JVM on two shared cores: a small heap (Kafka keeps its data in the page cache, not
# the heap), G1 with short pauses, and GC and JIT thread counts that leave the cores to the
# pipeline. Override with HOGSTREAM_KAFKA_HEAP / HOGSTREAM_KAFKA_JVM_OPTS.
kafka_jvm_opts() {
  echo "${HOGSTREAM_KAFKA_HEAP:--Xms256m -Xmx1g}" \
    "${HOGSTREAM_KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:ParallelGCThreads=2 -XX:ConcGCThreads=1 -XX:CICompilerCount=2}" \
    -Djava.awt.headless=true "-Dlog4j2.configurationFile=$HOGSTREAM_ROOT/scripts/kafka/log4j2.properties"
}

kafka_ready() { python3 "$HOGSTREAM_ROOT/scripts/kafka/ready.py" "127.0.0.1:$HOGSTREAM_KAFKA_PORT"; }

# Writes the broker's configuration and formats its storage the first time (KRaft needs a cluster
# id and a formatted metadata log before the first start; later starts reuse both).
# Certificates and passwords of the secured listeners, made once (scripts/tls.py).
make_tls() {
  [ -x "$HOGSTREAM_VENV/bin/python" ] || die "the project virtualenv is missing: run scripts/install.sh"
  "$HOGSTREAM_VENV/bin/python" "$HOGSTREAM_ROOT/scripts/tls.py" "$TLS_DIR" \
    || die "could not make the local certificates in $TLS_DIR"
}

prepare_kafka() {
  local dir="$HOGSTREAM_DATA/kafka" id
  mkdir -p "$dir/data"
  make_tls
  sed -e "s|@KAFKA_PORT@|$HOGSTREAM_KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$HOGSTREAM_KAFKA_CONTROLLER_PORT|g" \
      -e "s|@KAFKA_TLS_PORT@|$HOGSTREAM_KAFKA_TLS_PORT|g" -e "s|@LOG_DIRS@|$dir/data|g" \
      -e "s|@TLS_DIR@|$TLS_DIR|g" -e "s|@KEYSTORE_PASSWORD@|$(cat "$TLS_DIR/keystore-password")|g" \
      -e "s|@KAFKA_PASSWORD@|$(cat "$TLS_DIR/kafka-password")|g" \
      "$HOGSTREAM_ROOT/scripts/kafka/server.properties" >"$dir/server.properties"
  chmod 600 "$dir/server.properties"
  [ -f "$dir/data/meta.properties" ] && return
  id="$(java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/kafka.log")" \
    || die "kafka: could not make a cluster id; see $LOG_DIR/kafka.log"
  # The SCRAM user of the secured listener is part of the first metadata.
  # shellcheck disable=SC2046 # the options are words on purpose
  java $(kafka_jvm_opts) -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format --standalone \
      --ignore-formatted -t "$id" -c "$dir/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=hogstream,password=$(cat "$TLS_DIR/kafka-password")]" \
      >>"$LOG_DIR/kafka.log" 2>&1 \
    || { tail_log "$LOG_DIR/kafka.log"; die "kafka: formatting $dir/data failed (log above)"; }
  touch "$dir/scram-user"
  log "kafka: formatted $dir/data (cluster id $id)"
}

# Storage formatted before the secured listener existed gets its SCRAM user once, from the
# running broker (Kafka's own kafka-configs tool).
add_scram_user() {
  local dir="$HOGSTREAM_DATA/kafka"
  [ -f "$dir/scram-user" ] && return
  java -Xmx256m -Dlog4j2.configurationFile="$HOGSTREAM_ROOT/scripts/kafka/log4j2-tools.properties" \
      -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.ConfigCommand --bootstrap-server "127.0.0.1:$HOGSTREAM_KAFKA_PORT" \
      --alter --entity-type users --entity-name hogstream \
      --add-config "SCRAM-SHA-512=[password=$(cat "$TLS_DIR/kafka-password")]" >>"$LOG_DIR/kafka.log" 2>&1 \
    || die "kafka: could not create the SCRAM user of the secured listener; see $LOG_DIR/kafka.log"
  touch "$dir/scram-user"
}

start_kafka() {
  local pid limit="${HOGSTREAM_KAFKA_START_TIMEOUT:-90}"
  if pid=$(pid_of kafka "kafka.Kafka"); then log "kafka already running (pid $pid)"; return; fi
  [ -f "$KAFKA_HOME/pom.sha256" ] || die "Apache Kafka $KAFKA_VERSION is not installed: run scripts/install.sh"
  for port in "$HOGSTREAM_KAFKA_PORT" "$HOGSTREAM_KAFKA_CONTROLLER_PORT" "$HOGSTREAM_KAFKA_TLS_PORT"; do
    port_open "$port" && die "port $port is taken by a process these scripts did not start"
  done
  prepare_kafka
  local mark
  mark=$(wc -l <"$LOG_DIR/kafka.log" 2>/dev/null || echo 0)
  # shellcheck disable=SC2046
  (exec setsid java $(kafka_jvm_opts) -cp "$KAFKA_LIBS/*" kafka.Kafka "$HOGSTREAM_DATA/kafka/server.properties" \
      >>"$LOG_DIR/kafka.log" 2>&1 </dev/null) &
  pid=$!
  echo "$pid" >"$RUN_DIR/kafka.pid"
  local deadline=$((SECONDS + limit))
  until kafka_ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      kafka_log_since "$mark"
      rm -f "$RUN_DIR/kafka.pid"
      die "kafka exited during start-up (log above, whole log in $LOG_DIR/kafka.log)"
    fi
    if ((SECONDS >= deadline)); then
      kafka_log_since "$mark"
      die "kafka is still starting after ${limit} s (pid $pid is alive but does not answer requests on 127.0.0.1:$HOGSTREAM_KAFKA_PORT yet): the machine may be slow or busy. Its log is above; wait and run 'scripts/services.sh status kafka', or raise HOGSTREAM_KAFKA_START_TIMEOUT"
    fi
    sleep 0.2
  done
  add_scram_user
  log "kafka (Apache Kafka $KAFKA_VERSION) ready on 127.0.0.1:$HOGSTREAM_KAFKA_PORT (TLS + SASL on $HOGSTREAM_KAFKA_TLS_PORT), data in $HOGSTREAM_DATA/kafka"
}

ch_ping() { curl -fsS "http://127.0.0.1:$HOGSTREAM_CLICKHOUSE_PORT/ping" >/dev/null 2>&1; }

start_clickhouse() {
  if pid=$(pid_of clickhouse "clickhouse_front.py"); then log "clickhouse already running (pid $pid)"; return; fi
  [ -x "$HOGSTREAM_VENV/bin/python" ] || die "chDB is not installed: run scripts/install.sh"
  port_open "$HOGSTREAM_CLICKHOUSE_PORT" && die "port $HOGSTREAM_CLICKHOUSE_PORT is taken by a process these scripts did not start"
  mkdir -p "$HOGSTREAM_DATA/clickhouse"
  port_open "$HOGSTREAM_CLICKHOUSE_HTTPS_PORT" && die "port $HOGSTREAM_CLICKHOUSE_HTTPS_PORT is taken by a process these scripts did not start"
  make_tls
  setsid "$HOGSTREAM_VENV/bin/python" "$HOGSTREAM_ROOT/scripts/clickhouse_front.py" \
    --host 127.0.0.1 --port "$HOGSTREAM_CLICKHOUSE_PORT" --data "$HOGSTREAM_DATA/clickhouse" \
    --https-port "$HOGSTREAM_CLICKHOUSE_HTTPS_PORT" --cert "$TLS_DIR/server.pem" --key "$TLS_DIR/server.key" \
    --password-file "$TLS_DIR/clickhouse-password" \
    >>"$LOG_DIR/clickhouse.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/clickhouse.pid"
  wait_until clickhouse 60 ch_ping || die "clickhouse front did not answer /ping; see $LOG_DIR/clickhouse.log"
  log "clickhouse (chDB front) on http://127.0.0.1:$HOGSTREAM_CLICKHOUSE_PORT and https://127.0.0.1:$HOGSTREAM_CLICKHOUSE_HTTPS_PORT (user hogstream), data in $HOGSTREAM_DATA/clickhouse"
}

# Ready means it answers S3 requests: an unsigned request gets S3's own error document.
s3_ready() { curl -s --max-time 2 "http://127.0.0.1:$HOGSTREAM_S3_PORT/" 2>/dev/null | grep -q '<Error>\|<ListAllMyBucketsResult'; }

# The store's one identity (`hogstream`, every action) with a secret key made on the first start,
# like the local TLS passwords; scripts and tests read it from $HOGSTREAM_DATA/s3/secret-key.
prepare_s3() {
  local dir="$HOGSTREAM_DATA/s3"
  mkdir -p "$dir/data"
  if [ ! -s "$dir/secret-key" ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(20))' >"$dir/secret-key")
  fi
  (umask 077 && cat >"$dir/identities.json" <<JSON
{"identities": [{"name": "hogstream",
  "credentials": [{"accessKey": "hogstream", "secretKey": "$(cat "$dir/secret-key")"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  )
}

start_s3() {
  local pid weed="$SEAWEEDFS_HOME/weed"
  if pid=$(pid_of s3 "weed mini"); then log "s3 already running (pid $pid)"; return; fi
  [ -x "$weed" ] || die "SeaweedFS is not installed: run scripts/install.sh"
  for port in "$HOGSTREAM_S3_PORT" "$HOGSTREAM_S3_HTTPS_PORT" "$HOGSTREAM_S3_MASTER_PORT" "$HOGSTREAM_S3_VOLUME_PORT" "$HOGSTREAM_S3_FILER_PORT"; do
    port_open "$port" && die "port $port is taken by a process these scripts did not start"
  done
  make_tls
  prepare_s3
  local dir="$HOGSTREAM_DATA/s3"
  # One process: master, volume server, filer and the S3 gateway; the extras (WebDAV, admin
  # UI, Iceberg and Lance catalogs, telemetry) are off.
  (cd "$dir" && exec setsid "$weed" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -master.port="$HOGSTREAM_S3_MASTER_PORT" -volume.port="$HOGSTREAM_S3_VOLUME_PORT" \
      -filer.port="$HOGSTREAM_S3_FILER_PORT" -s3.port="$HOGSTREAM_S3_PORT" \
      -s3.port.https="$HOGSTREAM_S3_HTTPS_PORT" -s3.cert.file="$TLS_DIR/server.pem" -s3.key.file="$TLS_DIR/server.key" \
      -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false -master.telemetry=false \
      -s3.config="$dir/identities.json" -bucket=hogstream \
      >>"$LOG_DIR/s3.log" 2>&1 </dev/null) &
  echo $! >"$RUN_DIR/s3.pid"
  wait_until s3 60 s3_ready || { tail_log "$LOG_DIR/s3.log"; die "the object store did not answer S3 requests on 127.0.0.1:$HOGSTREAM_S3_PORT (log above, whole log in $LOG_DIR/s3.log)"; }
  log "s3 (SeaweedFS) on http://127.0.0.1:$HOGSTREAM_S3_PORT and https://127.0.0.1:$HOGSTREAM_S3_HTTPS_PORT, bucket hogstream, key hogstream (secret in $dir/secret-key), data in $dir/data"
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

kill_one() { # service, pattern: SIGKILL, no shutdown of any kind
  local pid
  pid=$(pid_of "$1" "$2") || die "$1 is not running"
  kill -KILL "$pid"
  wait_until "$1" 10 bash -c "! kill -0 $pid 2>/dev/null" || die "$1 (pid $pid) survived SIGKILL"
  rm -f "$RUN_DIR/$1.pid"
  log "$1 killed (SIGKILL)"
}

status_one() { # service, pattern, port
  local pid
  if pid=$(pid_of "$1" "$2"); then
    if { [ "$1" = kafka ] && ! kafka_ready; } || { [ "$1" = s3 ] && ! s3_ready; }; then
      echo "$1: starting (pid $pid, port $3, not answering requests yet)"
      return 1
    fi
    echo "$1: running (pid $pid, port $3)"
  else
    echo "$1: stopped"
    return 1
  fi
}

targets=()
case "$which" in
  all) targets=(kafka clickhouse s3); [ "$cmd" = stop ] && targets=(pipeline kafka clickhouse s3) ;;
  kafka | clickhouse | s3 | pipeline) targets=("$which") ;;
  *) die "unknown service '$which' (kafka, clickhouse, s3, pipeline or all)" ;;
esac

rc=0
for t in "${targets[@]}"; do
  case "$t" in
    kafka) pattern="kafka.Kafka"; port=$HOGSTREAM_KAFKA_PORT ;;
    clickhouse) pattern="clickhouse_front.py"; port=$HOGSTREAM_CLICKHOUSE_PORT ;;
    s3) pattern="weed mini"; port=$HOGSTREAM_S3_PORT ;;
    pipeline) pattern="hogstream"; port=$HOGSTREAM_CAPTURE_PORT ;;
  esac
  case "$cmd" in
    start) "start_$t" ;;
    stop) stop_one "$t" "$pattern" ;;
    restart) stop_one "$t" "$pattern"; "start_$t" ;;
    status) status_one "$t" "$pattern" "$port" || { [ "$t" = pipeline ] || rc=1; } ;;
    kill) kill_one "$t" "$pattern" ;;
    *) die "unknown command '$cmd' (start, stop, restart, status or kill)" ;;
  esac
done
exit $rc
