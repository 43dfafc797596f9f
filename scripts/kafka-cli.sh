#!/usr/bin/env bash
# Apache Kafka's own command-line tools against the local broker, from the jars install.sh put in
# $HOGSTREAM_PREFIX (the same classes as Kafka's bin/kafka-*.sh scripts):
#
#   scripts/kafka-cli.sh topics --list
#   scripts/kafka-cli.sh topics --describe --topic events_plugin_ingestion
#   scripts/kafka-cli.sh consumer-groups --describe --group hogstream-engine
#   scripts/kafka-cli.sh console-consumer --topic events_plugin_ingestion_dlq --from-beginning \
#       --property print.headers=true --max-messages 5
#   scripts/kafka-cli.sh get-offsets --topic events_plugin_ingestion
#
# `--bootstrap-server 127.0.0.1:$HOGSTREAM_KAFKA_PORT` is added unless given.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

tool="${1:-}"
case "$tool" in
  topics) class=org.apache.kafka.tools.TopicCommand ;;
  consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
  console-consumer) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
  console-producer) class=org.apache.kafka.tools.ConsoleProducer ;;
  get-offsets) class=org.apache.kafka.tools.GetOffsetShell ;;
  *) die "usage: scripts/kafka-cli.sh topics|consumer-groups|console-consumer|console-producer|get-offsets [ARGS...]" ;;
esac
shift
[ -f "$KAFKA_HOME/pom.sha256" ] || die "Apache Kafka $KAFKA_VERSION is not installed: run scripts/install.sh"
args=("$@")
[[ " $* " == *" --bootstrap-server "* ]] || args+=(--bootstrap-server "127.0.0.1:$HOGSTREAM_KAFKA_PORT")
# The tools log warnings only; a short-lived JVM needs no tuning beyond a small heap.
exec java -Xmx256m -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
  "-Dlog4j2.configurationFile=$HOGSTREAM_ROOT/scripts/kafka/log4j2-tools.properties" \
  -cp "$KAFKA_LIBS/*" "$class" "${args[@]}"
